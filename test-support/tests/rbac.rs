//! The RBAC meshward ships (`docker/k8s/base`, and the Helm chart rendering the
//! same objects) against the real control plane: each component's roles grant
//! exactly what its code does with the API, no more and no less. [`USES`] is that
//! list, each line naming the code that needs it; the rendered rules must equal
//! it, the real server (asked with each component's own token) must allow each
//! use and refuse everything else, and a few refused requests are made for real.
//! That everything the components do works under these roles is shown by the
//! tests that run them as their own ServiceAccount (`cli/tests/agent/`,
//! `cli/tests/issuer/` and `integration/tests/` `real_kubernetes.rs`).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use meshward_kubernetes::ApiEndpoint;
use meshward_test_support::control_plane::{self, COMPONENTS_NAMESPACE, ControlPlane, label};
use serde_json::Value;

const NODE: &str = "meshward-node";
const ISSUER: &str = "meshward-issuer";

/// One thing a component does with the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Use {
    /// Its ServiceAccount (in meshward-system).
    component: &'static str,
    /// Where: `None` in every namespace (or a cluster-scoped kind).
    namespace: Option<&'static str>,
    group: &'static str,
    resource: &'static str,
    /// Which object: `None` for any.
    name: Option<&'static str>,
    verb: &'static str,
}

const fn cluster(
    component: &'static str,
    group: &'static str,
    resource: &'static str,
    verb: &'static str,
) -> Use {
    Use {
        component,
        namespace: None,
        group,
        resource,
        name: None,
        verb,
    }
}

/// Everything meshward's code does with the Kubernetes API. Following a kind
/// (`meshward_kubernetes::watched::follow`, kube's watcher) lists, then watches
/// (and lists again when a watch fails): `list` and `watch`, never `get`.
const USES: &[Use] = &[
    // the node daemon's agent: the pods of its node (`proxy/src/agent/kube_source.rs`,
    // a watch of every namespace with the field selector spec.nodeName=<node>: RBAC
    // cannot narrow a grant to a field selector)
    cluster(NODE, "", "pods", "list"),
    cluster(NODE, "", "pods", "watch"),
    // the node daemon's data path: Services and their EndpointSlices, for cluster
    // IPs (`proxy/src/datapath/services.rs`, `outbound.kubernetes`)
    cluster(NODE, "", "services", "list"),
    cluster(NODE, "", "services", "watch"),
    cluster(NODE, "discovery.k8s.io", "endpointslices", "list"),
    cluster(NODE, "discovery.k8s.io", "endpointslices", "watch"),
    // the node daemon's policies (`proxy/src/datapath/policy_objects.rs`,
    // `authorization.kubernetes`)
    cluster(NODE, "security.istio.io", "authorizationpolicies", "list"),
    cluster(NODE, "security.istio.io", "authorizationpolicies", "watch"),
    cluster(NODE, "security.istio.io", "requestauthentications", "list"),
    cluster(NODE, "security.istio.io", "requestauthentications", "watch"),
    // k8s_psat attestation (`issuer/src/attestor/k8s_psat.rs`): review the node
    // daemon's token (`review`), then get its pod and that pod's node by name
    // (`agent_node`); the pod's namespace is the allow list's, any namespace
    cluster(ISSUER, "authentication.k8s.io", "tokenreviews", "create"),
    cluster(ISSUER, "", "pods", "get"),
    cluster(ISSUER, "", "nodes", "get"),
    // ClusterSPIFFEIDs and ClusterFederatedTrustDomains mirrored into the datastore
    // (`issuer/src/server/spire_objects.rs`)
    cluster(ISSUER, "spire.spiffe.io", "clusterspiffeids", "list"),
    cluster(ISSUER, "spire.spiffe.io", "clusterspiffeids", "watch"),
    cluster(
        ISSUER,
        "spire.spiffe.io",
        "clusterfederatedtrustdomains",
        "list",
    ),
    cluster(
        ISSUER,
        "spire.spiffe.io",
        "clusterfederatedtrustdomains",
        "watch",
    ),
    // the trust bundle ConfigMap (`issuer/src/server/bundle_configmap.rs`):
    // server-side apply, a `patch` of that one object, which the server authorizes
    // as a `create` of it too when it does not exist yet
    Use {
        component: ISSUER,
        namespace: Some(COMPONENTS_NAMESPACE),
        group: "",
        resource: "configmaps",
        name: Some("meshward-bundle"),
        verb: "patch",
    },
    Use {
        component: ISSUER,
        namespace: Some(COMPONENTS_NAMESPACE),
        group: "",
        resource: "configmaps",
        name: Some("meshward-bundle"),
        verb: "create",
    },
];

/// One grant: (component, namespace, group, resource, name, verb) as in [`Use`].
type Grant = (
    String,
    Option<String>,
    String,
    String,
    Option<String>,
    String,
);

/// What the rendered RBAC objects grant each ServiceAccount, one [`Use`]-shaped
/// line per (namespace, group, resource, name, verb); a wildcard, a non-resource
/// URL or a binding to an unknown role fails the test.
fn grants(objects: &[Value], what: &str) -> BTreeSet<Grant> {
    let find = |kind: &str, name: &str, namespace: Option<&str>| {
        objects.iter().find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"] == name
                && o["metadata"]["namespace"].as_str() == namespace
        })
    };
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    let mut out = BTreeSet::new();
    for binding in objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRoleBinding" || o["kind"] == "RoleBinding")
    {
        let namespace = binding["metadata"]["namespace"].as_str();
        let role_ref = &binding["roleRef"];
        let role_kind = role_ref["kind"].as_str().unwrap();
        let role_namespace = if role_kind == "Role" { namespace } else { None };
        let role = find(
            role_kind,
            role_ref["name"].as_str().unwrap(),
            role_namespace,
        )
        .unwrap_or_else(|| panic!("{what}: {} binds a role not rendered", label(binding)));
        for subject in binding["subjects"].as_array().unwrap() {
            assert_eq!(
                subject["kind"],
                "ServiceAccount",
                "{what}: {}",
                label(binding)
            );
            assert_eq!(
                subject["namespace"],
                COMPONENTS_NAMESPACE,
                "{what}: {}",
                label(binding)
            );
            let component = subject["name"].as_str().unwrap().to_owned();
            for rule in role["rules"].as_array().unwrap() {
                assert!(
                    rule.get("nonResourceURLs").is_none(),
                    "{what}: {}",
                    label(role)
                );
                let names = strings(&rule["resourceNames"]);
                let names: Vec<Option<String>> = if names.is_empty() {
                    vec![None]
                } else {
                    names.into_iter().map(Some).collect()
                };
                for group in strings(&rule["apiGroups"]) {
                    for resource in strings(&rule["resources"]) {
                        for verb in strings(&rule["verbs"]) {
                            for name in &names {
                                for field in [&group, &resource, &verb] {
                                    assert_ne!(field, "*", "{what}: a wildcard in {}", label(role));
                                }
                                out.insert((
                                    component.clone(),
                                    namespace.map(str::to_owned),
                                    group.clone(),
                                    resource.clone(),
                                    name.clone(),
                                    verb.clone(),
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

fn uses() -> BTreeSet<Grant> {
    USES.iter()
        .map(|u| {
            (
                u.component.to_owned(),
                u.namespace.map(str::to_owned),
                u.group.to_owned(),
                u.resource.to_owned(),
                u.name.map(str::to_owned),
                u.verb.to_owned(),
            )
        })
        .collect()
}

fn differences(granted: &BTreeSet<Grant>, used: &BTreeSet<Grant>) -> String {
    let lines = |set: Vec<&Grant>| -> String {
        set.iter()
            .map(|(component, namespace, group, resource, name, verb)| {
                format!(
                    "\n  {component}: {verb} {group}/{resource}{} in {}",
                    name.as_ref().map(|n| format!("/{n}")).unwrap_or_default(),
                    namespace.as_deref().unwrap_or("every namespace")
                )
            })
            .collect()
    };
    format!(
        "\ngranted but not used by the code:{}\nused by the code but not granted:{}",
        lines(granted.difference(used).collect()),
        lines(used.difference(granted).collect())
    )
}

#[test]
fn the_shipped_roles_grant_exactly_what_the_code_uses() {
    let test = "the_shipped_roles_grant_exactly_what_the_code_uses";
    let Some(plane) = control_plane::shared(test) else {
        return;
    };
    let used = uses();
    let base = plane.shipped_rbac().unwrap();
    let granted = grants(&base, "docker/k8s/base");
    assert_eq!(
        granted,
        used,
        "docker/k8s/base: {}",
        differences(&granted, &used)
    );

    // the chart: its default values render the base (cli/tests/helm.rs compares
    // them field for field); with every values file of charts/meshward/ci it may
    // grant less (join tokens need no TokenReview), never anything else
    let Some((_, helm)) = control_plane::with_helm(test) else {
        return;
    };
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/meshward");
    let mut values: Vec<Option<String>> = vec![None];
    for entry in std::fs::read_dir(Path::new(chart).join("ci")).unwrap() {
        values.push(Some(entry.unwrap().path().display().to_string()));
    }
    for file in values {
        let mut args = vec!["template", "meshward", chart, "-n", COMPONENTS_NAMESPACE];
        if let Some(f) = &file {
            args.extend(["-f", f.as_str()]);
        }
        let out = std::process::Command::new(&helm)
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "helm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rendered = control_plane::objects(&String::from_utf8(out.stdout).unwrap()).unwrap();
        let what = format!(
            "the chart with {}",
            file.as_deref().unwrap_or("its default values")
        );
        let granted = grants(&rendered, &what);
        assert!(
            granted.is_subset(&used),
            "{what}: {}",
            differences(&granted, &used)
        );
        if file.is_none() {
            assert_eq!(granted, used, "{what}: {}", differences(&granted, &used));
        }
    }
}

/// A client of the API server as `component` (its own token, from the
/// TokenRequest API after the shipped RBAC is applied; kept in `dir`).
fn client_as(plane: &ControlPlane, component: &str, dir: &Path) -> kube::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let token_file = plane.component_token_file(component, dir).unwrap();
    meshward_kubernetes::client(&ApiEndpoint {
        api_server: Some(plane.url().to_owned()),
        api_ca_path: Some(plane.ca_file().to_owned()),
        api_token_path: Some(token_file),
        ..ApiEndpoint::default()
    })
    .unwrap()
}

/// Whether the server allows the client's identity `verb` on `resource` (a
/// SelfSubjectAccessReview: the real server's RBAC decides).
async fn allowed(
    client: &kube::Client,
    namespace: Option<&str>,
    group: &str,
    resource: &str,
    name: Option<&str>,
    verb: &str,
) -> bool {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: namespace.map(str::to_owned),
                group: Some(group.to_owned()),
                resource: Some(resource.to_owned()),
                name: name.map(str::to_owned),
                verb: Some(verb.to_owned()),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let answer = reviews
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    answer.status.unwrap().allowed
}

/// Kinds to ask about: the ones meshward uses and their neighbours it must not touch.
const KINDS: &[(&str, &str)] = &[
    ("", "pods"),
    ("", "nodes"),
    ("", "namespaces"),
    ("", "services"),
    ("", "endpoints"),
    ("", "configmaps"),
    ("", "secrets"),
    ("", "serviceaccounts"),
    ("discovery.k8s.io", "endpointslices"),
    ("security.istio.io", "authorizationpolicies"),
    ("security.istio.io", "requestauthentications"),
    ("spire.spiffe.io", "clusterspiffeids"),
    ("spire.spiffe.io", "clusterfederatedtrustdomains"),
    ("authentication.k8s.io", "tokenreviews"),
    ("authorization.k8s.io", "subjectaccessreviews"),
    ("coordination.k8s.io", "leases"),
    ("apps", "daemonsets"),
    ("rbac.authorization.k8s.io", "clusterroles"),
];

const VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_component_may_do_what_it_uses_and_is_refused_the_rest() {
    let test = "each_component_may_do_what_it_uses_and_is_refused_the_rest";
    let Some(plane) = control_plane::shared(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut wrong = Vec::new();
    let mut asked = 0;
    for component in [NODE, ISSUER] {
        let client = client_as(plane, component, dir.path());
        for &(group, resource) in KINDS {
            for verb in VERBS {
                for namespace in [None, Some(COMPONENTS_NAMESPACE), Some("default")] {
                    for name in [None, Some("meshward-bundle"), Some("other")] {
                        let want = USES.iter().any(|u| {
                            u.component == component
                                && (u.group, u.resource, u.verb) == (group, resource, *verb)
                                && (u.namespace.is_none() || u.namespace == namespace)
                                && (u.name.is_none() || u.name == name)
                        });
                        let got = allowed(&client, namespace, group, resource, name, verb).await;
                        asked += 1;
                        if got != want {
                            wrong.push(format!(
                                "{component} {verb} {group}/{resource} {name:?} in {namespace:?}: {}",
                                if got { "allowed, but not used" } else { "refused, but used" }
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "of {asked} questions:\n{}",
        wrong.join("\n")
    );
    eprintln!("{asked} questions answered as USES says");

    // and refused for real, each a request with the component's own token
    let node = client_as(plane, NODE, dir.path());
    let issuer = client_as(plane, ISSUER, dir.path());
    let forbidden = |what: &str, result: Result<String, kube::Error>| match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("{what}: want 403 Forbidden, got {other:?}"),
    };
    use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
    let secrets: Api<Secret> = Api::namespaced(node.clone(), COMPONENTS_NAMESPACE);
    forbidden(
        "the node daemon reads Secrets",
        secrets
            .list(&Default::default())
            .await
            .map(|l| format!("{} secrets", l.items.len())),
    );
    let policies: Api<kube::api::DynamicObject> = Api::namespaced_with(
        node.clone(),
        "default",
        &kube::api::ApiResource {
            group: "security.istio.io".into(),
            version: "v1".into(),
            api_version: "security.istio.io/v1".into(),
            kind: "AuthorizationPolicy".into(),
            plural: "authorizationpolicies".into(),
        },
    );
    let policy: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "allow-everything", "namespace": "default"},
        "spec": {"action": "ALLOW", "rules": [{}]},
    }))
    .unwrap();
    forbidden(
        "the node daemon writes an AuthorizationPolicy",
        policies
            .create(&PostParams::default(), &policy)
            .await
            .map(|p| format!("{p:?}")),
    );
    let pods: Api<Pod> = Api::all(issuer.clone());
    forbidden(
        "the issuer lists the pods of every namespace",
        pods.list(&Default::default())
            .await
            .map(|l| format!("{} pods", l.items.len())),
    );
    let configmaps: Api<ConfigMap> = Api::namespaced(issuer.clone(), COMPONENTS_NAMESPACE);
    let other: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "meshward-node", "namespace": COMPONENTS_NAMESPACE},
        "data": {"proxy.yaml": "trust_domain: evil.example\n"},
    }))
    .unwrap();
    forbidden(
        "the issuer writes a ConfigMap other than the bundle's",
        configmaps
            .patch(
                "meshward-node",
                &kube::api::PatchParams::apply("meshward-issuer").force(),
                &kube::api::Patch::Apply(&other),
            )
            .await
            .map(|c| format!("{c:?}")),
    );
}
