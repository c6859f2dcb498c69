//! Maxine: DNS-first service discovery.
//!
//! ```text
//!            HTTP API (axum)                 DNS (UDP/TCP, pre-encoded answers)
//!   register / heartbeat / query              qname -> ready wire answer
//!                 |                                   ^
//!                 v                                   | rebuilt on every change
//!   +--------------------------------------------------------------+
//!   | core::Registry  papaya maps: (dc, service) -> snapshot       |
//!   |   one write lock, gap-free change index, Observer callbacks  |
//!   +--------------------------------------------------------------+
//!                 ^                                   |
//!                 | expire(now) from one driver task  | every change, queued in index order
//!                                                     v
//!   store::Journal: one writer thread, one fsync per batch (group commit);
//!   the API answers a write once it is durable, 503 (rolled back) if not
//! ```
//!
//! Dependency direction: `main -> app -> {dns, http, events, store} -> core`
//! (`http` waits on `store::Durable`). `config` imports only `core` and is
//! read by `app` only, which hands each module its own settings (such as
//! `dns::Limits`). `core` does no I/O and imports nothing of ours; the front
//! ends never call each other; only `app` names concrete pieces.
//! `tests/architecture.rs` keeps this true.
//!
//! The `maxine` binary (`src/main.rs`, and `src/cli/` for its command line
//! and client subcommands) is not part of this library: it parses, loads
//! the config, binds, builds the `app` and runs it.

pub mod app;
pub mod config;
pub mod core;
pub mod dns;
pub mod events;
pub mod http;
pub mod store;
pub mod telemetry;
