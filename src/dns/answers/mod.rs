//! Ready answers: every name in the zone, with its record sets pre-encoded,
//! in a lock-free map keyed by the lowercase wire name. The registry calls
//! `AnswerBuilder::applied` with each change (under its write lock, before
//! the change is acknowledged), and the affected names are rebuilt then.
//! A query is parse -> one map lookup -> the asker's variant -> copy
//! pre-encoded records.
//!
//! What an answer contains is decided by the core (`core::plan`); this
//! module only encodes plans and keeps them ready. ReadyAnswers that depend on
//! the asker (access rules, intentions) or on datacenter health (failover
//! tiers) are variants of a [`Node`] chosen by the asker's class after the
//! lookup, so the query path stays a lookup and a copy
//! (docs/adr/0001-pre-encoded-dns-answers.md).
//!
//! Seams: `rrset` (one pre-encoded record set), `members` (version
//! names as positions), `instances` (instance names), `node` (what a
//! name holds), `lookup` (the query path), `build` (keeping it current).

mod build;
mod instances;
mod lookup;
mod members;
mod node;
mod rrset;
#[cfg(test)]
mod tests;

pub use build::AnswerBuilder;
pub use lookup::ReadyAnswers;
pub use node::Node;
