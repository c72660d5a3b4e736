//! The Helm chart (`charts/meshward`), with helm from `scripts/peers.sh`: it lints
//! with each set of values it is tested with (`charts/meshward/ci/`); with the
//! default values it renders the kustomize base's objects and with
//! `ci/postgres-values.yaml` the PostgreSQL overlay's, field for field (beside
//! Helm's labels); its other values render what they promise; every issuer.yaml
//! and proxy.yaml it renders is read by the issuer's and the node daemon's own
//! configuration loaders (hence a test of this crate, which links both); and it
//! installs, upgrades and uninstalls against the real API server.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use meshward_test_support::control_plane::{self, Binaries, label};
use serde_json::Value;

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/meshward");
const NAMESPACE: &str = "meshward-system";

/// Labels the chart adds to every object's metadata (never to selectors or pod
/// templates, which are the base's).
const HELM_LABELS: [&str; 5] = [
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/version",
];

/// Runs a program; its stdout, or its stderr as the error.
fn run(program: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program).args(args).output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{} {}: {}\n{}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `helm template meshward charts/meshward -n meshward-system --include-crds` with
/// `args` (values) added.
fn template(helm: &Path, args: &[&str]) -> Result<Vec<Value>, String> {
    let mut all = vec![
        "template",
        "meshward",
        CHART,
        "--namespace",
        NAMESPACE,
        "--include-crds",
    ];
    all.extend(args);
    Ok(control_plane::objects(&run(helm, &all)?).unwrap())
}

fn ci_values(name: &str) -> String {
    format!("{CHART}/ci/{name}")
}

fn kustomize(binaries: &Binaries, dir: &str) -> Vec<Value> {
    let rendered = run(&binaries.kubectl, &["kustomize", &format!("{REPO}/{dir}")]).unwrap();
    control_plane::objects(&rendered).unwrap()
}

/// The objects by [`label`], as compared: Helm's labels taken out of metadata,
/// and each ConfigMap's files (issuer.yaml, proxy.yaml) read as YAML, so that
/// comments and key order do not count and every value does.
fn comparable(objects: &[Value]) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for object in objects {
        let mut object = object.clone();
        if let Some(labels) = object["metadata"]
            .get_mut("labels")
            .and_then(Value::as_object_mut)
        {
            for helm_label in HELM_LABELS {
                labels.remove(helm_label);
            }
            if labels.is_empty() {
                object["metadata"].as_object_mut().unwrap().remove("labels");
            }
        }
        if object["kind"] == "ConfigMap" {
            if let Some(data) = object.get_mut("data").and_then(Value::as_object_mut) {
                for value in data.values_mut() {
                    let text = value.as_str().unwrap().to_owned();
                    *value = control_plane::objects(&text)
                        .unwrap()
                        .pop()
                        .unwrap_or(Value::Null);
                }
            }
        }
        let previous = out.insert(label(&object), object);
        assert!(
            previous.is_none(),
            "twice: {}",
            label(previous.as_ref().unwrap())
        );
    }
    out
}

/// The chart's objects are the kustomization's: the same kinds and names, every
/// field equal. The kustomization's Namespace is left out: a Helm release lives in
/// a namespace made before it (the install guide makes it, labels included).
fn assert_same_objects(chart: &[Value], kustomization: &[Value], what: &str) {
    let chart = comparable(chart);
    let mut kustomized = comparable(kustomization);
    let namespace = kustomized
        .remove(&format!("Namespace {NAMESPACE}"))
        .unwrap_or_else(|| panic!("{what}: no Namespace {NAMESPACE}"));
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "privileged",
        "{what}"
    );
    let names = |m: &BTreeMap<String, Value>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&chart), names(&kustomized), "{what}: the objects");
    for (name, expected) in &kustomized {
        assert_eq!(
            &chart[name],
            expected,
            "{what}: {name} differs\nchart:\n{}\nkustomize:\n{}",
            serde_json::to_string_pretty(&chart[name]).unwrap(),
            serde_json::to_string_pretty(expected).unwrap()
        );
    }
}

fn find<'a>(objects: &'a [Value], wanted: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| label(o) == wanted)
        .unwrap_or_else(|| {
            panic!(
                "no {wanted} among {:?}",
                objects.iter().map(label).collect::<Vec<_>>()
            )
        })
}

/// A file of a ConfigMap among `objects`, read as YAML.
fn config_file(objects: &[Value], configmap: &str, key: &str) -> Value {
    let cm = find(objects, &format!("ConfigMap {NAMESPACE}/{configmap}"));
    control_plane::objects(cm["data"][key].as_str().unwrap())
        .unwrap()
        .pop()
        .unwrap()
}

/// issuer.yaml and proxy.yaml as rendered pass meshward's configuration loader.
fn assert_configs_load(objects: &[Value], what: &str) {
    let cm = find(objects, &format!("ConfigMap {NAMESPACE}/meshward-issuer"));
    let issuer = cm["data"]["issuer.yaml"].as_str().unwrap();
    meshward_issuer::config::IssuerConfig::from_yaml(issuer, &format!("{what}: issuer.yaml"))
        .unwrap_or_else(|e| panic!("{e}\n{issuer}"));
    let cm = find(objects, &format!("ConfigMap {NAMESPACE}/meshward-node"));
    let proxy = cm["data"]["proxy.yaml"].as_str().unwrap();
    meshward_proxy::config::ProxyConfig::from_yaml(proxy, &format!("{what}: proxy.yaml"))
        .unwrap_or_else(|e| panic!("{e}\n{proxy}"));
}

fn ci_values_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(format!("{CHART}/ci"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    files
}

#[test]
fn the_chart_lints_with_the_default_values_and_each_ci_values_file() {
    let Some((_, helm)) =
        control_plane::with_helm("the_chart_lints_with_the_default_values_and_each_ci_values_file")
    else {
        return;
    };
    run(&helm, &["lint", "--strict", CHART]).unwrap();
    for values in ci_values_files() {
        run(
            &helm,
            &["lint", "--strict", CHART, "-f", &ci_values(&values)],
        )
        .unwrap();
    }
}

#[test]
fn with_default_values_the_chart_renders_the_kustomize_base() {
    let Some((binaries, helm)) =
        control_plane::with_helm("with_default_values_the_chart_renders_the_kustomize_base")
    else {
        return;
    };
    let chart = template(&helm, &[]).unwrap();
    assert_same_objects(
        &chart,
        &kustomize(&binaries, "docker/k8s/base"),
        "default values",
    );
    assert_configs_load(&chart, "default values");
    // the chart's objects carry Helm's labels (the CRDs are crds/crds.yaml,
    // verbatim: the base's file)
    for object in chart
        .iter()
        .filter(|o| o["kind"] != "CustomResourceDefinition")
    {
        assert_eq!(
            object["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "Helm",
            "{}",
            label(object)
        );
    }
}

#[test]
fn with_postgres_values_the_chart_renders_the_postgres_overlay() {
    let Some((binaries, helm)) =
        control_plane::with_helm("with_postgres_values_the_chart_renders_the_postgres_overlay")
    else {
        return;
    };
    let values = ci_values("postgres-values.yaml");
    let chart = template(&helm, &["-f", &values]).unwrap();
    assert_same_objects(
        &chart,
        &kustomize(&binaries, "docker/k8s/overlays/postgres"),
        "ci/postgres-values.yaml",
    );
    assert_configs_load(&chart, "ci/postgres-values.yaml");
    let issuer = find(&chart, &format!("StatefulSet {NAMESPACE}/meshward-issuer"));
    assert_eq!(issuer["spec"]["replicas"], 2);
    find(
        &chart,
        &format!("PodDisruptionBudget {NAMESPACE}/meshward-issuer"),
    );

    // replicas of SQLite would each hold their own entries: refused
    let refused = template(&helm, &["--set", "issuer.replicas=2"]).unwrap_err();
    assert!(
        refused.contains("issuer.replicas > 1 needs issuer.datastore.type=postgres"),
        "{refused}"
    );
}

#[test]
fn with_aws_iid_values_the_chart_renders_the_eks_aws_iid_overlay() {
    let Some((binaries, helm)) =
        control_plane::with_helm("with_aws_iid_values_the_chart_renders_the_eks_aws_iid_overlay")
    else {
        return;
    };
    let values = ci_values("aws-iid-values.yaml");
    let chart = template(&helm, &["-f", &values]).unwrap();
    assert_same_objects(
        &chart,
        &kustomize(&binaries, "docker/k8s/overlays/eks-aws-iid"),
        "ci/aws-iid-values.yaml",
    );
    assert_configs_load(&chart, "ci/aws-iid-values.yaml");
    let issuer = config_file(&chart, "meshward-issuer", "issuer.yaml");
    assert_eq!(issuer["aws_iid"]["account_ids"][0], "123456789012");
    assert!(issuer["k8s_psat"].is_object(), "both attestors");
    let ec2 = config_file(&chart, "meshward-node-aws-iid", "proxy.yaml");
    assert!(ec2["agent"]["aws_iid"].is_object());
    assert!(ec2["agent"].get("k8s_psat").is_none());
    let proxy = find(
        &chart,
        &format!("ConfigMap {NAMESPACE}/meshward-node-aws-iid"),
    )["data"]["proxy.yaml"]
        .as_str()
        .unwrap();
    meshward_proxy::config::ProxyConfig::from_yaml(proxy, "meshward-node-aws-iid")
        .unwrap_or_else(|e| panic!("{e}\n{proxy}"));
    let operator = |daemonset: &str| {
        find(&chart, &format!("DaemonSet {NAMESPACE}/{daemonset}"))["spec"]["template"]["spec"]
            ["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchExpressions"][0]["operator"]
            .clone()
    };
    assert_eq!(operator("meshward-node"), "DoesNotExist");
    assert_eq!(operator("meshward-node-aws-iid"), "Exists");

    // every EC2 instance in the world holds a signed document: accounts are required
    let refused = template(&helm, &["--set", "attestation.awsIid.enabled=true"]).unwrap_err();
    assert!(
        refused.contains("needs attestation.awsIid.accountIDs"),
        "{refused}"
    );
}

/// values.schema.json: a misspelt key or an unknown choice is refused, never read
/// as the default (a `k8s-psat` would otherwise render join tokens).
#[test]
fn misspelt_values_and_unknown_choices_are_refused() {
    let Some((_, helm)) =
        control_plane::with_helm("misspelt_values_and_unknown_choices_are_refused")
    else {
        return;
    };
    for (set, says) in [
        (
            "trustdomain=math.example.com",
            "additional properties 'trustdomain' not allowed",
        ),
        ("attestation.type=k8s-psat", "/attestation/type"),
        ("issuer.datastore.type=postgresql", "/issuer/datastore/type"),
        (
            "federation.bundleEndpoint.profile=https",
            "/federation/bundleEndpoint/profile",
        ),
        (
            "node.meshCIDR={10.0.0.0/8}",
            "additional properties 'meshCIDR' not allowed",
        ),
    ] {
        let Err(refused) = template(&helm, &["--set", set]) else {
            panic!("--set {set}: accepted");
        };
        assert!(refused.contains(says), "{set}: {refused}");
    }
}

#[test]
fn join_token_values_mount_each_nodes_token_and_grant_no_token_review() {
    let Some((_, helm)) = control_plane::with_helm(
        "join_token_values_mount_each_nodes_token_and_grant_no_token_review",
    ) else {
        return;
    };
    let chart = template(&helm, &["-f", &ci_values("join-token-values.yaml")]).unwrap();
    assert_configs_load(&chart, "ci/join-token-values.yaml");
    let issuer = config_file(&chart, "meshward-issuer", "issuer.yaml");
    assert!(issuer.get("k8s_psat").is_none(), "{issuer}");
    let proxy = config_file(&chart, "meshward-node", "proxy.yaml");
    assert_eq!(
        proxy["agent"]["join_token_file"],
        "/var/run/secrets/meshward/join-token"
    );
    assert!(proxy["agent"].get("k8s_psat").is_none(), "{proxy}");
    // the issuer reviews no tokens and reads no pods or nodes
    let role = find(&chart, "ClusterRole meshward-issuer");
    let resources: Vec<&Value> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["resources"].as_array().unwrap())
        .collect();
    assert_eq!(
        resources,
        ["clusterspiffeids", "clusterfederatedtrustdomains"],
        "{role}"
    );
    // each daemon reads its own node's key of the Secret; no projected token
    let pod =
        &find(&chart, &format!("DaemonSet {NAMESPACE}/meshward-node"))["spec"]["template"]["spec"];
    let volumes = pod["volumes"].as_array().unwrap();
    assert!(volumes.iter().all(|v| v["name"] != "token"), "{pod}");
    let tokens = volumes.iter().find(|v| v["name"] == "join-tokens").unwrap();
    assert_eq!(tokens["secret"]["secretName"], "meshward-join-tokens");
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "join-tokens")
        .unwrap();
    assert_eq!(mount["mountPath"], "/var/run/secrets/meshward/join-token");
    assert_eq!(mount["subPathExpr"], "$(NODE_NAME)");
}

#[test]
fn federation_values_publish_the_bundle_and_configure_the_relationships() {
    let Some((_, helm)) = control_plane::with_helm(
        "federation_values_publish_the_bundle_and_configure_the_relationships",
    ) else {
        return;
    };
    let chart = template(&helm, &["-f", &ci_values("federation-values.yaml")]).unwrap();
    assert_configs_load(&chart, "ci/federation-values.yaml");
    let issuer = config_file(&chart, "meshward-issuer", "issuer.yaml");
    assert_eq!(issuer["trust_domain"], "math.example.com");
    assert_eq!(
        issuer["bundle_endpoint"],
        serde_json::json!({"listen": "0.0.0.0:8443", "refresh_hint": "5m", "profile": "https_spiffe"})
    );
    assert_eq!(
        issuer["cluster_federated_trust_domains"],
        serde_json::json!({})
    );
    let relationships = issuer["federation"]["federates_with"].as_array().unwrap();
    assert_eq!(relationships.len(), 2, "{issuer}");
    let payments = &relationships[0];
    assert_eq!(payments["trust_domain"], "payments.example.org");
    assert_eq!(
        payments["endpoint_spiffe_id"],
        "spiffe://payments.example.org/spire/server"
    );
    // the first bundle travels in the issuer's ConfigMap, mounted at /etc/meshward
    let path = payments["trust_domain_bundle_path"].as_str().unwrap();
    let file = path.strip_prefix("/etc/meshward/").unwrap();
    let cm = find(&chart, &format!("ConfigMap {NAMESPACE}/meshward-issuer"));
    assert_eq!(
        cm["data"][file].as_str().unwrap().trim(),
        r#"{"keys": [], "spiffe_sequence": 1}"#
    );
    assert_eq!(relationships[1]["bundle_endpoint_profile"], "https_web");
    // the endpoint is reachable: a Service of its own, the issuer's port open
    let service = find(
        &chart,
        &format!("Service {NAMESPACE}/meshward-issuer-bundle-endpoint"),
    );
    assert_eq!(service["spec"]["type"], "LoadBalancer");
    assert_eq!(service["spec"]["ports"][0]["port"], 8443);
    assert_eq!(
        service["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-scheme"],
        "internal"
    );
    let ports = &find(&chart, &format!("StatefulSet {NAMESPACE}/meshward-issuer"))["spec"]["template"]
        ["spec"]["containers"][0]["ports"];
    assert!(
        ports
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["containerPort"] == 8443),
        "{ports}"
    );
    // https_spiffe without the domain's first bundle cannot authenticate the endpoint
    let refused = template(
        &helm,
        &[
            "--set",
            "federation.federatesWith[0].trustDomain=b.example",
            "--set",
            "federation.federatesWith[0].bundleEndpointURL=https://b.example",
            "--set",
            "federation.federatesWith[0].bundleEndpointProfile=https_spiffe",
        ],
    )
    .unwrap_err();
    assert!(
        refused.contains("https_spiffe needs trustDomainBundle"),
        "{refused}"
    );
}

/// `kubectl ... -o jsonpath=...` on the control plane.
fn jsonpath(plane: &control_plane::ControlPlane, args: &[&str], path: &str) -> String {
    let output = format!("jsonpath={path}");
    let mut all = args.to_vec();
    all.extend(["-o", &output]);
    plane.kubectl(&all).unwrap()
}

/// helm install, upgrade (to each ci values file) and uninstall against the real
/// API server: the server accepts every object, Helm creates the CRDs (they are
/// removed from this control plane first) and they are Established. No kubelet or
/// controllers run here: the workloads stay objects.
#[test]
fn the_chart_installs_upgrades_and_uninstalls_against_the_real_api_server() {
    let test = "the_chart_installs_upgrades_and_uninstalls_against_the_real_api_server";
    let Some((_, helm)) = control_plane::with_helm(test) else {
        return;
    };
    let Some(plane) = control_plane::own(test) else {
        return;
    };
    let crds = format!("{REPO}/docker/k8s/base/crds.yaml");
    plane
        .kubectl(&["delete", "-f", &crds, "--wait=true", "--timeout=60s"])
        .unwrap();
    // the namespace as the install guide makes it: the base's Namespace object
    let binaries = plane.binaries().clone();
    let namespace = kustomize(&binaries, "docker/k8s/base")
        .into_iter()
        .find(|o| o["kind"] == "Namespace")
        .unwrap();
    plane.apply(&namespace.to_string()).unwrap();

    let kubeconfig = plane.kubeconfig().display().to_string();
    let helm_on_plane = |args: &[&str]| -> String {
        let mut all = args.to_vec();
        all.extend(["--kubeconfig", &kubeconfig, "--namespace", NAMESPACE]);
        run(&helm, &all).unwrap_or_else(|e| panic!("{e}"))
    };
    helm_on_plane(&["install", "meshward", CHART]);
    let status = helm_on_plane(&["status", "meshward", "-o", "json"]);
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["info"]["status"], "deployed", "{status}");
    // Helm created the CRDs, and the server serves them
    for crd in [
        "authorizationpolicies.security.istio.io",
        "requestauthentications.security.istio.io",
        "clusterspiffeids.spire.spiffe.io",
        "clusterfederatedtrustdomains.spire.spiffe.io",
    ] {
        plane
            .kubectl(&[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                &format!("crd/{crd}"),
            ])
            .unwrap();
    }
    // every object of the chart is there, as Helm's
    let rendered = template(&helm, &[]).unwrap();
    for object in rendered
        .iter()
        .filter(|o| o["kind"] != "CustomResourceDefinition")
    {
        let kind = object["kind"].as_str().unwrap();
        let name = object["metadata"]["name"].as_str().unwrap();
        let managed = jsonpath(
            &plane,
            &["get", kind, name, "-n", NAMESPACE],
            "{.metadata.labels.app\\.kubernetes\\.io/managed-by}",
        );
        assert_eq!(managed, "Helm", "{}", label(object));
    }
    let ds = ["get", "daemonset", "meshward-node", "-n", NAMESPACE];
    assert_eq!(
        jsonpath(&plane, &ds, "{.spec.template.spec.serviceAccountName}"),
        "meshward-node"
    );
    let sts = ["get", "statefulset", "meshward-issuer", "-n", NAMESPACE];
    assert_eq!(jsonpath(&plane, &sts, "{.spec.replicas}"), "1");

    // the PostgreSQL issuer with two replicas: the PodDisruptionBudget appears
    helm_on_plane(&[
        "upgrade",
        "meshward",
        CHART,
        "-f",
        &ci_values("postgres-values.yaml"),
    ]);
    assert_eq!(jsonpath(&plane, &sts, "{.spec.replicas}"), "2");
    assert_eq!(
        jsonpath(
            &plane,
            &sts,
            "{.spec.template.spec.containers[0].env[0].valueFrom.secretKeyRef.name}"
        ),
        "meshward-issuer-datastore"
    );
    plane
        .kubectl(&[
            "get",
            "poddisruptionbudget",
            "meshward-issuer",
            "-n",
            NAMESPACE,
        ])
        .unwrap();

    // join tokens and federation: the issuer's ClusterRole loses TokenReview, the
    // bundle endpoint gets its Service
    helm_on_plane(&[
        "upgrade",
        "meshward",
        CHART,
        "-f",
        &ci_values("join-token-values.yaml"),
        "-f",
        &ci_values("federation-values.yaml"),
    ]);
    let role = jsonpath(
        &plane,
        &["get", "clusterrole", "meshward-issuer"],
        "{.rules[*].resources}",
    );
    assert!(!role.contains("tokenreviews"), "{role}");
    plane
        .kubectl(&[
            "get",
            "poddisruptionbudget",
            "meshward-issuer",
            "-n",
            NAMESPACE,
        ])
        .unwrap_err();
    let service = [
        "get",
        "service",
        "meshward-issuer-bundle-endpoint",
        "-n",
        NAMESPACE,
    ];
    assert_eq!(jsonpath(&plane, &service, "{.spec.ports[0].port}"), "8443");
    assert_eq!(
        jsonpath(
            &plane,
            &ds,
            "{.spec.template.spec.volumes[?(@.name==\"join-tokens\")].secret.secretName}"
        ),
        "meshward-join-tokens"
    );

    // uninstalled: the chart's objects go, the CRDs (and so every policy) stay
    helm_on_plane(&["uninstall", "meshward"]);
    for object in rendered
        .iter()
        .filter(|o| o["kind"] != "CustomResourceDefinition")
    {
        let kind = object["kind"].as_str().unwrap();
        let name = object["metadata"]["name"].as_str().unwrap();
        let left = plane
            .kubectl(&[
                "get",
                kind,
                name,
                "-n",
                NAMESPACE,
                "--ignore-not-found",
                "-o",
                "name",
            ])
            .unwrap();
        assert!(
            left.trim().is_empty(),
            "{} left after uninstall",
            label(object)
        );
    }
    plane
        .kubectl(&["get", "crd", "authorizationpolicies.security.istio.io"])
        .unwrap();
}
