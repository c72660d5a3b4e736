//! The real control plane (etcd + kube-apiserver from `scripts/peers.sh`): it
//! starts, serves meshward's CRDs, and what kubectl applies is what meshward's
//! Kubernetes client reads.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kube::api::{Api, DynamicObject};
use kube::discovery::ApiResource;
use meshward_kubernetes::ApiEndpoint;
use meshward_test_support::control_plane;
use meshward_test_support::control_plane::label;

fn authorization_policies() -> ApiResource {
    ApiResource {
        group: "security.istio.io".into(),
        version: "v1".into(),
        api_version: "security.istio.io/v1".into(),
        kind: "AuthorizationPolicy".into(),
        plural: "authorizationpolicies".into(),
    }
}

fn client(plane: &control_plane::ControlPlane, token_file: &std::path::Path) -> kube::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    meshward_kubernetes::client(&ApiEndpoint {
        api_server: Some(plane.url().to_owned()),
        api_ca_path: Some(plane.ca_file().to_owned()),
        api_token_path: Some(token_file.to_owned()),
        ..ApiEndpoint::default()
    })
    .expect("a client for the control plane")
}

#[test]
fn the_crds_are_established() {
    let Some(plane) = control_plane::shared("the_crds_are_established") else {
        return;
    };
    for crd in [
        "authorizationpolicies.security.istio.io",
        "requestauthentications.security.istio.io",
        "clusterspiffeids.spire.spiffe.io",
        "clusterfederatedtrustdomains.spire.spiffe.io",
    ] {
        let established = plane
            .kubectl(&[
                "get",
                "crd",
                crd,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
            ])
            .unwrap();
        assert_eq!(established, "True", "{crd}");
    }
    // the server checks objects against the CRD's schema (kubectl's strict field
    // validation): a misplaced field is refused, as a user's `kubectl apply` sees it
    let refused = plane
        .kubectl_stdin(
            &["apply", "-f", "-"],
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: typo, namespace: default}\nspec:\n  action: ALLOW\n  rule: []\n",
        )
        .unwrap_err()
        .to_string();
    assert!(refused.contains("unknown field \"spec.rule\""), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_applied_with_kubectl_is_read_by_meshwards_client() {
    let Some(plane) =
        control_plane::shared("a_policy_applied_with_kubectl_is_read_by_meshwards_client")
    else {
        return;
    };
    plane
        .apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n")
        .unwrap();
    plane
        .apply(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-frontend, namespace: shop}\nspec:\n  selector: {matchLabels: {app: cart}}\n  action: ALLOW\n  rules:\n  - from:\n    - source: {principals: [\"cluster.local/ns/shop/sa/frontend\"]}\n    to:\n    - operation: {methods: [GET], paths: [\"/cart/*\"]}\n",
        )
        .unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(
        client(plane, plane.admin_token_file()),
        "shop",
        &authorization_policies(),
    );
    let policy = api.get("allow-frontend").await.unwrap();
    assert_eq!(
        policy.data["spec"]["rules"][0]["from"][0]["source"]["principals"][0],
        "cluster.local/ns/shop/sa/frontend"
    );
    assert_eq!(policy.data["spec"]["action"], "ALLOW");
    let listed = api.list(&Default::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_refuses_a_service_account_without_a_role() {
    let Some(plane) = control_plane::shared("rbac_refuses_a_service_account_without_a_role") else {
        return;
    };
    let token = plane
        .service_account_token("rbac-test", "nobody", None, Duration::from_secs(600))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token).unwrap();
    let client = client(plane, &token_file);
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "rbac-test");
    match secrets.list(&Default::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("expected 403 Forbidden, got {other:?}"),
    }
    // granted a Role, the same token may list them
    plane
        .apply(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: read-secrets, namespace: rbac-test}\nrules:\n- {apiGroups: [\"\"], resources: [secrets], verbs: [list]}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: nobody-reads-secrets, namespace: rbac-test}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: read-secrets}\nsubjects:\n- {kind: ServiceAccount, name: nobody, namespace: rbac-test}\n",
        )
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match secrets.list(&Default::default()).await {
            Ok(_) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the RoleBinding did not take effect: {e}"),
        }
    }
}

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// The `.yaml` files of a directory of the repository, sorted.
fn yaml_files(dir: &str) -> Vec<std::path::PathBuf> {
    let dir = format!("{REPO}/{dir}");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML files in {dir}");
    files
}

fn objects(yaml: &str) -> Vec<serde_json::Value> {
    control_plane::objects(yaml).unwrap()
}

/// Creates what the server looks up when it admits `objects` and a dry run does
/// not create: their namespaces (an object in a missing namespace is refused), each
/// with its `default` ServiceAccount (made by the controller manager, which does
/// not run here), and the ServiceAccounts among `objects` (a pod naming one is
/// refused until it exists).
fn prerequisites_exist(plane: &control_plane::ControlPlane, objects: &[serde_json::Value]) {
    let mut namespaces: Vec<&str> = objects
        .iter()
        .filter_map(|o| o["metadata"]["namespace"].as_str())
        .collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    let mut yaml = String::new();
    for ns in namespaces {
        yaml += &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: default, namespace: {ns}}}\n---\n"
        );
    }
    for account in objects.iter().filter(|o| o["kind"] == "ServiceAccount") {
        yaml += &format!("{}\n---\n", serde_json::to_string(account).unwrap());
    }
    if !yaml.is_empty() {
        plane.apply(&yaml).unwrap();
    }
}

/// The base, every overlay (each directory in docker/k8s/overlays) and the
/// examples' workloads, rendered by kubectl's kustomize, pass the real server's
/// checks as a server-side apply (`--dry-run=server`: admission, schemas, strict
/// field validation), every object of them.
#[test]
fn the_base_every_overlay_and_the_examples_pass_a_server_side_dry_run() {
    let Some(plane) =
        control_plane::shared("the_base_every_overlay_and_the_examples_pass_a_server_side_dry_run")
    else {
        return;
    };
    let mut kustomizations = vec!["docker/k8s/base".to_owned()];
    let mut overlays: Vec<String> = std::fs::read_dir(format!("{REPO}/docker/k8s/overlays"))
        .unwrap()
        .map(|e| {
            format!(
                "docker/k8s/overlays/{}",
                e.unwrap().file_name().to_string_lossy()
            )
        })
        .collect();
    overlays.sort();
    assert!(!overlays.is_empty(), "no overlays in docker/k8s/overlays");
    kustomizations.extend(overlays);
    kustomizations.push("docker/examples/k8s".to_owned());
    for kustomization in kustomizations {
        let rendered = plane
            .kubectl(&["kustomize", &format!("{REPO}/{kustomization}")])
            .unwrap_or_else(|e| panic!("{kustomization}: {e}"));
        let objects = objects(&rendered);
        if kustomization.starts_with("docker/k8s/") {
            // meshward's own objects all go to its namespace, an overlay's too
            let cluster_scoped = [
                "Namespace",
                "CustomResourceDefinition",
                "ClusterRole",
                "ClusterRoleBinding",
            ];
            for object in &objects {
                if !cluster_scoped.contains(&object["kind"].as_str().unwrap_or_default()) {
                    assert_eq!(
                        object["metadata"]["namespace"],
                        "meshward-system",
                        "{kustomization}: {}",
                        label(object)
                    );
                }
            }
        }
        prerequisites_exist(plane, &objects);
        let applied = plane
            .kubectl_stdin(
                &[
                    "apply",
                    "--server-side",
                    "--dry-run=server",
                    "--field-manager=meshward-test",
                    "-f",
                    "-",
                ],
                &rendered,
            )
            .unwrap_or_else(|e| panic!("{kustomization}: {e}"));
        // one line per object: "<kind>/<name> serverside-applied (server dry run)"
        let accepted = applied
            .lines()
            .filter(|l| l.ends_with("serverside-applied (server dry run)"))
            .count();
        assert_eq!(accepted, objects.len(), "{kustomization}:\n{applied}");
    }
}

/// Each example policy (docker/examples/policies) and each valid custom resource
/// fixture (docker/k8s/tests/valid) is applied through the real server, and the
/// server keeps every field as written: read back, each object's spec is the file's
/// (nothing pruned by the CRD's structural schema, nothing defaulted).
#[test]
fn each_example_policy_and_valid_fixture_is_applied_and_kept_as_written() {
    let Some(plane) = control_plane::shared(
        "each_example_policy_and_valid_fixture_is_applied_and_kept_as_written",
    ) else {
        return;
    };
    let files = [
        yaml_files("docker/examples/policies"),
        yaml_files("docker/k8s/tests/valid"),
    ]
    .concat();
    for file in files {
        let name = file.display().to_string();
        let written = objects(&std::fs::read_to_string(&file).unwrap());
        assert!(!written.is_empty(), "{name}: no objects");
        prerequisites_exist(plane, &written);
        plane
            .kubectl(&[
                "apply",
                "--server-side",
                "--field-manager=meshward-test",
                "-f",
                &name,
            ])
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let stored: serde_json::Value =
            serde_json::from_str(&plane.kubectl(&["get", "-f", &name, "-o", "json"]).unwrap())
                .unwrap();
        let stored = match stored["kind"].as_str() {
            Some("List") => stored["items"].as_array().unwrap().clone(),
            _ => vec![stored],
        };
        assert_eq!(stored.len(), written.len(), "{name}");
        for (written, stored) in written.iter().zip(&stored) {
            assert_eq!(label(written), label(stored), "{name}");
            assert_eq!(
                written["spec"],
                stored["spec"],
                "{name}: {} as stored",
                label(written)
            );
        }
    }
}

/// Each invalid custom resource (docker/k8s/tests/invalid) is refused by the
/// server, for the reason its first line states: `# expect: TEXT`, a part of the
/// server's message.
#[test]
fn each_invalid_fixture_is_refused_by_the_server_for_its_stated_reason() {
    let Some(plane) = control_plane::shared(
        "each_invalid_fixture_is_refused_by_the_server_for_its_stated_reason",
    ) else {
        return;
    };
    let mut wrong = Vec::new();
    for file in yaml_files("docker/k8s/tests/invalid") {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(&file).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect:"))
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| panic!("{name}: its first line must be `# expect: TEXT`"));
        let written = objects(&text);
        assert_eq!(written.len(), 1, "{name}: one object per invalid fixture");
        prerequisites_exist(plane, &written);
        let refused = plane.kubectl(&[
            "apply",
            "--server-side",
            "--field-manager=meshward-test",
            "-f",
            &name,
        ]);
        let Err(e) = refused else {
            wrong.push(format!(
                "{name}: the server accepted {}",
                label(&written[0])
            ));
            continue;
        };
        // refused by the server (its schema: `Error from server (BadRequest)`, or
        // `The <kind> "<name>" is invalid`), not by kubectl reading the file
        let e = e.to_string();
        let by_server = e.contains("Error from server") || e.contains("is invalid:");
        if by_server && e.contains(expect) {
            eprintln!("{name}: refused as expected ({expect})");
        } else {
            wrong.push(format!("{name}: refused, but not for {expect:?}: {e}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Tests of one binary share one API server and apply the same objects at once
/// (a namespace most of all): each apply of a new object must succeed, as one
/// `kubectl apply` alone would.
#[test]
fn concurrent_applies_of_one_new_object_all_succeed() {
    let Some(plane) = control_plane::shared("concurrent_applies_of_one_new_object_all_succeed")
    else {
        return;
    };
    for round in 0..5 {
        let yaml = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: race-{round}}}\n");
        std::thread::scope(|scope| {
            let applies: Vec<_> = (0..6).map(|_| scope.spawn(|| plane.apply(&yaml))).collect();
            for apply in applies {
                apply.join().unwrap().unwrap();
            }
        });
    }
}
