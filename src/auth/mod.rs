//! Who is asking: the verification and signing pieces behind API
//! authorization.
//!
//! - [`jwt`]: verifies JWTs from an external identity provider and maps their
//!   claims to a service identity and policy names.
//!
//! Must not import `http`, `dns`, `store` or `config`: callers hand over plain
//! settings and paths, and wire the results into requests and the registry.
//! Time is a parameter (`now_unix`); nothing here reads the clock.

pub mod jwt;

pub use jwt::{Binding, BindingKind, JwtError, JwtIdentity, JwtSettings, JwtVerifier};
