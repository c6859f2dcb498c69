//! Side channels of the running server: log lines that repeat, the last
//! log lines kept in memory for the operators' log routes, and the
//! Prometheus metrics (`metrics`).
//!
//! Must not import: dns, http, store or any other front end or driver (they
//! all use it).

pub mod coalesce;
mod dns_counters;
pub mod metrics;
pub mod recent;
pub mod traces;

pub use coalesce::{Coalesced, LogEvery};
pub use metrics::Metrics;
pub use recent::{RecentLayer, RecentLogs};
