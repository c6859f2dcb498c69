//! Health drivers: they decide from what they observe (reported outcomes)
//! and push changes into the registry; the core never calls them.
//!
//! Owns: outlier ejection's driver and the panic log ([`outlier`]). Must not
//! import the front ends (dns, http).

pub mod outlier;
