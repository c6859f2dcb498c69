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
//!                 ^
//!                 | expire(now) from one driver task (TTL -> critical -> reaped)
//! ```
//!
//! Dependency direction: `main -> app -> {dns, http, events} -> core`; `config` is
//! read by `app` only. `core` does no I/O and imports nothing of ours; the
//! front ends never call each other; only `app` names concrete pieces.

pub mod app;
pub mod config;
pub mod core;
pub mod dns;
pub mod events;
pub mod http;
