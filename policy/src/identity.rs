//! The peer identity policies see: a SPIFFE ID from a verified mTLS certificate,
//! written as Istio writes principals (without `spiffe://`).

use std::fmt;
use std::ops::Range;

/// A verified peer identity, e.g. `cluster.local/ns/default/sa/curl`.
///
/// Only the mTLS layer creates these for real traffic; policies never see an
/// identity that was not verified (plaintext has none, reference §6).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    principal: String,
    trust_domain: Range<usize>,
    namespace: Option<Range<usize>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid SPIFFE identity {value:?}: {reason}")]
pub struct InvalidIdentity {
    value: String,
    reason: &'static str,
}

impl Identity {
    /// Parses `spiffe://td/path` or the principal form `td/path`.
    pub fn parse(value: &str) -> Result<Self, InvalidIdentity> {
        let err = |reason| InvalidIdentity {
            value: value.to_owned(),
            reason,
        };
        let principal = value.strip_prefix("spiffe://").unwrap_or(value);
        let td_end = principal.find('/').unwrap_or(principal.len());
        let trust_domain = &principal[..td_end];
        if trust_domain.is_empty() {
            return Err(err("empty trust domain"));
        }
        if !trust_domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
        {
            return Err(err(
                "the trust domain may hold only lower-case letters, digits, `-`, `.` and `_`",
            ));
        }
        let path = &principal[td_end..];
        if path.ends_with('/')
            || path
                .split('/')
                .skip(1)
                .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(err("the path has an empty, `.` or `..` segment"));
        }
        if principal
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b'?' || b == b'#' || b == b'%')
        {
            return Err(err("the ID has a character SPIFFE forbids"));
        }
        let namespace = namespace_range(principal, td_end);
        Ok(Self {
            principal: principal.to_owned(),
            trust_domain: 0..td_end,
            namespace,
        })
    }

    /// `td/path`, the form Istio's `principals` and `source.principal` compare with.
    pub fn principal(&self) -> &str {
        &self.principal
    }

    pub fn trust_domain(&self) -> &str {
        &self.principal[self.trust_domain.clone()]
    }

    /// The Kubernetes namespace: the segment after the first `ns` segment.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.clone().map(|r| &self.principal[r])
    }

    /// Path segments after the trust domain.
    pub(crate) fn segments(&self) -> impl Iterator<Item = &str> {
        self.principal[self.trust_domain.end..].split('/').skip(1)
    }
}

fn namespace_range(principal: &str, td_end: usize) -> Option<Range<usize>> {
    let mut offset = td_end;
    let mut segments = principal[td_end..].split('/').skip(1);
    offset += 1;
    while let Some(seg) = segments.next() {
        let next_start = offset + seg.len() + 1;
        if seg == "ns" {
            let ns = segments.next()?;
            return Some(next_start..next_start + ns.len());
        }
        offset = next_start;
    }
    None
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}", self.principal)
    }
}

impl std::str::FromStr for Identity {
    type Err = InvalidIdentity;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms() {
        for v in [
            "spiffe://cluster.local/ns/foo/sa/bar",
            "cluster.local/ns/foo/sa/bar",
        ] {
            let id = Identity::parse(v).unwrap();
            assert_eq!(id.principal(), "cluster.local/ns/foo/sa/bar");
            assert_eq!(id.trust_domain(), "cluster.local");
            assert_eq!(id.namespace(), Some("foo"));
            assert_eq!(id.to_string(), "spiffe://cluster.local/ns/foo/sa/bar");
        }
    }

    #[test]
    fn namespace_is_optional() {
        let id = Identity::parse("spiffe://td/spire/agent/join_token/x").unwrap();
        assert_eq!(id.namespace(), None);
        assert_eq!(Identity::parse("td/ns").unwrap().namespace(), None);
        assert_eq!(Identity::parse("td").unwrap().namespace(), None);
        assert_eq!(
            Identity::parse("td/a/ns/b/sa/c").unwrap().namespace(),
            Some("b")
        );
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "",
            "spiffe://",
            "/ns/x",
            "Upper.Case/ns/x",
            "td/ns//sa/x",
            "td/ns/x/",
            "td/./x",
            "td/../x",
            "td/a b",
            "td/a%20b",
        ] {
            assert!(Identity::parse(bad).is_err(), "{bad:?}");
        }
    }
}
