//! `hbone:` the mutual TLS between node proxies.

use meshward_tls::KeyExchangeGroup;
use serde::{Deserialize, Serialize};

use meshward_config::ConfigError;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HboneConfig {
    /// Key exchange groups, most preferred first: a client sends a key share for
    /// the first, a server picks the first the client offers. The default prefers
    /// the hybrid post-quantum group and keeps X25519 for peers without it.
    pub key_exchange: Vec<KeyExchangeGroup>,
}

impl Default for HboneConfig {
    fn default() -> Self {
        Self {
            key_exchange: vec![KeyExchangeGroup::X25519MLKEM768, KeyExchangeGroup::X25519],
        }
    }
}

impl HboneConfig {
    pub(crate) fn validate(&self, source: &str) -> Result<(), ConfigError> {
        let invalid =
            |reason: &str| Err(ConfigError::invalid(source, "hbone.key_exchange", reason));
        if self.key_exchange.is_empty() {
            return invalid("needs at least one group");
        }
        for (i, group) in self.key_exchange.iter().enumerate() {
            if self.key_exchange[..i].contains(group) {
                return invalid(&format!("{group:?} is listed twice"));
            }
        }
        Ok(())
    }
}
