//! Value matchers: how one policy value is compared with one request value.
//!
//! Istio's rule (reference §4): `abc` exact, `abc*` prefix, `*abc` suffix, `*`
//! presence; only one leading or trailing `*` is a wildcard. Everything here works
//! on bytes so header values that are not UTF-8 are still compared, never skipped.

use std::fmt;

/// Parse-time failure of one value; the caller adds the field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InvalidValue(pub(crate) String);

/// One `abc` / `abc*` / `*abc` / `*` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StringMatch {
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    Suffix(Box<[u8]>),
    /// `*` for most fields: any non-empty value.
    NonEmpty,
    /// `*` for `request.headers[...]`: the header is present, even if empty
    /// (Envoy's `present_match`, reference §9.1).
    Present,
}

impl StringMatch {
    /// Parses a value; `fold_case` lower-cases it (hosts are compared case-insensitively,
    /// and the request side is lower-cased once when the request is built).
    pub(crate) fn parse(value: &str, fold_case: bool) -> Result<Self, InvalidValue> {
        let owned;
        let value = if fold_case {
            owned = value.to_ascii_lowercase();
            owned.as_str()
        } else {
            value
        };
        if value.is_empty() {
            return Err(InvalidValue("empty value".into()));
        }
        if value == "*" {
            return Ok(Self::NonEmpty);
        }
        let bytes = value.as_bytes();
        let stars = bytes.iter().filter(|b| **b == b'*').count();
        match stars {
            0 => Ok(Self::Exact(bytes.into())),
            1 if bytes[0] == b'*' => Ok(Self::Suffix(bytes[1..].into())),
            1 if bytes[bytes.len() - 1] == b'*' => {
                Ok(Self::Prefix(bytes[..bytes.len() - 1].into()))
            }
            _ => Err(InvalidValue(format!(
                "{value:?}: `*` is allowed only once, as the whole value or at its start or end"
            ))),
        }
    }

    /// The header flavour of `*`: presence rather than non-emptiness.
    pub(crate) fn presence_means_present(self) -> Self {
        match self {
            Self::NonEmpty => Self::Present,
            other => other,
        }
    }

    pub(crate) fn matches(&self, value: &[u8]) -> bool {
        match self {
            Self::Exact(want) => value == &**want,
            Self::Prefix(want) => value.starts_with(want),
            Self::Suffix(want) => value.ends_with(want),
            Self::NonEmpty => !value.is_empty(),
            Self::Present => true,
        }
    }
}

impl fmt::Display for StringMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match self {
            Self::Exact(v) => write!(f, "{}", s(v)),
            Self::Prefix(v) => write!(f, "{}*", s(v)),
            Self::Suffix(v) => write!(f, "*{}", s(v)),
            Self::NonEmpty | Self::Present => f.write_str("*"),
        }
    }
}

/// Parses an IP or CIDR (`ipBlocks`, `source.ip`, ...); a bare IP is a /32 or /128.
/// Host bits in a CIDR are cleared, as Istio's `netip.ParsePrefix(...).Masked()` does.
pub(crate) fn parse_ip_block(value: &str) -> Result<ipnet::IpNet, InvalidValue> {
    if let Ok(net) = value.parse::<ipnet::IpNet>() {
        return Ok(net.trunc());
    }
    value
        .parse::<std::net::IpAddr>()
        .map(ipnet::IpNet::from)
        .map_err(|_| InvalidValue(format!("{value:?} is not an IP address or CIDR")))
}

/// Parses a port (`ports`, `destination.port`): exact only, 1-65535.
pub(crate) fn parse_port(value: &str) -> Result<u16, InvalidValue> {
    match value.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(InvalidValue(format!(
            "{value:?} is not a port number (1-65535)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_match_kinds() {
        let cases: &[(&str, &str, bool)] = &[
            ("abc", "abc", true),
            ("abc", "abcd", false),
            ("abc*", "abcd", true),
            ("abc*", "abc", true),
            ("abc*", "xabc", false),
            ("*abc", "xabc", true),
            ("*abc", "abcx", false),
            ("*", "x", true),
            ("*", "", false),
        ];
        for (pattern, value, want) in cases {
            let m = StringMatch::parse(pattern, false).unwrap();
            assert_eq!(m.matches(value.as_bytes()), *want, "{pattern} vs {value}");
        }
    }

    #[test]
    fn header_presence_matches_empty_value() {
        let m = StringMatch::parse("*", false)
            .unwrap()
            .presence_means_present();
        assert!(m.matches(b""));
    }

    #[test]
    fn rejects_bad_wildcards_and_empty() {
        for bad in ["", "a*b", "**", "*a*", "a**"] {
            assert!(StringMatch::parse(bad, false).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn case_folding_lowercases_the_policy_side() {
        let m = StringMatch::parse("Secret.COM", true).unwrap();
        assert!(m.matches(b"secret.com"));
    }

    #[test]
    fn ip_blocks_and_ports() {
        assert_eq!(
            parse_ip_block("10.1.2.3").unwrap().to_string(),
            "10.1.2.3/32"
        );
        assert_eq!(
            parse_ip_block("10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(parse_ip_block("::1").unwrap().to_string(), "::1/128");
        assert!(parse_ip_block("10.1.2").is_err());
        assert!(parse_ip_block("10.0.0.0/33").is_err());
        assert_eq!(parse_port("8080").unwrap(), 8080);
        for bad in ["0", "65536", "80*", "-1", ""] {
            assert!(parse_port(bad).is_err(), "{bad:?}");
        }
    }
}
