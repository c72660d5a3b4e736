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
    pub federates_with: Vec<String>,
    #[serde(default)]
    pub hint: String,
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
            federates_with: t.federates_with.clone(),
            hint: t.hint.clone(),
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
        Ok(Self {
            x509_svid_ttl: ttl("x509_svid_ttl", t.x509_svid_ttl)?,
            jwt_svid_ttl: ttl("jwt_svid_ttl", t.jwt_svid_ttl)?,
            name: t.name,
            spiffe_id_template: t.spiffe_id_template,
            pod_selector: t.pod_selector.into_iter().collect(),
            namespace_selector: t.namespace_selector.into_iter().collect(),
            workload_selector_templates: t.workload_selector_templates,
            dns_name_templates: t.dns_name_templates,
            federates_with: t.federates_with,
            hint: t.hint,
        })
    }
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
            federates_with: c.spec.federates_with,
            hint: c.spec.hint,
        };
        out.push(template);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td(name: &str) -> meshward_spiffe::TrustDomain {
        meshward_spiffe::TrustDomain::parse(name).unwrap()
    }

    fn pod() -> PodAttributes {
        PodAttributes {
            namespace: "default".into(),
            name: "curl-7d9".into(),
            uid: "uid-1".into(),
            service_account: "curl-spire".into(),
            node_name: "node-1".into(),
            labels: [("app".to_owned(), "curl".to_owned())].into(),
            namespace_labels: BTreeMap::new(),
        }
    }

    fn template(id: &str) -> IdentityTemplate {
        IdentityTemplate {
            name: "t".into(),
            spiffe_id_template: id.into(),
            pod_selector: BTreeMap::new(),
            namespace_selector: BTreeMap::new(),
            workload_selector_templates: vec!["k8s:ns:{{ .PodMeta.Namespace }}".into()],
            dns_name_templates: vec!["{{ .PodMeta.Name }}.{{ .PodMeta.Namespace }}.svc".into()],
            x509_svid_ttl: 0,
            jwt_svid_ttl: 0,
            federates_with: vec![],
            hint: String::new(),
        }
    }

    #[test]
    fn both_syntaxes_render_the_same_id() {
        let long = template(
            "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}",
        );
        let short = template("spiffe://{{trust-domain}}/ns/{{namespace}}/sa/{{serviceaccount}}");
        let a = long.render(&td("math.example.com"), "eks", &pod()).unwrap();
        let b = short
            .render(&td("math.example.com"), "eks", &pod())
            .unwrap();
        assert_eq!(
            a.spiffe_id.as_str(),
            "spiffe://math.example.com/ns/default/sa/curl-spire"
        );
        assert_eq!(a, b);
        assert_eq!(
            a.selectors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["k8s:pod-uid:uid-1", "k8s:ns:default"]
        );
        assert_eq!(a.dns_names, ["curl-7d9.default.svc"]);
    }

    #[test]
    fn labels_and_errors() {
        let t = template("spiffe://td/app/{{ index .PodMeta.Labels \"app\" }}/{{label:app}}");
        assert_eq!(
            t.render(&td("td"), "c", &pod()).unwrap().spiffe_id.as_str(),
            "spiffe://td/app/curl/curl"
        );
        let missing = template("spiffe://td/{{ label:tier }}");
        assert!(
            missing
                .render(&td("td"), "c", &pod())
                .unwrap_err()
                .contains("no label \"tier\"")
        );
        assert!(
            template("spiffe://td/{{ .Nope }}")
                .render(&td("td"), "c", &pod())
                .unwrap_err()
                .contains("unknown template expression")
        );
        assert!(
            template("spiffe://other/x")
                .render(&td("td"), "c", &pod())
                .unwrap_err()
                .contains("not in trust domain")
        );
        assert!(
            template("spiffe://td/{{ namespace")
                .validate(&td("td"))
                .is_err()
        );
    }

    #[test]
    fn selection_by_pod_and_namespace_labels() {
        let mut t = template("spiffe://td/x");
        assert!(t.selects(&pod()));
        t.pod_selector.insert("app".into(), "curl".into());
        t.namespace_selector
            .insert(NAMESPACE_NAME_LABEL.into(), "default".into());
        assert!(t.selects(&pod()));
        t.namespace_selector
            .insert(NAMESPACE_NAME_LABEL.into(), "other".into());
        assert!(!t.selects(&pod()));
    }

    #[test]
    fn cluster_spiffe_id_yaml() {
        let yaml = "apiVersion: spire.spiffe.io/v1alpha1\nkind: ClusterSPIFFEID\nmetadata:\n  name: default\nspec:\n  spiffeIDTemplate: \"spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}\"\n  podSelector:\n    matchLabels:\n      spiffe: enabled\n  ttl: 30m\n";
        let t = from_cluster_spiffe_id_yaml(yaml).unwrap();
        assert_eq!(t[0].name, "default");
        assert_eq!(t[0].x509_svid_ttl, 1800);
        assert_eq!(t[0].pod_selector["spiffe"], "enabled");
        let bad = yaml.replace(
            "matchLabels:\n      spiffe: enabled",
            "matchExpressions: [{key: a, operator: Exists}]",
        );
        assert!(
            from_cluster_spiffe_id_yaml(&bad)
                .unwrap_err()
                .contains("matchExpressions is not supported")
        );
        let typo = yaml.replace("podSelector", "podSelectr");
        assert!(
            from_cluster_spiffe_id_yaml(&typo)
                .unwrap_err()
                .contains("podSelectr")
        );
    }

    /// The CRD in docker/k8s/base/crds.yaml admits the every-field fixture and refuses
    /// the invalid ones (docker/check-custom-resources.py); the issuer agrees.
    #[test]
    fn the_crd_fixtures_read_as_the_crd_admits_them() {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/k8s/tests");
        let read = |name: &str| std::fs::read_to_string(fixtures.join(name)).unwrap();
        let all =
            from_cluster_spiffe_id_yaml(&read("valid/cluster-spiffe-id-every-field.yaml")).unwrap();
        let t = &all[0];
        t.validate(&td("math.example.com")).unwrap();
        assert_eq!((t.x509_svid_ttl, t.jwt_svid_ttl), (1800, 300));
        assert_eq!(t.namespace_selector["mesh"], "on");
        assert_eq!(
            (
                t.federates_with.len(),
                t.workload_selector_templates.len(),
                t.dns_name_templates.len()
            ),
            (1, 1, 1)
        );
        assert_eq!(t.hint, "payments");
        for invalid in ["csid-without-template.yaml", "csid-misspelt-selector.yaml"] {
            let text = read(&format!("invalid/{invalid}"));
            assert!(from_cluster_spiffe_id_yaml(&text).is_err(), "{invalid}");
        }
    }
}
