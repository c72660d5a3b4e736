//! SPIFFE IDs, parsed as strictly as go-spiffe (and so SPIRE) does: lower-case
//! scheme and trust domain, no empty, `.` or `..` segments, no trailing slash, no
//! percent-encoding, no query or fragment (SPIFFE-ID.md §2).

use std::fmt;

const SCHEME: &str = "spiffe://";
const MAX_LEN: usize = 2048;
const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// A valid SPIFFE ID, e.g. `spiffe://cluster.local/ns/default/sa/curl`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct SpiffeId {
    id: String,
    trust_domain_end: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid SPIFFE ID {id:?}: {reason}")]
pub struct InvalidSpiffeId {
    pub id: String,
    pub reason: &'static str,
}

impl SpiffeId {
    pub fn parse(id: &str) -> Result<Self, InvalidSpiffeId> {
        let err = |reason| InvalidSpiffeId {
            id: id.to_owned(),
            reason,
        };
        if id.len() > MAX_LEN {
            return Err(err("longer than 2048 bytes"));
        }
        let rest = id
            .strip_prefix(SCHEME)
            .ok_or_else(|| err("scheme is missing or invalid: it must be lower-case spiffe://"))?;
        let td_end = rest.find('/').unwrap_or(rest.len());
        validate_trust_domain(&rest[..td_end]).map_err(err)?;
        let path = &rest[td_end..];
        if !path.is_empty() {
            for segment in path[1..].split('/') {
                match segment {
                    "" => {
                        return Err(err(
                            "path cannot contain empty segments or a trailing slash",
                        ));
                    }
                    "." | ".." => return Err(err("path cannot contain dot segments")),
                    s if !s
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) =>
                    {
                        return Err(err(
                            "path segment characters are limited to letters, numbers, dots, dashes, and underscores",
                        ));
                    }
                    _ => {}
                }
            }
        }
        Ok(Self {
            id: id.to_owned(),
            trust_domain_end: SCHEME.len() + td_end,
        })
    }

    /// `spiffe://<td>` with no path: a trust domain's own ID.
    pub fn for_trust_domain(trust_domain: &str) -> Result<Self, InvalidSpiffeId> {
        Self::parse(&format!("{SCHEME}{trust_domain}"))
    }

    /// `spiffe://<td>/<path>` from a trust domain and path segments.
    pub fn from_segments(trust_domain: &str, segments: &[&str]) -> Result<Self, InvalidSpiffeId> {
        Self::parse(&format!("{SCHEME}{trust_domain}/{}", segments.join("/")))
    }

    pub fn as_str(&self) -> &str {
        &self.id
    }

    pub fn trust_domain(&self) -> &str {
        &self.id[SCHEME.len()..self.trust_domain_end]
    }

    /// The path, `""` or starting with `/`.
    pub fn path(&self) -> &str {
        &self.id[self.trust_domain_end..]
    }

    /// The principal form Istio policies use: the ID without `spiffe://`.
    pub fn principal(&self) -> &str {
        &self.id[SCHEME.len()..]
    }

    pub fn is_member_of(&self, trust_domain: &str) -> bool {
        self.trust_domain() == trust_domain
    }
}

/// SPIFFE-ID.md §2.1: non-empty, lower-case letters, digits, `.`, `-`, `_`.
pub fn validate_trust_domain(td: &str) -> Result<(), &'static str> {
    if td.is_empty() {
        return Err("trust domain is missing");
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
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

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl std::str::FromStr for SpiffeId {
    type Err = InvalidSpiffeId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for SpiffeId {
    type Error = InvalidSpiffeId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<SpiffeId> for String {
    fn from(id: SpiffeId) -> Self {
        id.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids_and_parts() {
        let id = SpiffeId::parse("spiffe://math.example.com/ns/default/sa/curl-spire").unwrap();
        assert_eq!(id.trust_domain(), "math.example.com");
        assert_eq!(id.path(), "/ns/default/sa/curl-spire");
        assert_eq!(id.principal(), "math.example.com/ns/default/sa/curl-spire");
        let td = SpiffeId::for_trust_domain("td").unwrap();
        assert_eq!((td.as_str(), td.path()), ("spiffe://td", ""));
        assert_eq!(
            SpiffeId::from_segments("td", &["spire", "agent", "join_token", "abc"])
                .unwrap()
                .as_str(),
            "spiffe://td/spire/agent/join_token/abc"
        );
    }

    #[test]
    fn invalid_ids_say_why() {
        let cases = [
            ("", "scheme"),
            ("SPIFFE://td/x", "scheme"),
            ("spiffe://", "trust domain is missing"),
            ("spiffe://TD/x", "lowercase"),
            ("spiffe://td:80/x", "lowercase"),
            ("spiffe://td/", "trailing slash"),
            ("spiffe://td//x", "empty segments"),
            ("spiffe://td/./x", "dot segments"),
            ("spiffe://td/a%20b", "path segment characters"),
            ("spiffe://td/a?q", "path segment characters"),
            ("spiffe://td/a#f", "path segment characters"),
        ];
        for (id, want) in cases {
            let e = SpiffeId::parse(id).unwrap_err();
            assert!(e.reason.contains(want), "{id:?}: {e}");
        }
        assert!(SpiffeId::parse(&format!("spiffe://td/{}", "a".repeat(2100))).is_err());
    }

    #[test]
    fn serde_round_trip_validates() {
        let id: SpiffeId = serde_json::from_str("\"spiffe://td/x\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"spiffe://td/x\"");
        assert!(serde_json::from_str::<SpiffeId>("\"spiffe://td/\"").is_err());
    }
}
