//! Maxine: DNS-first service discovery.
//!
//! ```text
//!      HTTP API (axum)                        DNS (UDP/TCP, pre-encoded answers)
//!   Host check; credential -> Caller          qname -> node -> asker's variant -> copy
//!   policy::decide (401/403, audited)
//!   writes: propose(change, ctx{actor})
//!   reads: plans, ?index=N&wait=                          ^
//!        |                 ^                             | encoded from core::plan,
//!        v                 | applied & durable           | rebuilt on every change
//!   store::Log (LocalLog: the registry's sequence + the journal's group commit;
//!               EtcdLog: etcd transactions, applied from the watch on every node)
//!        |  index order                                  |
//!        v                                               |
//!   +---------------------------------------------------------------------+
//!   | core::Registry::apply: the one write path (Change -> Event)         |
//!   |   papaya maps (dc, service) -> immutable snapshot; one write lock   |
//!   |   observers inside the lock: DNS answer cache, journal, change feed |
//!   +---------------------------------------------------------------------+
//!        ^ expiry (due changes)          | events, in index order
//!        | from one driver task          v
//!                         events::ChangeFeed: bounded ring + index watch;
//!                         subscribe_from(i), blocking reads, event streams
//!   resolve::Driver: follows the feed, resolves host names of instances
//!   (hickory-resolver: resolv.conf, hosts file), proposes Change::Resolve
//!   federation: per peer, GET /v1/federation/stream (snapshot, then deltas)
//!   -> Change::Replica with Origin::Replicated; replica files; staleness and
//!   RTT feed core::failover, which the DNS rebuild reads for local names
//!   health::Driver: follows the feed, runs every defined check from one
//!   scheduler (http, tcp, grpc, script), proposes Change::CheckStatus
//!   store::Journal: one writer thread, one fsync per batch (group commit),
//!   the batch's audit records fsynced beside it (audit::AuditLog);
//!   a commit that fails is undone and its proposals answered 503
//! ```
//!
//! Dependency direction: `main -> app -> {dns, http, events, store} -> policy -> core`
//! (`http` proposes through `store::Log`, reads `events::ChangeFeed` and asks
//! `policy`, whose pure functions decide over `core::acl` values). `config` imports only `core` and is
//! read by `app` only, which hands each module its own settings (such as
//! `dns::Limits`). `core` does no I/O and imports nothing of ours; the front
//! ends never call each other; only `app` names concrete pieces.
//! `auth` (external JWTs, Maxine's own sign-in tokens and password hashes)
//! takes plain settings and imports none of `http`, `dns`, `store`, `config`.
//! `resolve` (the host-name resolver driver) imports no front end or
//! `config`: it follows `events`, proposes through `store::Log`.
//! `health` (the health check driver, and outlier ejection's driver with
//! the panic log) likewise imports no front end or `config`: it follows
//! `events`, takes reported outcomes from the API, and proposes through
//! `store::Log` (check results, `core::Change::Eject`).
//! `askers` (who asks on DNS: asker classes, an observer of the registry,
//! and their verdicts per service, decided by `policy::visibility`) imports
//! no front end, `store` or `config`; the DNS front end asks it after the
//! name lookup (docs/adr/0011-asker-classes.md).
//! `audit` (the hash-chained audit log) imports nothing of ours: callers
//! hand it records of plain strings, with their time.
//! `tests/architecture.rs` keeps this true.
//!
//! The `maxine` binary (`src/main.rs`, and `src/cli/` for its command line
//! and client subcommands) is not part of this library: it parses, loads
//! the config, binds, builds the `app` and runs it.

pub mod app;
pub mod askers;
pub mod audit;
pub mod auth;
pub mod config;
pub mod core;
pub mod dns;
pub mod events;
pub mod federation;
pub mod health;
pub mod http;
pub mod mqtt;
pub mod policy;
pub mod resolve;
pub mod store;
pub mod telemetry;
