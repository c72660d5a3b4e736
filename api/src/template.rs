//! Identity templates in the shape of spire-controller-manager's `ClusterSPIFFEID`:
//! one object gives every matching pod its SPIFFE ID, e.g.
//! `spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}`
//! (the short form `spiffe://{{trust-domain}}/ns/{{namespace}}/sa/{{serviceaccount}}`
//! works too). The agent renders a template for each of its pods; the issuer renders
//! it again before signing, so an agent cannot make a template say something else.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use meshward_spiffe::Selector;
use meshward_spiffe::{SpiffeId, TrustDomain};

/// A stored template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityTemplate {
    pub name: String,
    pub spiffe_id_template: String,
    /// Pod labels that must all match (`podSelector.matchLabels`); empty = every pod.
    #[serde(default)]
    pub pod_selector: BTreeMap<String, String>,
    /// Namespace labels that must all match (`namespaceSelector.matchLabels`);
    /// `kubernetes.io/metadata.name` is always known.
    #[serde(default)]
    pub namespace_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub workload_selector_templates: Vec<String>,
    #[serde(default)]
    pub dns_name_templates: Vec<String>,
    #[serde(default)]
    pub x509_svid_ttl: u32,
    #[serde(default)]
    pub jwt_svid_ttl: u32,
    #[serde(default)]
    pub federates_with: Vec<TrustDomain>,
    #[serde(default)]
    pub hint: String,
    /// Selectors the node must have (every one), by any attestor: e.g.
    /// `aws_iid:account:123456789012` or `k8s_psat:cluster:eks`; empty = every node.
    /// meshward's addition to the ClusterSPIFFEID shape (`spec.nodeSelectors`).
    #[serde(default)]
    pub node_selectors: Vec<Selector>,
}

/// What a template is rendered over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodAttributes {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub service_account: String,
    pub node_name: String,
    pub labels: BTreeMap<String, String>,
    pub namespace_labels: BTreeMap<String, String>,
}

/// A template rendered for one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub spiffe_id: SpiffeId,
    pub selectors: Vec<Selector>,
    pub dns_names: Vec<String>,
}

const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

impl IdentityTemplate {
    /// Whether this template applies on a node with `node` selectors.
    pub fn selects_node(&self, node: &[Selector]) -> bool {
        self.node_selectors.iter().all(|s| node.contains(s))
    }

    /// Whether this template applies to the pod.
    pub fn selects(&self, pod: &PodAttributes) -> bool {
        let pod_ok = self
            .pod_selector
            .iter()
            .all(|(k, v)| pod.labels.get(k) == Some(v));
        let ns_ok = self.namespace_selector.iter().all(|(k, v)| {
            if k == NAMESPACE_NAME_LABEL {
                &pod.namespace == v
            } else {
                pod.namespace_labels.get(k) == Some(v)
            }
        });
        pod_ok && ns_ok
    }

    /// Renders the ID, the workload selectors and the DNS names for `pod`.
    pub fn render(
        &self,
        trust_domain: &TrustDomain,
        cluster: &str,
        pod: &PodAttributes,
    ) -> Result<Rendered, String> {
        let id = render(
            &self.spiffe_id_template,
            trust_domain.as_str(),
            cluster,
            pod,
        )?;
        let spiffe_id = SpiffeId::parse(&id).map_err(|e| format!("template {}: {e}", self.name))?;
        if !spiffe_id.is_member_of(trust_domain) {
            return Err(format!(
                "template {}: {spiffe_id} is not in trust domain {trust_domain}",
                self.name
            ));
        }
        let mut selectors = vec![Selector {
            kind: "k8s".into(),
            value: format!("pod-uid:{}", pod.uid),
        }];
        for t in &self.workload_selector_templates {
            let rendered = render(t, trust_domain.as_str(), cluster, pod)?;
            selectors.push(
                rendered
                    .parse()
                    .map_err(|e| format!("template {}: {e}", self.name))?,
            );
        }
        let dns_names = self
            .dns_name_templates
            .iter()
            .map(|t| render(t, trust_domain.as_str(), cluster, pod))
            .collect::<Result<_, _>>()?;
        Ok(Rendered {
            spiffe_id,
            selectors,
            dns_names,
        })
    }

    /// Checks that every template renders for a typical pod.
    pub fn validate(&self, trust_domain: &TrustDomain) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("name: must not be empty".into());
        }
        let sample = PodAttributes {
            namespace: "default".into(),
            name: "pod-0".into(),
            uid: "0000".into(),
            service_account: "default".into(),
            node_name: "node-0".into(),
            labels: self.pod_selector.clone(),
            namespace_labels: BTreeMap::new(),
        };
        self.render(trust_domain, "cluster", &sample).map(|_| ())
    }
}

/// Replaces every `{{ expression }}`.
fn render(
    template: &str,
    trust_domain: &str,
    cluster: &str,
    pod: &PodAttributes,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("{template:?}: `{{{{` without `}}}}`"))?;
        out.push_str(&value_of(after[..end].trim(), trust_domain, cluster, pod)?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn value_of(
    expression: &str,
    trust_domain: &str,
    cluster: &str,
    pod: &PodAttributes,
) -> Result<String, String> {
    let label = |key: &str| {
        pod.labels
            .get(key)
            .cloned()
            .ok_or_else(|| format!("the pod has no label {key:?}"))
    };
    Ok(match expression {
        ".TrustDomain" | "trust-domain" => trust_domain.to_owned(),
        ".ClusterName" | "cluster" => cluster.to_owned(),
        ".PodMeta.Namespace" | "namespace" => pod.namespace.clone(),
        ".PodMeta.Name" | "pod-name" => pod.name.clone(),
        ".PodMeta.UID" | "pod-uid" => pod.uid.clone(),
        ".PodSpec.ServiceAccountName" | "serviceaccount" => pod.service_account.clone(),
        ".PodSpec.NodeName" | "node-name" => pod.node_name.clone(),
        e => {
            if let Some(key) = e.strip_prefix("label:") {
                label(key)?
            } else if let Some(key) = e
                .strip_prefix("index .PodMeta.Labels ")
                .map(|k| k.trim().trim_matches('"'))
            {
                label(key)?
            } else {
                return Err(format!("unknown template expression {{{{ {e} }}}}"));
            }
        }
    })
}

// === wire form ===

impl From<&IdentityTemplate> for crate::proto::IdentityTemplate {
    fn from(t: &IdentityTemplate) -> Self {
        Self {
            name: t.name.clone(),
            spiffe_id_template: t.spiffe_id_template.clone(),
            pod_selector: t.pod_selector.clone().into_iter().collect(),
            namespace_selector: t.namespace_selector.clone().into_iter().collect(),
            workload_selector_templates: t.workload_selector_templates.clone(),
            dns_name_templates: t.dns_name_templates.clone(),
            x509_svid_ttl: i32::try_from(t.x509_svid_ttl).unwrap_or(i32::MAX),
            jwt_svid_ttl: i32::try_from(t.jwt_svid_ttl).unwrap_or(i32::MAX),
            federates_with: t.federates_with.iter().map(ToString::to_string).collect(),
            hint: t.hint.clone(),
            node_selectors: t.node_selectors.iter().map(ToString::to_string).collect(),
        }
    }
}

impl TryFrom<crate::proto::IdentityTemplate> for IdentityTemplate {
    type Error = String;

    /// Negative TTLs are refused, naming the template and the field.
    fn try_from(t: crate::proto::IdentityTemplate) -> Result<Self, String> {
        let ttl = |field: &str, v: i32| {
            u32::try_from(v)
                .map_err(|_| format!("template {}: {field}: must not be negative", t.name))
        };
        let federates_with = trust_domains(&t.federates_with)
            .map_err(|e| format!("template {}: federates_with{e}", t.name))?;
        let node_selectors = selectors(&t.node_selectors)
            .map_err(|e| format!("template {}: node_selectors{e}", t.name))?;
        Ok(Self {
            x509_svid_ttl: ttl("x509_svid_ttl", t.x509_svid_ttl)?,
            jwt_svid_ttl: ttl("jwt_svid_ttl", t.jwt_svid_ttl)?,
            name: t.name,
            spiffe_id_template: t.spiffe_id_template,
            pod_selector: t.pod_selector.into_iter().collect(),
            namespace_selector: t.namespace_selector.into_iter().collect(),
            workload_selector_templates: t.workload_selector_templates,
            dns_name_templates: t.dns_name_templates,
            federates_with,
            hint: t.hint,
            node_selectors,
        })
    }
}

/// `type:value` selectors; `Err`: `[index]: reason`.
fn selectors(listed: &[String]) -> Result<Vec<Selector>, String> {
    listed
        .iter()
        .enumerate()
        .map(|(i, s)| s.parse().map_err(|e| format!("[{i}]: {e}")))
        .collect()
}

/// Trust domains as names or `spiffe://` IDs (SPIRE takes both); `Err`: `[index]:
/// reason`, for the caller to name the field.
fn trust_domains(listed: &[String]) -> Result<Vec<TrustDomain>, String> {
    listed
        .iter()
        .enumerate()
        .map(|(i, td)| TrustDomain::parse_name_or_id(td).map_err(|e| format!("[{i}]: {e}")))
        .collect()
}

// === ClusterSPIFFEID YAML ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ClusterSpiffeId {
    #[allow(dead_code)]
    api_version: String,
    kind: String,
    metadata: Metadata,
    spec: ClusterSpiffeIdSpec,
}

#[derive(Deserialize)]
struct Metadata {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ClusterSpiffeIdSpec {
    #[serde(rename = "spiffeIDTemplate")]
    spiffe_id_template: Option<String>,
    #[serde(default)]
    pod_selector: Option<LabelSelector>,
    #[serde(default)]
    namespace_selector: Option<LabelSelector>,
    #[serde(default)]
    workload_selector_templates: Vec<String>,
    #[serde(default)]
    dns_name_templates: Vec<String>,
    ttl: Option<String>,
    jwt_ttl: Option<String>,
    #[serde(default)]
    federates_with: Vec<String>,
    #[serde(default)]
    hint: String,
    /// meshward's: selectors the node must have (any attestor's).
    #[serde(default)]
    node_selectors: Vec<String>,
    /// Which controller instance owns the object; one issuer serves all.
    #[allow(dead_code)]
    class_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LabelSelector {
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
    #[serde(default)]
    match_expressions: Vec<serde_yaml::Value>,
}

/// Templates from `ClusterSPIFFEID` documents (multi-document YAML; other kinds are errors).
pub fn from_cluster_spiffe_id_yaml(text: &str) -> Result<Vec<IdentityTemplate>, String> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value =
            serde_yaml::Value::deserialize(doc).map_err(|e| format!("document {}: {e}", i + 1))?;
        if value.is_null() {
            continue;
        }
        let c: ClusterSpiffeId = serde_path_to_error::deserialize(value)
            .map_err(|e| format!("document {}: {}: {}", i + 1, e.path(), e.inner()))?;
        if c.kind != "ClusterSPIFFEID" {
            return Err(format!(
                "document {}: kind {} is not ClusterSPIFFEID",
                i + 1,
                c.kind
            ));
        }
        let selector = |s: Option<LabelSelector>,
                        field: &str|
         -> Result<BTreeMap<String, String>, String> {
            match s {
                Some(s) if !s.match_expressions.is_empty() => Err(format!(
                    "document {}: spec.{field}.matchExpressions is not supported; use matchLabels",
                    i + 1
                )),
                Some(s) => Ok(s.match_labels),
                None => Ok(BTreeMap::new()),
            }
        };
        let ttl = |v: Option<String>, field: &str| -> Result<u32, String> {
            v.map_or(Ok(0), |t| {
                humantime::parse_duration(&t)
                    .map(|d: Duration| d.as_secs() as u32)
                    .map_err(|e| format!("document {}: spec.{field}: {t:?}: {e}", i + 1))
            })
        };
        let template = IdentityTemplate {
            name: c.metadata.name,
            spiffe_id_template: c
                .spec
                .spiffe_id_template
                .ok_or_else(|| format!("document {}: spec.spiffeIDTemplate is required", i + 1))?,
            pod_selector: selector(c.spec.pod_selector, "podSelector")?,
            namespace_selector: selector(c.spec.namespace_selector, "namespaceSelector")?,
            workload_selector_templates: c.spec.workload_selector_templates,
            dns_name_templates: c.spec.dns_name_templates,
            x509_svid_ttl: ttl(c.spec.ttl, "ttl")?,
            jwt_svid_ttl: ttl(c.spec.jwt_ttl, "jwtTtl")?,
            federates_with: trust_domains(&c.spec.federates_with)
                .map_err(|e| format!("document {}: spec.federatesWith{e}", i + 1))?,
            hint: c.spec.hint,
            node_selectors: selectors(&c.spec.node_selectors)
                .map_err(|e| format!("document {}: spec.nodeSelectors{e}", i + 1))?,
        };
        out.push(template);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
