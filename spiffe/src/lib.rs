//! meshward-spiffe: the identity vocabulary every other meshward crate speaks, with
//! no meshward crate below it. One strict parser per thing, so the issuer that signs
//! an SVID and the data path that accepts one apply the same rules.

mod id;
mod x509_svid;

pub use id::{InvalidSpiffeId, SpiffeId, validate_trust_domain};
pub use x509_svid::{InvalidX509Svid, validate_x509_svid};
