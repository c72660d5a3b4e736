//! The issuer following the real control plane (etcd + kube-apiserver from
//! `scripts/peers.sh`; k8s_psat: `kubernetes.rs`), authenticating as the
//! `meshward-issuer` ServiceAccount of `docker/k8s/base` under exactly the RBAC
//! shipped there: ClusterSPIFFEIDs and ClusterFederatedTrustDomains applied with
//! kubectl become its templates and federation relationships, and it keeps the
//! trust bundle in a ConfigMap.

use meshward_test_support::control_plane;

use super::federation::{PARTNER, eventually, partner_bundle, partner_issuer};
use super::*;

/// The issuer on SQLite in `dir`, reading `plane` as the `meshward-issuer`
/// ServiceAccount (its token written in `dir`): `config` makes issuer.yaml's
/// extra text from that `kubernetes:` block.
fn issuer_reading(
    plane: &control_plane::ControlPlane,
    dir: &std::path::Path,
    config: impl FnOnce(&str) -> String,
) -> Issuer {
    let token = plane.component_token_file("meshward-issuer", dir).unwrap();
    let api_yaml = plane.api_yaml_with_token(&token);
    Issuer::with_extra(meshward(), TD, dir, &sqlite_url(dir), &config(&api_yaml))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_spiffe_ids_applied_with_kubectl_become_identity_templates() {
    let Some(plane) =
        control_plane::shared("cluster_spiffe_ids_applied_with_kubectl_become_identity_templates")
    else {
        return;
    };
    plane.apply_shipped_rbac().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let object = |name: &str, template: &str| {
        format!(
            "apiVersion: spire.spiffe.io/v1alpha1\nkind: ClusterSPIFFEID\nmetadata: {{name: {name}}}\nspec:\n  spiffeIDTemplate: \"{template}\"\n  podSelector: {{matchLabels: {{spiffe: enabled}}}}\n  ttl: 20m\n"
        )
    };
    let by_sa = "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}";
    plane.apply(&object("default", by_sa)).unwrap();
    let mut issuer = issuer_reading(plane, dir.path(), |api| {
        format!("cluster_spiffe_ids: {api}\n")
    });
    wait_for_templates(&issuer, &["k8s/default"]);
    let listed = issuer.cli_json(&["template", "list"]);
    assert_eq!(listed["templates"][0]["x509_svid_ttl"], 1200);
    // an operator's own template beside them is never touched
    let own = dir.path().join("own.yaml");
    std::fs::write(&own, format!("apiVersion: spire.spiffe.io/v1alpha1\nkind: ClusterSPIFFEID\nmetadata:\n  name: own\nspec:\n  spiffeIDTemplate: \"{by_sa}\"\n")).unwrap();
    let (code, _, stderr) = issuer.cli(&["template", "apply", "-f", own.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    // a new object, one the issuer refuses (not of its trust domain), an edit, a deletion
    plane
        .apply(&object(
            "by-name",
            "spiffe://{{ .TrustDomain }}/pod/{{ .PodMeta.Name }}",
        ))
        .unwrap();
    plane
        .apply(&object("foreign", "spiffe://elsewhere.example/x"))
        .unwrap();
    wait_for_templates(&issuer, &["k8s/by-name", "k8s/default", "own"]);
    plane
        .apply(&object("default", by_sa).replace("ttl: 20m", "ttl: 30m"))
        .unwrap();
    let ttl_of_default = || {
        let listed = issuer.cli_json(&["template", "list"]);
        listed["templates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "k8s/default")
            .map(|t| t["x509_svid_ttl"].clone())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while ttl_of_default() != Some(1800.into()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the edit did not arrive"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    plane
        .kubectl(&["delete", "clusterspiffeid", "default"])
        .unwrap();
    wait_for_templates(&issuer, &["k8s/by-name", "own"]);
    assert!(
        issuer.log().contains("ClusterSPIFFEID foreign refused"),
        "{}",
        issuer.log()
    );
    // deleted while the issuer was away: gone after its first list, and the
    // operator's own template is still not touched
    issuer.stop();
    plane
        .kubectl(&["delete", "clusterspiffeid", "by-name"])
        .unwrap();
    issuer.start();
    wait_for_templates(&issuer, &["own"]);
}

/// The names of the issuer's templates, sorted.
fn template_names(issuer: &Issuer) -> Vec<String> {
    let listed = issuer.cli_json(&["template", "list"]);
    let mut names: Vec<String> = listed["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

/// Waits (at most 15 s) until the issuer's templates are `want`.
fn wait_for_templates(issuer: &Issuer, want: &[&str]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let now = template_names(issuer);
        if now == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "templates {now:?}, want {want:?}\n{}",
            issuer.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_federated_trust_domains_applied_with_kubectl_become_relationships() {
    let Some(plane) = control_plane::shared(
        "cluster_federated_trust_domains_applied_with_kubectl_become_relationships",
    ) else {
        return;
    };
    plane.apply_shipped_rbac().unwrap();
    let (_dir_b, b, url) = partner_issuer("", "");
    let (_, partner_json, _) = b.cli(&["bundle", "show", "-format", "spiffe"]);
    let object = |name: &str, trust_domain: &str, url: &str, profile: &str, bundle: &str| {
        let mut yaml = format!(
            "apiVersion: spire.spiffe.io/v1alpha1\nkind: ClusterFederatedTrustDomain\nmetadata: {{name: {name}}}\nspec:\n  trustDomain: {trust_domain}\n  bundleEndpointURL: {url}\n  bundleEndpointProfile: {profile}\n"
        );
        if !bundle.is_empty() {
            // the bootstrap bundle inline, as spire-controller-manager takes it
            yaml.push_str("  trustDomainBundle: |\n");
            for line in bundle.lines() {
                yaml.push_str(&format!("    {line}\n"));
            }
        }
        yaml
    };
    let spiffe =
        format!("{{type: https_spiffe, endpointSPIFFEID: \"spiffe://{PARTNER}/spire/server\"}}");
    plane
        .apply(&object("payments", PARTNER, &url, &spiffe, &partner_json))
        .unwrap();
    // what the schema cannot say, the issuer refuses (https_spiffe without the
    // endpoint's ID); the server takes it, and the others still apply
    plane
        .apply(&object(
            "broken",
            "other.example",
            "https://other.example",
            "{type: https_spiffe}",
            "",
        ))
        .unwrap();
    // what the schema can say, the server refuses itself
    let e = plane
        .apply(&object(
            "refused",
            "other.example",
            "https://other.example",
            "{type: https_tls}",
            "",
        ))
        .unwrap_err()
        .to_string();
    assert!(e.contains("Unsupported value: \"https_tls\""), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let a = issuer_reading(plane, dir.path(), |api| {
        format!("cluster_federated_trust_domains: {api}\n")
    });
    let relationships = || {
        let listed = a.cli_json(&["federation", "list"]);
        let mut all: Vec<(String, String, String)> = listed["relationships"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let text = |f: &str| r[f].as_str().unwrap_or_default().to_owned();
                (
                    text("trust_domain"),
                    text("bundle_endpoint_url"),
                    text("managed_by"),
                )
            })
            .collect();
        all.sort();
        all
    };
    let payments = |url: &str| {
        (
            PARTNER.to_owned(),
            url.to_owned(),
            "k8s/payments".to_owned(),
        )
    };
    eventually(&a, "the object became a relationship", || {
        (relationships() == [payments(&url)]).then_some(())
    })
    .await;
    assert!(
        a.log()
            .contains("ClusterFederatedTrustDomain broken refused"),
        "{}",
        a.log()
    );
    eventually(&a, "its bundle fetched", || {
        partner_bundle(&a).filter(|b| !b.jwt_keys.is_empty())
    })
    .await;
    // the CLI cannot take it over or delete it
    let (code, _, stderr) = a.cli(&["federation", "delete", "-id", PARTNER]);
    assert!(
        code != 0 && stderr.contains("managed by k8s/payments"),
        "{stderr}"
    );
    // edited: the broken one mended (https_web needs no bootstrap bundle), the
    // partner's endpoint moved
    plane
        .apply(&object(
            "broken",
            "other.example",
            "https://other.example",
            "{type: https_web}",
            "",
        ))
        .unwrap();
    let moved = format!("{url}/moved");
    plane
        .apply(&object("payments", PARTNER, &moved, &spiffe, &partner_json))
        .unwrap();
    let other = || {
        (
            "other.example".to_owned(),
            "https://other.example".to_owned(),
            "k8s/broken".to_owned(),
        )
    };
    eventually(&a, "both edits applied", || {
        (relationships() == [other(), payments(&moved)]).then_some(())
    })
    .await;
    // deleted: the relationship and its bundle go; the other stays
    plane
        .kubectl(&["delete", "clusterfederatedtrustdomain", "payments"])
        .unwrap();
    eventually(&a, "the relationship removed", || {
        (relationships() == [other()]).then_some(())
    })
    .await;
    assert!(partner_bundle(&a).is_none());
    plane
        .kubectl(&["delete", "clusterfederatedtrustdomain", "broken"])
        .unwrap();
    eventually(&a, "the mended one removed", || {
        relationships().is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trust_bundle_config_map_is_written_as_meshward_issuer() {
    let Some(plane) =
        control_plane::shared("the_trust_bundle_config_map_is_written_as_meshward_issuer")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut issuer = issuer_reading(plane, dir.path(), |api| {
        format!("bundle_configmap:\n  namespace: meshward-system\n  kubernetes: {api}\n")
    });
    let written = || {
        plane
            .kubectl(&[
                "get",
                "configmap",
                "meshward-bundle",
                "-n",
                "meshward-system",
                "-o",
                "jsonpath={.data.bundle\\.pem}",
            ])
            .unwrap_or_default()
    };
    // the bundle the issuer shows, in the ConfigMap
    let wait_for_bundle = |issuer: &Issuer, what: &str| {
        let (code, shown, stderr) = issuer.cli(&["bundle", "show"]);
        assert_eq!(code, 0, "{stderr}");
        assert!(shown.contains("BEGIN CERTIFICATE"), "{shown}");
        // a refused write is retried only after 10 s: 15 s sees at most one
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while written().trim() != shown.trim() {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: the ConfigMap holds {:?}\n{}",
                written(),
                issuer.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(!issuer.log().contains("will retry"), "{}", issuer.log());
        // logged once the API has answered: the line may follow the write by a moment
        let logged = "trust bundle written to ConfigMap meshward-system/meshward-bundle";
        while !issuer.log().contains(logged) {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: not logged\n{}",
                issuer.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // none yet: server-side apply creates it (allowed as a create of that name)
    wait_for_bundle(&issuer, "created");
    // one that is there, stale (as an old issuer left it): patched back
    issuer.stop();
    plane
        .kubectl(&[
            "patch",
            "configmap",
            "meshward-bundle",
            "-n",
            "meshward-system",
            "--type=merge",
            "-p",
            r#"{"data":{"bundle.pem":"stale"}}"#,
        ])
        .unwrap();
    assert_eq!(written(), "stale");
    issuer.start();
    wait_for_bundle(&issuer, "patched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_spiffe_id_changes_across_watches_the_server_ends_are_not_lost() {
    // a plane of its own: its watches of ClusterSPIFFEIDs are the issuer's only
    let Some(plane) =
        control_plane::own("cluster_spiffe_id_changes_across_watches_the_server_ends_are_not_lost")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // the server ends each of the issuer's watches after 2 s (the timeoutSeconds it
    // asks for; kube's default is 290 s, and kube-apiserver's --min-request-timeout
    // applies only to watches that ask for none)
    let issuer = issuer_reading(&plane, dir.path(), |api| {
        let api = api.replace('}', ", watch_timeout_seconds: 2}");
        format!("cluster_spiffe_ids: {api}\n")
    });
    let object = |name: &str, ttl: &str| {
        format!(
            "apiVersion: spire.spiffe.io/v1alpha1\nkind: ClusterSPIFFEID\nmetadata: {{name: {name}}}\nspec:\n  spiffeIDTemplate: \"spiffe://{{{{ .TrustDomain }}}}/{name}/{{{{ .PodMeta.Name }}}}\"\n  podSelector: {{matchLabels: {{spiffe: enabled}}}}\n  ttl: {ttl}\n"
        )
    };
    // name and X509-SVID TTL of each template the issuer holds
    let templates = || -> Vec<(String, u64)> {
        let listed = issuer.cli_json(&["template", "list"]);
        let mut all: Vec<(String, u64)> = listed["templates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["name"].as_str().unwrap().to_owned(),
                    t["x509_svid_ttl"].as_u64().unwrap_or_default(),
                )
            })
            .collect();
        all.sort();
        all
    };
    let watches = || plane.watches_served("clusterspiffeids").unwrap();
    let before = watches();
    // a change every 0.7 s for 7 s: creations, edits and deletions on both sides
    // of several watch ends
    let mut want = std::collections::BTreeMap::new();
    for i in 0..10 {
        let name = format!("c{i}");
        plane.apply(&object(&name, "20m")).unwrap();
        want.insert(format!("k8s/{name}"), 1200);
        match i % 3 {
            1 => {
                plane.apply(&object(&name, "30m")).unwrap();
                want.insert(format!("k8s/{name}"), 1800);
            }
            2 => {
                let gone = format!("c{}", i - 2);
                plane
                    .kubectl(&["delete", "clusterspiffeid", &gone])
                    .unwrap();
                want.remove(&format!("k8s/{gone}"));
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let want: Vec<(String, u64)> = want.into_iter().collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let now = templates();
        if now == want {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "templates {now:?}, want {want:?}\n{}",
            issuer.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // the server ended the issuer's watch at least three times meanwhile
    let ended = watches() - before;
    assert!(
        ended >= 3,
        "the server ended {ended} watches of ClusterSPIFFEIDs"
    );
    eprintln!("the server ended {ended} watches of ClusterSPIFFEIDs meanwhile");
}
