//! `capture:` how the node daemon takes pod traffic (iptables REDIRECT in the
//! node's network namespace; the original destination comes back with
//! SO_ORIGINAL_DST).

use serde::{Deserialize, Serialize};

use meshward_config::ConfigError;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Whether `proxy run` installs the rules at start. `false` when something else
    /// owns them (a CNI plugin, or tests on a host that must not be touched).
    pub install: bool,
    /// What `proxy run` does with the rules it installed when it stops.
    pub on_exit: CaptureOnExit,
    /// Host-side interfaces of pods: `eni` on EKS (VPC CNI), `veth` elsewhere.
    pub pod_interface_prefix: String,
    pub outbound_port: u16,
    pub inbound_plaintext_port: u16,
    pub inbound_hbone_port: u16,
    /// fwmark on the daemon's own upstream sockets (never captured again); masked
    /// with 0xfff, clear of the VPC CNI's 0x80 connmark and kube-proxy's 0x4000/0x8000.
    pub mark: u32,
    /// Destination ports never captured (e.g. kubelet probes' ports).
    pub exclude_ports: Vec<u16>,
    /// Destination CIDRs never captured.
    pub exclude_cidrs: Vec<String>,
}

/// The rules' fate when the daemon stops: the choice between pods that keep talking,
/// unprotected, and pods that wait for their proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureOnExit {
    /// Removed: until a daemon is back, the node's pods talk directly, without mTLS
    /// and without authorization (inbound plaintext reaches them unchecked).
    Remove,
    /// Kept: until a daemon is back, every connection capture takes (the node's
    /// pods' TCP but excluded ports and CIDRs) fails, refused or unanswered, so a
    /// restart or an upgrade fails closed. Uninstalling then needs `meshward proxy
    /// capture --remove` per node.
    Keep,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            install: true,
            on_exit: CaptureOnExit::Remove,
            pod_interface_prefix: "eni".into(),
            outbound_port: 15001,
            inbound_plaintext_port: 15006,
            inbound_hbone_port: 15008,
            mark: 0x539,
            exclude_ports: Vec::new(),
            exclude_cidrs: Vec::new(),
        }
    }
}

impl CaptureConfig {
    pub(crate) fn validate(&self, source: &str) -> Result<(), ConfigError> {
        let invalid =
            |field: &str, reason: String| Err(ConfigError::invalid(source, field, reason));
        let prefix_ok = !self.pod_interface_prefix.is_empty()
            && self.pod_interface_prefix.len() < 15
            && self
                .pod_interface_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !prefix_ok {
            return invalid(
                "capture.pod_interface_prefix",
                format!(
                    "{:?} is not an interface name prefix",
                    self.pod_interface_prefix
                ),
            );
        }
        if self.mark == 0 || self.mark > 0xfff {
            return invalid(
                "capture.mark",
                "must be in 1..=0xfff (it is matched with mask 0xfff)".into(),
            );
        }
        for (i, cidr) in self.exclude_cidrs.iter().enumerate() {
            let ok = cidr.parse::<std::net::IpAddr>().is_ok()
                || cidr.split_once('/').is_some_and(|(ip, len)| {
                    ip.parse::<std::net::IpAddr>().is_ok()
                        && len.parse::<u8>().is_ok_and(|l| l <= 128)
                });
            if !ok {
                return invalid(
                    &format!("capture.exclude_cidrs[{i}]"),
                    format!("{cidr:?} is not an IP or CIDR"),
                );
            }
        }
        Ok(())
    }
}
