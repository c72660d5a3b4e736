//! `aws_iid:` EC2 instance identity document attestation (SPIRE's `aws_iid`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use meshward_config::ConfigError;

use crate::attestor::aws_iid::{DEFAULT_AGENT_PATH_TEMPLATE, PathTemplate};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AwsIidConfig {
    /// The AWS accounts whose instances may attest. Required: every EC2 instance
    /// in the world holds a document AWS signed.
    pub account_ids: Vec<String>,
    /// A `region: PEM` file replacing the AWS certificates meshward ships (other
    /// partitions, a test IMDS).
    pub region_certificates_file: Option<PathBuf>,
    /// How long after the instance last started (`pendingTime`) its document
    /// still attests: a leaked document stops working after this.
    #[serde(with = "meshward_config::duration", default = "default_max_age")]
    pub max_document_age: Duration,
    /// Whether an instance already attested may attest again (SPIRE: no). Off,
    /// a second attestation of one instance ID is refused until the node is
    /// evicted.
    #[serde(default)]
    pub allow_reattestation: bool,
    /// The node's path under `/spire/agent/`, SPIRE's `agent_path_template`.
    #[serde(default = "default_template")]
    pub agent_path_template: String,
}

fn default_max_age() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_template() -> String {
    DEFAULT_AGENT_PATH_TEMPLATE.into()
}

impl AwsIidConfig {
    pub(super) fn validate(&self, source: &str) -> Result<(), ConfigError> {
        let invalid = |field: &str, reason: String| {
            Err(ConfigError::invalid(
                source,
                &format!("aws_iid.{field}"),
                reason,
            ))
        };
        if self.account_ids.is_empty() {
            return invalid(
                "account_ids",
                "list the AWS accounts whose instances may attest".into(),
            );
        }
        for (i, account) in self.account_ids.iter().enumerate() {
            if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
                return invalid(
                    &format!("account_ids[{i}]"),
                    format!("{account:?} is not a 12-digit AWS account ID"),
                );
            }
        }
        if self.max_document_age.is_zero() {
            return invalid("max_document_age", "must be positive".into());
        }
        if let Err(e) = PathTemplate::parse(&self.agent_path_template) {
            return invalid("agent_path_template", e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::IssuerConfig;

    #[test]
    fn k8s_psat_and_aws_iid_side_by_side_with_spire_s_defaults() {
        let yaml = "k8s_psat:\n  clusters:\n  - {name: eks, api_server: https://k8s, service_account_allow_list: ['meshward:meshward-node']}\naws_iid:\n  account_ids: ['123456789012']\n";
        let c = IssuerConfig::from_yaml(yaml, "i.yaml").unwrap();
        assert!(c.k8s_psat.is_some());
        let iid = c.aws_iid.unwrap();
        assert_eq!(iid.max_document_age.as_secs(), 86_400);
        assert!(!iid.allow_reattestation);
        assert_eq!(
            iid.agent_path_template,
            "{{ .PluginName }}/{{ .AccountID }}/{{ .Region }}/{{ .InstanceID }}"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                "aws_iid: {account_ids: []}\n",
                "i.yaml: aws_iid.account_ids: list the AWS accounts",
            ),
            (
                "aws_iid: {account_ids: ['1234']}\n",
                "i.yaml: aws_iid.account_ids[0]: \"1234\" is not a 12-digit",
            ),
            (
                "aws_iid: {account_ids: ['123456789012'], agent_path_template: '{{ .Region }}'}\n",
                "i.yaml: aws_iid.agent_path_template:",
            ),
            (
                "aws_iid: {account_ids: ['123456789012'], max_document_age: 0s}\n",
                "i.yaml: aws_iid.max_document_age: must be positive",
            ),
            (
                "aws_iid: {account_ids: ['123456789012'], regions: []}\n",
                "i.yaml: aws_iid.regions: unknown field",
            ),
        ];
        for (yaml, want) in cases {
            let e = IssuerConfig::from_yaml(yaml, "i.yaml")
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(want), "want {want:?}, got {e:?}");
        }
    }
}
