//! meshward-spiffe: the identity vocabulary every other meshward crate speaks, with
//! no meshward crate below it. One strict parser per thing, so the issuer that signs
//! an SVID and the data path that accepts one apply the same rules.
//!
//! - [`TrustDomain`], [`SpiffeId`]: names, parsed once.
//! - [`Bundle`], [`BundleSet`]: the authorities of a trust domain (SPIFFE bundle
//!   JSON, PEM), and of every trust domain a party trusts.
//! - [`validate_x509_svid`]: the X509-SVID rules, for signer and verifier alike.
//! - [`Selector`]: SPIRE's `type:value` workload and node attributes.
//! - [`pem`]: the one PEM implementation.

mod bundle;
mod id;
pub mod pem;
mod selector;
mod trust_domain;
mod x509_svid;

pub use bundle::{Bundle, BundleSet, InvalidBundle, JwtPublicKey, PublicJwk};
pub use id::{InvalidSpiffeId, SpiffeId};
pub use pem::InvalidPem;
pub use selector::{InvalidSelector, Selector};
pub use trust_domain::{InvalidTrustDomain, TrustDomain, validate_trust_domain};
pub use x509_svid::{InvalidX509Svid, validate_x509_svid};
