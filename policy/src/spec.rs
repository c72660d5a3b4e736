//! The wire form: `security.istio.io/v1` / `v1beta1` AuthorizationPolicy as YAML.
//!
//! Unknown fields are errors (`deny_unknown_fields`), as in Istio's admission:
//! a misspelt `notPath` must never turn into "no constraint".

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct PolicyDocument {
    #[allow(dead_code)] // checked before this type is parsed
    pub(crate) api_version: String,
    #[allow(dead_code)]
    pub(crate) kind: String,
    pub(crate) metadata: ObjectMeta,
    #[serde(default)]
    pub(crate) spec: PolicySpec,
    /// Written by the API server; ignored.
    #[allow(dead_code)]
    pub(crate) status: Option<IgnoredAny>,
}

/// Kubernetes ObjectMeta: the fields policies use, plus the server-written ones a
/// `kubectl get -o yaml` dump carries, accepted and ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
pub(crate) struct ObjectMeta {
    pub(crate) name: Option<String>,
    pub(crate) namespace: Option<String>,
    #[serde(default)]
    pub(crate) labels: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) annotations: BTreeMap<String, String>,
    generate_name: Option<IgnoredAny>,
    uid: Option<IgnoredAny>,
    resource_version: Option<IgnoredAny>,
    generation: Option<IgnoredAny>,
    creation_timestamp: Option<IgnoredAny>,
    deletion_timestamp: Option<IgnoredAny>,
    deletion_grace_period_seconds: Option<IgnoredAny>,
    finalizers: Option<IgnoredAny>,
    owner_references: Option<IgnoredAny>,
    managed_fields: Option<IgnoredAny>,
    self_link: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct PolicySpec {
    pub(crate) selector: Option<WorkloadSelector>,
    pub(crate) target_ref: Option<TargetRef>,
    pub(crate) target_refs: Option<Vec<TargetRef>>,
    pub(crate) rules: Option<Vec<RuleSpec>>,
    pub(crate) action: Option<ActionSpec>,
    pub(crate) provider: Option<ProviderSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct WorkloadSelector {
    #[serde(default)]
    pub(crate) match_labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // only its presence matters: such policies never apply to workloads
pub(crate) struct TargetRef {
    group: Option<String>,
    kind: String,
    name: String,
    namespace: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) enum ActionSpec {
    #[serde(rename = "ALLOW")]
    Allow,
    #[serde(rename = "DENY")]
    Deny,
    #[serde(rename = "AUDIT")]
    Audit,
    #[serde(rename = "CUSTOM")]
    Custom,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProviderSpec {
    pub(crate) name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleSpec {
    pub(crate) from: Option<Vec<FromSpec>>,
    pub(crate) to: Option<Vec<ToSpec>>,
    pub(crate) when: Option<Vec<ConditionSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FromSpec {
    pub(crate) source: Option<SourceSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ToSpec {
    pub(crate) operation: Option<OperationSpec>,
}

pub(crate) type Values = Option<Vec<String>>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct SourceSpec {
    pub(crate) principals: Values,
    pub(crate) not_principals: Values,
    pub(crate) request_principals: Values,
    pub(crate) not_request_principals: Values,
    pub(crate) namespaces: Values,
    pub(crate) not_namespaces: Values,
    pub(crate) service_accounts: Values,
    pub(crate) not_service_accounts: Values,
    pub(crate) trust_domains: Values,
    pub(crate) not_trust_domains: Values,
    pub(crate) ip_blocks: Values,
    pub(crate) not_ip_blocks: Values,
    pub(crate) remote_ip_blocks: Values,
    pub(crate) not_remote_ip_blocks: Values,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct OperationSpec {
    pub(crate) hosts: Values,
    pub(crate) not_hosts: Values,
    pub(crate) ports: Values,
    pub(crate) not_ports: Values,
    pub(crate) methods: Values,
    pub(crate) not_methods: Values,
    pub(crate) paths: Values,
    pub(crate) not_paths: Values,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ConditionSpec {
    pub(crate) key: String,
    pub(crate) values: Values,
    pub(crate) not_values: Values,
}
