//! Side channels of the running server: log lines that repeat, and the
//! last log lines kept in memory for the operators' log routes.
//!
//! Must not import: dns, http, store or any other front end or driver (they
//! all use it).

pub mod coalesce;
pub mod recent;

pub use coalesce::{Coalesced, LogEvery};
pub use recent::{RecentLayer, RecentLogs};
