//! Trust domains (SPIFFE-ID.md §2.1), parsed once: the key of every bundle and the
//! first part of every SPIFFE ID.

use std::fmt;

use crate::SpiffeId;

const MAX_LEN: usize = 255;

/// A valid trust domain name, e.g. `math.example.com`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct TrustDomain(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid trust domain {name:?}: {reason}")]
pub struct InvalidTrustDomain {
    pub name: String,
    pub reason: &'static str,
}

impl TrustDomain {
    pub fn parse(name: &str) -> Result<Self, InvalidTrustDomain> {
        validate_trust_domain(name).map_err(|reason| InvalidTrustDomain {
            name: name.to_owned(),
            reason,
        })?;
        Ok(Self(name.to_owned()))
    }

    /// A trust domain written as its name (`example.org`) or as its ID
    /// (`spiffe://example.org`), as SPIRE's `federatesWith` and CLI flags take it.
    pub fn parse_name_or_id(text: &str) -> Result<Self, InvalidTrustDomain> {
        Self::parse(text.strip_prefix("spiffe://").unwrap_or(text))
    }

    /// From a name a SPIFFE ID's parser has checked.
    pub(crate) fn already_valid(name: &str) -> Self {
        Self(name.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `spiffe://<td>`: the trust domain's own ID.
    pub fn id(&self) -> SpiffeId {
        SpiffeId::from_trust_domain(self)
    }
}

/// SPIFFE-ID.md §2.1: non-empty, lower-case letters, digits, `.`, `-`, `_`.
pub fn validate_trust_domain(td: &str) -> Result<(), &'static str> {
    if td.is_empty() {
        return Err("trust domain is missing");
    }
    if td.len() > MAX_LEN {
        return Err("trust domain is longer than 255 bytes");
    }
    if !td
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
    {
        return Err(
            "trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores",
        );
    }
    Ok(())
}

/// `cluster.local`: the trust domain Kubernetes and Istio assume when none is set.
impl Default for TrustDomain {
    fn default() -> Self {
        Self("cluster.local".to_owned())
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for TrustDomain {
    type Err = InvalidTrustDomain;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for TrustDomain {
    type Error = InvalidTrustDomain;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<TrustDomain> for String {
    fn from(td: TrustDomain) -> Self {
        td.0
    }
}

impl PartialEq<str> for TrustDomain {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for TrustDomain {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_once() {
        let td = TrustDomain::parse("math.example.com").unwrap();
        assert_eq!(td.id().as_str(), "spiffe://math.example.com");
        for (bad, why) in [
            ("", "missing"),
            ("Math.example.com", "lowercase"),
            ("td:80", "lowercase"),
        ] {
            let e = TrustDomain::parse(bad).unwrap_err();
            assert!(e.reason.contains(why), "{bad:?}: {e}");
        }
        assert!(TrustDomain::parse(&"a".repeat(256)).is_err());
        assert!(serde_json::from_str::<TrustDomain>("\"A\"").is_err());
    }

    #[test]
    fn a_name_or_its_id_but_nothing_else() {
        for text in ["payments.example.org", "spiffe://payments.example.org"] {
            let td = TrustDomain::parse_name_or_id(text).unwrap();
            assert_eq!(td.as_str(), "payments.example.org");
        }
        for bad in ["spiffe://td/path", "https://td", "spiffe://", "SPIFFE://td"] {
            assert!(TrustDomain::parse_name_or_id(bad).is_err(), "{bad}");
        }
    }
}
