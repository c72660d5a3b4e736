//! The issuer against the real control plane (etcd + kube-apiserver from
//! `scripts/peers.sh`): k8s_psat with real projected tokens from the TokenRequest
//! API (an audience, bound to a pod), checked by a real TokenReview, the issuer
//! authenticating as the `meshward-issuer` ServiceAccount of `docker/k8s/base`
//! under exactly the RBAC shipped there; ClusterSPIFFEIDs and
//! ClusterFederatedTrustDomains applied with kubectl become its templates and
//! federation relationships.

use meshward_api::attestation::k8s_psat_request;
use meshward_test_support::control_plane::{self, ControlPlane};

use super::federation::{PARTNER, eventually, partner_bundle, partner_issuer};
use super::*;

const NODE: &str = "ip-10-0-1-23.ec2.internal";
const AGENT_POD: &str = "meshward-node-abcde";

/// A token of `service_account` (namespace meshward-system) from the TokenRequest API.
fn token(plane: &ControlPlane, service_account: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "create",
        "token",
        service_account,
        "-n",
        "meshward-system",
        "--duration=10m",
    ];
    args.extend_from_slice(extra);
    plane.kubectl(&args).unwrap().trim().to_owned()
}

/// The node (its address written through the status subresource) and a node
/// daemon's pod `pod` bound to it, as a scheduler and a kubelet would leave them.
fn agent_pod(plane: &ControlPlane, pod: &str) {
    plane
        .apply(&format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {NODE}}}\n"
        ))
        .unwrap();
    plane
        .kubectl(&[
            "patch",
            "node",
            NODE,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"addresses":[{"type":"InternalIP","address":"10.0.1.23"}]}}"#,
        ])
        .unwrap();
    plane
        .apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: meshward-system}}\nspec:\n  nodeName: {NODE}\n  serviceAccountName: meshward-node\n  containers:\n  - {{name: meshward, image: \"ghcr.io/meshward/meshward:0.1.0\"}}\n"
        ))
        .unwrap();
}

/// An issuer whose `k8s_psat` cluster `eks` is `plane`, read as the
/// `meshward-issuer` ServiceAccount (its token in `dir`), allowing meshward-node.
fn psat_issuer(plane: &control_plane::ControlPlane, dir: &std::path::Path) -> Issuer {
    let issuer_token = plane.component_token_file("meshward-issuer", dir).unwrap();
    let psat = format!(
        "k8s_psat:\n  clusters:\n  - name: eks\n    api_server: {}\n    api_ca_path: {}\n    api_token_path: {}\n    service_account_allow_list: [\"meshward-system:meshward-node\"]\n",
        plane.url(),
        plane.ca_file().display(),
        issuer_token.display()
    );
    Issuer::with_extra(meshward(), TD, dir, &sqlite_url(dir), &psat)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_psat_attestation_through_a_real_token_review() {
    let Some(plane) = control_plane::shared("k8s_psat_attestation_through_a_real_token_review")
    else {
        return;
    };
    plane.apply_shipped_rbac().unwrap();
    agent_pod(plane, AGENT_POD);
    let node_uid = plane
        .kubectl(&["get", "node", NODE, "-o", "jsonpath={.metadata.uid}"])
        .unwrap();
    let pod_uid = plane
        .kubectl(&[
            "get",
            "pod",
            AGENT_POD,
            "-n",
            "meshward-system",
            "-o",
            "jsonpath={.metadata.uid}",
        ])
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let issuer = psat_issuer(plane, dir.path());
    let identity = CertStore::new();
    let mut client = connect(&issuer, &identity).await;
    let attest = |token: &str| k8s_psat_request("eks", token, p256_csr().1);
    let bound = [
        "--audience=meshward-issuer",
        "--bound-object-kind=Pod",
        "--bound-object-name=meshward-node-abcde",
    ];
    let projected = token(plane, "meshward-node", &bound);
    let attested = client
        .attest_agent(attest(&projected))
        .await
        .unwrap()
        .into_inner();
    let node_id = format!("spiffe://{TD}/spire/agent/k8s_psat/eks/{node_uid}");
    assert_eq!(attested.svid.unwrap().spiffe_id, node_id);
    let agents = issuer.cli_json(&["agent", "show", "-spiffeID", &node_id]);
    let selectors: Vec<&str> = agents["agents"][0]["selectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for want in [
        "k8s_psat:cluster:eks".to_owned(),
        "k8s_psat:agent_ns:meshward-system".to_owned(),
        "k8s_psat:agent_sa:meshward-node".to_owned(),
        format!("k8s_psat:agent_pod_name:{AGENT_POD}"),
        format!("k8s_psat:agent_pod_uid:{pod_uid}"),
        format!("k8s_psat:agent_node_name:{NODE}"),
        format!("k8s_psat:agent_node_uid:{node_uid}"),
        "k8s_psat:agent_node_ip:10.0.1.23".to_owned(),
    ] {
        assert!(
            selectors.contains(&want.as_str()),
            "{want} missing from {selectors:?}"
        );
    }

    let refused = |r: Result<tonic::Response<proto::AttestResponse>, tonic::Status>| {
        let e = r.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e}");
        e.message().to_owned()
    };
    // another audience
    let other_audience = token(
        plane,
        "meshward-node",
        &[
            "--audience=someone-else",
            "--bound-object-kind=Pod",
            "--bound-object-name=meshward-node-abcde",
        ],
    );
    let e = refused(client.attest_agent(attest(&other_audience)).await);
    eprintln!("another audience: {e}");
    // a ServiceAccount outside the allow-list (its token valid otherwise)
    let e = refused(
        client
            .attest_agent(attest(&token(
                plane,
                "meshward-issuer",
                &["--audience=meshward-issuer"],
            )))
            .await,
    );
    assert!(e.contains("not in the allow-list"), "{e}");
    // the pod the token is bound to is gone: the server no longer accepts it
    plane
        .kubectl(&[
            "delete",
            "pod",
            AGENT_POD,
            "-n",
            "meshward-system",
            "--grace-period=0",
            "--force",
        ])
        .unwrap();
    // Refused at once, as PermissionDenied (a node that will never attest with it,
    // not an outage to retry): the server's TokenReview may accept the token for a
    // few seconds more (its pod cache lags), but the issuer's own lookup of the
    // token's pod finds nothing. (It once answered Unavailable for 8-10 s.)
    let e = client.attest_agent(attest(&projected)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert!(e.message().contains("not found"), "{e}");
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
    let issuer_token = plane
        .component_token_file("meshward-issuer", dir.path())
        .unwrap();
    let object = |name: &str, template: &str| {
        format!(
            "apiVersion: spire.spiffe.io/v1alpha1\nkind: ClusterSPIFFEID\nmetadata: {{name: {name}}}\nspec:\n  spiffeIDTemplate: \"{template}\"\n  podSelector: {{matchLabels: {{spiffe: enabled}}}}\n  ttl: 20m\n"
        )
    };
    let by_sa = "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}";
    plane.apply(&object("default", by_sa)).unwrap();
    let issuer = Issuer::with_extra(
        meshward(),
        TD,
        dir.path(),
        &sqlite_url(dir.path()),
        &format!(
            "cluster_spiffe_ids: {}\n",
            plane.api_yaml_with_token(&issuer_token)
        ),
    );
    let names = || -> Vec<String> {
        let listed = issuer.cli_json(&["template", "list"]);
        let mut names: Vec<String> = listed["templates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    let wait_for = |want: &[&str]| {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let now = names();
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
    };
    wait_for(&["k8s/default"]);
    let listed = issuer.cli_json(&["template", "list"]);
    assert_eq!(listed["templates"][0]["x509_svid_ttl"], 1200);
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
    wait_for(&["k8s/by-name", "k8s/default"]);
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
    wait_for(&["k8s/by-name"]);
    assert!(
        issuer.log().contains("ClusterSPIFFEID foreign refused"),
        "{}",
        issuer.log()
    );
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
    let issuer_token = plane
        .component_token_file("meshward-issuer", dir.path())
        .unwrap();
    let a = Issuer::with_extra(
        meshward(),
        TD,
        dir.path(),
        &sqlite_url(dir.path()),
        &format!(
            "cluster_federated_trust_domains: {}\n",
            plane.api_yaml_with_token(&issuer_token)
        ),
    );
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

/// `token` (a JWT of the control plane's service-account issuer) with its claims
/// changed by `edit`, signed again with the control plane's own key (its header,
/// key ID included, kept).
fn resigned(
    plane: &ControlPlane,
    token: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let part = |i: usize| -> serde_json::Value {
        serde_json::from_slice(&b64.decode(token.split('.').nth(i).unwrap()).unwrap()).unwrap()
    };
    let (header, mut claims) = (part(0), part(1));
    assert_eq!(header["alg"], "ES256", "{header}");
    edit(&mut claims);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = part(0)["kid"].as_str().map(str::to_owned);
    let key = std::fs::read(plane.service_account_signing_key_file()).unwrap();
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&key).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_projected_token_is_refused_by_the_real_token_review() {
    let Some(plane) =
        control_plane::shared("an_expired_projected_token_is_refused_by_the_real_token_review")
    else {
        return;
    };
    plane.apply_shipped_rbac().unwrap();
    // a pod of its own: the test above deletes its pod
    let pod = "meshward-node-expiry";
    agent_pod(plane, pod);
    let dir = tempfile::tempdir().unwrap();
    let issuer = psat_issuer(plane, dir.path());
    let identity = CertStore::new();
    let mut client = connect(&issuer, &identity).await;
    let attest = |token: &str| k8s_psat_request("eks", token, p256_csr().1);
    let bound_to = format!("--bound-object-name={pod}");
    let projected = token(
        plane,
        "meshward-node",
        &[
            "--audience=meshward-issuer",
            "--bound-object-kind=Pod",
            &bound_to,
        ],
    );
    // The TokenRequest API gives no token shorter than 10 minutes, so its claims
    // (audience, pod binding, ServiceAccount UID) are signed again with the
    // server's own key, valid an hour ago and no more. First the same claims
    // unchanged: the server takes its own key's signature...
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let same = resigned(plane, &projected, |_| {});
    client.attest_agent(attest(&same)).await.unwrap();
    // ...then expired: the real TokenReview refuses it, and so does the issuer
    let expired = resigned(plane, &projected, |claims| {
        claims["iat"] = (now - 7200).into();
        claims["nbf"] = (now - 7200).into();
        claims["exp"] = (now - 3600).into();
    });
    let e = client.attest_agent(attest(&expired)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert!(e.message().contains("expired"), "{e}");
    eprintln!("expired: {}", e.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trust_bundle_config_map_is_written_as_meshward_issuer() {
    let Some(plane) =
        control_plane::shared("the_trust_bundle_config_map_is_written_as_meshward_issuer")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let issuer_token = plane
        .component_token_file("meshward-issuer", dir.path())
        .unwrap();
    let mut issuer = Issuer::with_extra(
        meshward(),
        TD,
        dir.path(),
        &sqlite_url(dir.path()),
        &format!(
            "bundle_configmap:\n  namespace: meshward-system\n  kubernetes: {}\n",
            plane.api_yaml_with_token(&issuer_token)
        ),
    );
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
    let issuer_token = plane
        .component_token_file("meshward-issuer", dir.path())
        .unwrap();
    // the server ends each of the issuer's watches after 2 s (the timeoutSeconds it
    // asks for; kube's default is 290 s, and kube-apiserver's --min-request-timeout
    // applies only to watches that ask for none)
    let api_yaml = plane
        .api_yaml_with_token(&issuer_token)
        .replace('}', ", watch_timeout_seconds: 2}");
    let issuer = Issuer::with_extra(
        meshward(),
        TD,
        dir.path(),
        &sqlite_url(dir.path()),
        &format!("cluster_spiffe_ids: {api_yaml}\n"),
    );
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
