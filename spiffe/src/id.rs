//! SPIFFE IDs, parsed as strictly as go-spiffe (and so SPIRE) does: lower-case
//! scheme and trust domain, no empty, `.` or `..` segments, no trailing slash, no
//! percent-encoding, no query or fragment (SPIFFE-ID.md §2).

use std::fmt;
use std::sync::Arc;

use crate::trust_domain::{TrustDomain, validate_trust_domain};

const SCHEME: &str = "spiffe://";
const MAX_LEN: usize = 2048;

/// A valid SPIFFE ID, e.g. `spiffe://cluster.local/ns/default/sa/curl`. Shared,
/// not copied, when cloned: the data path hands a peer's ID to each request's
/// policy input, its metrics and its logs.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct SpiffeId {
    id: Arc<str>,
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
            id: Arc::from(id),
            trust_domain_end: SCHEME.len() + td_end,
        })
    }

    /// The principal form Istio writes (`td/path`), or a whole ID.
    pub fn parse_principal(text: &str) -> Result<Self, InvalidSpiffeId> {
        if text.starts_with(SCHEME) {
            Self::parse(text)
        } else {
            Self::parse(&format!("{SCHEME}{text}"))
        }
    }

    /// `spiffe://<td>/<path>` from a trust domain and path segments.
    pub fn from_segments(
        trust_domain: &TrustDomain,
        segments: &[&str],
    ) -> Result<Self, InvalidSpiffeId> {
        Self::parse(&format!("{SCHEME}{trust_domain}/{}", segments.join("/")))
    }

    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The trust domain's name, as written in the ID.
    pub fn trust_domain_name(&self) -> &str {
        &self.id[SCHEME.len()..self.trust_domain_end]
    }

    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain::already_valid(self.trust_domain_name())
    }

    /// `spiffe://<td>`, for an already valid trust domain.
    pub(crate) fn from_trust_domain(td: &TrustDomain) -> Self {
        Self {
            id: Arc::from(format!("{SCHEME}{td}")),
            trust_domain_end: SCHEME.len() + td.as_str().len(),
        }
    }

    /// The path, `""` or starting with `/`.
    pub fn path(&self) -> &str {
        &self.id[self.trust_domain_end..]
    }

    /// The principal form Istio policies use: the ID without `spiffe://`.
    pub fn principal(&self) -> &str {
        &self.id[SCHEME.len()..]
    }

    /// The path's segments, after the trust domain.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.path().split('/').skip(1)
    }

    /// The Kubernetes namespace of an ID shaped `.../ns/<namespace>/...`: the
    /// segment after the first `ns` segment.
    pub fn namespace(&self) -> Option<&str> {
        let mut segments = self.segments();
        segments.find(|s| *s == "ns")?;
        segments.next()
    }

    pub fn is_member_of(&self, trust_domain: &TrustDomain) -> bool {
        self.trust_domain_name() == trust_domain.as_str()
    }
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
        id.id.as_ref().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids_and_parts() {
        let id = SpiffeId::parse("spiffe://math.example.com/ns/default/sa/curl-spire").unwrap();
        assert_eq!(id.trust_domain_name(), "math.example.com");
        assert!(id.is_member_of(&TrustDomain::parse("math.example.com").unwrap()));
        assert_eq!(id.path(), "/ns/default/sa/curl-spire");
        assert_eq!(id.principal(), "math.example.com/ns/default/sa/curl-spire");
        assert_eq!(id.namespace(), Some("default"));
        assert_eq!(
            SpiffeId::parse_principal("math.example.com/ns/default/sa/curl-spire").unwrap(),
            id
        );
        assert_eq!(SpiffeId::parse_principal(id.as_str()).unwrap(), id);
        for (text, ns) in [
            ("spiffe://td/spire/agent/join_token/x", None),
            ("spiffe://td/ns", None),
            ("spiffe://td", None),
            ("spiffe://td/a/ns/b/sa/c", Some("b")),
        ] {
            assert_eq!(SpiffeId::parse(text).unwrap().namespace(), ns, "{text}");
        }
        let td = TrustDomain::parse("td").unwrap().id();
        assert_eq!((td.as_str(), td.path()), ("spiffe://td", ""));
        assert_eq!(
            SpiffeId::from_segments(&td.trust_domain(), &["spire", "agent", "join_token", "abc"])
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
