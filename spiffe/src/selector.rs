//! Selectors: SPIRE's `type:value` attributes of a workload or a node
//! (`k8s:ns:default`, `unix:uid:1000`), what registration entries and identity
//! templates match on.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// `type:value`, e.g. `k8s:ns:echoserver` (type `k8s`, value `ns:echoserver`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Selector {
    pub kind: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("selector {0:?} is not of the form type:value")]
pub struct InvalidSelector(pub String);

impl FromStr for Selector {
    type Err = InvalidSelector;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some((kind, value)) if !kind.is_empty() && !value.is_empty() => Ok(Self {
                kind: kind.to_owned(),
                value: value.to_owned(),
            }),
            _ => Err(InvalidSelector(s.to_owned())),
        }
    }
}

impl TryFrom<String> for Selector {
    type Error = InvalidSelector;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Selector> for String {
    fn from(s: Selector) -> Self {
        s.to_string()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_and_value_split_at_the_first_colon() {
        let s: Selector = "k8s:ns:echoserver".parse().unwrap();
        assert_eq!(
            (s.kind.as_str(), s.value.as_str()),
            ("k8s", "ns:echoserver")
        );
        assert_eq!(s.to_string(), "k8s:ns:echoserver");
        for bad in ["k8s", ":x", "k8s:", ""] {
            assert!(bad.parse::<Selector>().is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<Selector>("\"nocolon\"").is_err());
    }
}
