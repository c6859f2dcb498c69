//! Side channels of the running server: for now, log lines that repeat.
//!
//! Must not import: dns, http, store or any other front end or driver (they
//! all use it).

pub mod coalesce;

pub use coalesce::{Coalesced, LogEvery};
