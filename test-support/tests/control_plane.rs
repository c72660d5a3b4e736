//! The real control plane (etcd + kube-apiserver from `scripts/peers.sh`): it
//! starts, serves meshward's CRDs, and what kubectl applies is what meshward's
//! Kubernetes client reads.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kube::api::{Api, DynamicObject};
use kube::discovery::ApiResource;
use meshward_kubernetes::ApiEndpoint;
use meshward_test_support::control_plane;

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
    // validation): a misplaced field is refused
    let refused = plane
        .apply(
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

const K8S: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docker/k8s");

fn yaml_files(dir: &str) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {dir}");
    files
}

#[test]
fn the_shipped_manifests_and_fixtures_pass_the_real_servers_checks() {
    let Some(plane) =
        control_plane::shared("the_shipped_manifests_and_fixtures_pass_the_real_servers_checks")
    else {
        return;
    };
    // a dry run does not create the namespace the objects go to
    plane
        .apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: meshward-system}\n")
        .unwrap();
    for kustomization in ["base", "overlays/postgres"] {
        let dir = format!("{K8S}/{kustomization}");
        plane
            .kubectl(&[
                "apply",
                "--server-side",
                "--dry-run=server",
                "--field-manager=meshward-test",
                "-k",
                &dir,
            ])
            .unwrap_or_else(|e| panic!("{kustomization}: {e}"));
    }
    // the fixtures' namespaces, as a dry run does not create them either
    let fixtures = [
        yaml_files(&format!("{K8S}/tests/valid")),
        yaml_files(&format!("{K8S}/tests/invalid")),
    ]
    .concat();
    let mut namespaces: Vec<String> = fixtures
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            text.lines()
                .filter_map(|l| l.trim().strip_prefix("namespace: ").map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .collect();
    namespaces.sort();
    namespaces.dedup();
    for namespace in namespaces {
        plane
            .apply(&format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {namespace}}}\n"
            ))
            .unwrap();
    }
    for file in yaml_files(&format!("{K8S}/tests/valid")) {
        let file = file.display().to_string();
        plane
            .kubectl(&["apply", "--server-side", "--dry-run=server", "-f", &file])
            .unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    for file in yaml_files(&format!("{K8S}/tests/invalid")) {
        let name = file.display().to_string();
        let refused = plane.kubectl(&["apply", "--server-side", "--dry-run=server", "-f", &name]);
        let Err(e) = refused else {
            panic!("{name}: the server accepted it");
        };
        // refused by the server (its schema), not by kubectl reading the file
        let e = e.to_string();
        assert!(
            e.contains("Error from server") || e.contains("is invalid"),
            "{name}: {e}"
        );
    }
}
