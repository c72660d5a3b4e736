//! The TLS 1.3 key exchange groups HBONE may offer, and the aws-lc-rs provider
//! that offers exactly them.

use std::sync::Arc;

use rustls::crypto::{CryptoProvider, SupportedKxGroup, aws_lc_rs};
use serde::{Deserialize, Serialize};

/// A key exchange group, written as rustls and the IANA registry name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum KeyExchangeGroup {
    /// Hybrid post-quantum: X25519 with ML-KEM-768 (draft-ietf-tls-ecdhe-mlkem).
    X25519MLKEM768,
    /// Hybrid post-quantum: P-256 with ML-KEM-768.
    SECP256R1MLKEM768,
    X25519,
    SECP256R1,
    SECP384R1,
}

impl KeyExchangeGroup {
    fn rustls(self) -> &'static dyn SupportedKxGroup {
        match self {
            Self::X25519MLKEM768 => aws_lc_rs::kx_group::X25519MLKEM768,
            Self::SECP256R1MLKEM768 => aws_lc_rs::kx_group::SECP256R1MLKEM768,
            Self::X25519 => aws_lc_rs::kx_group::X25519,
            Self::SECP256R1 => aws_lc_rs::kx_group::SECP256R1,
            Self::SECP384R1 => aws_lc_rs::kx_group::SECP384R1,
        }
    }
}

impl std::str::FromStr for KeyExchangeGroup {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        [
            Self::X25519MLKEM768,
            Self::SECP256R1MLKEM768,
            Self::X25519,
            Self::SECP256R1,
            Self::SECP384R1,
        ]
        .into_iter()
        .find(|g| format!("{g:?}") == name)
        .ok_or_else(|| format!("{name:?} is not a key exchange group meshward offers"))
    }
}

/// aws-lc-rs offering exactly `groups`, most preferred first.
pub fn crypto_provider(groups: &[KeyExchangeGroup]) -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        kx_groups: groups.iter().map(|g| g.rustls()).collect(),
        ..aws_lc_rs::default_provider()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provider_offers_exactly_the_groups_in_order() {
        let names = |groups: &[KeyExchangeGroup]| -> Vec<String> {
            crypto_provider(groups)
                .kx_groups
                .iter()
                .map(|g| format!("{:?}", g.name()))
                .collect()
        };
        let hybrid = [KeyExchangeGroup::X25519MLKEM768, KeyExchangeGroup::X25519];
        assert_eq!(names(&hybrid), ["X25519MLKEM768", "X25519"]);
        let classic = [KeyExchangeGroup::SECP256R1, KeyExchangeGroup::X25519];
        assert_eq!(names(&classic), ["secp256r1", "X25519"]);
        assert_eq!("X25519".parse(), Ok(KeyExchangeGroup::X25519));
        assert!("X448".parse::<KeyExchangeGroup>().is_err());
    }
}
