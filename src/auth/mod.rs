//! Who is asking: the verification and signing pieces behind API
//! authorization.
//!
//! - [`jwt`]: verifies JWTs from an external identity provider and maps their
//!   claims to a service identity and policy names.
//! - [`signin`]: Maxine's own sign-in: roles, argon2id password hashes, and
//!   the short-lived tokens Maxine signs and accepts back.
//!
//! Must not import `http`, `dns`, `store` or `config`: callers hand over plain
//! settings and paths, and wire the results into requests and the registry.
//! Time is a parameter (`now_unix`); nothing here reads the clock.

pub mod jwt;
pub mod signin;

pub use jwt::{Binding, BindingKind, JwtError, JwtIdentity, JwtSettings, JwtVerifier};
pub use signin::{
    Role, SIGNIN_LIFETIME, SignedIn, SigninError, SigningKey, hash_password, verify_password,
};
