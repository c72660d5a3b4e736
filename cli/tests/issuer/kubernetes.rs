//! k8s_psat against the real control plane (etcd + kube-apiserver from
//! `scripts/peers.sh`): real projected tokens from the TokenRequest API (an
//! audience, bound to a pod), checked by a real TokenReview, the issuer
//! authenticating as the `meshward-issuer` ServiceAccount of `docker/k8s/base`
//! under exactly the RBAC shipped there; then the attested node signs for its pods
//! by identity template.

use meshward_api::attestation::k8s_psat_request;
use meshward_test_support::control_plane::{self, ControlPlane};
use meshward_test_support::k8s_psat::{self, AUDIENCE, NODE, NODE_IP};

use super::*;

const AGENT_POD: &str = "meshward-node-abcde";

type AgentClient = proto::agent_api_client::AgentApiClient<tonic::transport::Channel>;

/// An issuer whose `k8s_psat` cluster `eks` is `plane` ([`k8s_psat::issuer_yaml`]).
fn psat_issuer(plane: &ControlPlane, dir: &Path) -> Issuer {
    let psat = k8s_psat::issuer_yaml(plane, dir).unwrap();
    Issuer::with_extra(meshward(), TD, dir, &sqlite_url(dir), &psat)
}

/// The refusal's message, after checking it is PermissionDenied.
fn refused(r: Result<tonic::Response<proto::AttestResponse>, tonic::Status>) -> String {
    let e = r.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    e.message().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_psat_attestation_through_a_real_token_review() {
    let Some(plane) = control_plane::shared("k8s_psat_attestation_through_a_real_token_review")
    else {
        return;
    };
    let pod_uid = k8s_psat::agent_pod(plane, AGENT_POD).unwrap();
    let node_uid = k8s_psat::node_uid(plane).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let issuer = psat_issuer(plane, dir.path());
    let identity = CertStore::new();
    let mut client = connect(&issuer, &identity).await;
    let attest = |token: &str| k8s_psat_request("eks", token, p256_csr().1);
    let projected = k8s_psat::projected_token(plane, AGENT_POD, AUDIENCE).unwrap();
    let attested = client
        .attest_agent(attest(&projected))
        .await
        .unwrap()
        .into_inner();
    let node_id = format!("spiffe://{TD}/spire/agent/k8s_psat/eks/{node_uid}");
    assert_eq!(attested.svid.unwrap().spiffe_id, node_id);
    let agents = issuer.cli_json(&["agent", "show", "-spiffeID", &node_id]);
    let agent = &agents["agents"][0];
    assert_eq!(agent["attestation_type"], "k8s_psat");
    assert_eq!(agent["can_reattest"], true);
    let selectors: Vec<&str> = agent["selectors"]
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
        format!("k8s_psat:agent_node_ip:{NODE_IP}"),
    ] {
        assert!(
            selectors.contains(&want.as_str()),
            "{want} missing from {selectors:?}"
        );
    }
    refusals_before_the_review(&mut client, &projected).await;
    refusals_of_the_review(plane, &mut client, &projected).await;
    refusals_of_the_pod(plane, &issuer, &mut client, &node_id).await;
}

/// What the issuer refuses before asking the server: a cluster it does not know,
/// a payload that is not k8s_psat's.
async fn refusals_before_the_review(client: &mut AgentClient, projected: &str) {
    let e = refused(
        client
            .attest_agent(k8s_psat_request("gke", projected, p256_csr().1))
            .await,
    );
    assert!(e.contains("cluster \"gke\" is not configured"), "{e}");
    // the token alone, not SPIRE's JSON with cluster and token
    let mut not_json = k8s_psat_request("eks", projected, p256_csr().1);
    not_json.payload = projected.as_bytes().to_vec();
    let e = client.attest_agent(not_json).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("k8s_psat payload"), "{e}");
}

/// What the server's TokenReview refuses (another audience, a forged signature)
/// and what the issuer refuses of what it accepts (a ServiceAccount outside the
/// allow-list).
async fn refusals_of_the_review(plane: &ControlPlane, client: &mut AgentClient, projected: &str) {
    let attest = |token: &str| k8s_psat_request("eks", token, p256_csr().1);
    let other_audience = k8s_psat::projected_token(plane, AGENT_POD, "someone-else").unwrap();
    let e = refused(client.attest_agent(attest(&other_audience)).await);
    assert!(e.contains("did not authenticate the token"), "{e}");
    let mut forged = projected.to_owned();
    forged.pop();
    let e = refused(client.attest_agent(attest(&forged)).await);
    assert!(e.contains("did not authenticate the token"), "{e}");
    let issuer_token = k8s_psat::token(plane, "meshward-issuer", &["--audience=meshward-issuer"]);
    let e = refused(client.attest_agent(attest(&issuer_token.unwrap())).await);
    assert!(e.contains("not in the allow-list"), "{e}");
}

/// A banned node, then the pod the token is bound to replaced, then gone.
async fn refusals_of_the_pod(
    plane: &ControlPlane,
    issuer: &Issuer,
    client: &mut AgentClient,
    node_id: &str,
) {
    let attest = |token: &str| k8s_psat_request("eks", token, p256_csr().1);
    // PSAT nodes may attest again (a restarted agent pod), unless banned
    let projected = k8s_psat::projected_token(plane, AGENT_POD, AUDIENCE).unwrap();
    client.attest_agent(attest(&projected)).await.unwrap();
    issuer.cli_json(&["agent", "ban", "-spiffeID", node_id]);
    let e = refused(client.attest_agent(attest(&projected)).await);
    assert!(e.contains("banned"), "{e}");
    // The server caches a token's successful review for 10 s (kube-apiserver's
    // token cache), so for that long it still vouches for a token whose pod was
    // just replaced or deleted: the issuer's own lookup of the pod must refuse it,
    // at once and as PermissionDenied (a node that will never attest with it, not
    // an outage to retry; it once answered Unavailable for 8-10 s).
    let force = ["--grace-period=0", "--force"];
    let delete = || {
        let mut args = vec!["delete", "pod", AGENT_POD, "-n", "meshward-system"];
        args.extend_from_slice(&force);
        plane.kubectl(&args).unwrap();
    };
    // replaced: the same name, a new UID
    delete();
    k8s_psat::bind_pod(plane, AGENT_POD).unwrap();
    let e = refused(client.attest_agent(attest(&projected)).await);
    assert!(e.contains("another UID"), "{e}");
    delete();
    let e = refused(client.attest_agent(attest(&projected)).await);
    assert!(e.contains("not found"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_templates_give_matching_pods_on_the_node_their_ids() {
    let Some(plane) =
        control_plane::shared("identity_templates_give_matching_pods_on_the_node_their_ids")
    else {
        return;
    };
    // a pod of its own: the test above replaces and deletes its pod
    let pod = "meshward-node-templates";
    k8s_psat::agent_pod(plane, pod).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let issuer = psat_issuer(plane, dir.path());
    let template = dir.path().join("clusterspiffeid.yaml");
    std::fs::write(
        &template,
        "apiVersion: spire.spiffe.io/v1alpha1\nkind: ClusterSPIFFEID\nmetadata:\n  name: default\nspec:\n  spiffeIDTemplate: \"spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}\"\n  podSelector:\n    matchLabels:\n      spiffe: enabled\n  workloadSelectorTemplates:\n  - \"k8s:ns:{{ .PodMeta.Namespace }}\"\n  dnsNameTemplates:\n  - \"{{ .PodMeta.Name }}.{{ .PodMeta.Namespace }}.svc\"\n  ttl: 30m\n",
    )
    .unwrap();
    let (code, stdout, stderr) =
        issuer.cli(&["template", "apply", "-f", template.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "Applied templates: default\n");
    let listed = issuer.cli_json(&["template", "list"]);
    assert_eq!(listed["templates"][0]["x509_svid_ttl"], 1800);

    // the node attests with its projected token, then signs for its pods by template
    let (mut client, roots) = attested_node(plane, &issuer, pod).await;
    let templates = client
        .list_identity_templates(proto::ListIdentityTemplatesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(templates.templates[0].name, "default");

    let pod = |name: &str, node: &str, labelled: bool| proto::PodAttributes {
        namespace: "default".into(),
        name: name.into(),
        uid: format!("{name}-uid"),
        service_account: "curl-spire".into(),
        node_name: node.into(),
        labels: if labelled {
            [("spiffe".to_owned(), "enabled".to_owned())].into()
        } else {
            Default::default()
        },
        namespace_labels: Default::default(),
    };
    let by_template = |p: proto::PodAttributes| proto::NewX509SvidParams {
        csr: p256_csr().1,
        template: "default".into(),
        pod: Some(p),
        ..Default::default()
    };
    let results = client
        .batch_new_x509_svid(proto::BatchNewX509SvidRequest {
            params: vec![
                by_template(pod("curl-1", NODE, true)),
                by_template(pod("curl-2", NODE, false)),
                by_template(pod("curl-3", "another-node", true)),
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let svid = results[0]
        .svid
        .as_ref()
        .unwrap_or_else(|| panic!("{}", results[0].message));
    let chain: Vec<_> = svid.cert_chain.iter().map(|c| c.clone().into()).collect();
    let id = format!("spiffe://{TD}/ns/default/sa/curl-spire");
    check_x509_svid(&chain, &roots, &id, SystemTime::now()).unwrap();
    let lifetime = svid.expires_at
        - SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
    assert!(
        (1700..=1800).contains(&lifetime),
        "the template's 30m TTL, got {lifetime}s"
    );
    assert_eq!(results[1].code, Code::PermissionDenied as i32);
    assert!(
        results[1].message.contains("does not select"),
        "{}",
        results[1].message
    );
    assert_eq!(results[2].code, Code::PermissionDenied as i32);
    assert!(
        results[2].message.contains("not on this node"),
        "{}",
        results[2].message
    );
    // an entry ID and a template at once is ambiguous
    let both = client
        .batch_new_x509_svid(proto::BatchNewX509SvidRequest {
            params: vec![proto::NewX509SvidParams {
                entry_id: "x".into(),
                ..by_template(pod("curl-1", NODE, true))
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(both.code(), Code::InvalidArgument);
    let jwt = client
        .new_jwt_svid(proto::NewJwtSvidRequest {
            audience: vec!["payments".into()],
            template: "default".into(),
            pod: Some(pod("curl-1", NODE, true)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let own = client
        .get_bundles(proto::GetBundlesRequest {})
        .await
        .unwrap()
        .into_inner()
        .own
        .unwrap();
    let subject = format!("spiffe://{TD}/ns/default/sa/curl-spire");
    verify_jwt_svid(&jwt.token, &own.jwks, "payments", &subject).unwrap();

    // a template that cannot render is refused whole, with its name
    std::fs::write(&template, "apiVersion: spire.spiffe.io/v1alpha1\nkind: ClusterSPIFFEID\nmetadata:\n  name: broken\nspec:\n  spiffeIDTemplate: \"spiffe://{{ .TrustDomain }}/{{ .PodMeta.Nope }}\"\n").unwrap();
    let (code, _, stderr) = issuer.cli(&["template", "apply", "-f", template.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("template \"broken\": unknown template expression"),
        "{stderr}"
    );
}

/// An agent of the node daemon's pod `pod` attested by its projected token: its
/// client (authenticated with the node SVID) and the issuer's X.509 roots.
async fn attested_node(
    plane: &ControlPlane,
    issuer: &Issuer,
    pod: &str,
) -> (AgentClient, Vec<rustls_pki_types::CertificateDer<'static>>) {
    let identity = CertStore::new();
    let mut client = connect(issuer, &identity).await;
    let (node_key, csr) = p256_csr();
    let token = k8s_psat::projected_token(plane, pod, AUDIENCE).unwrap();
    let attested: Attested = client
        .attest_agent(k8s_psat_request("eks", &token, csr))
        .await
        .unwrap()
        .into_inner()
        .into();
    identity.set(attested.chain, &node_key).unwrap();
    let roots = attested.roots;
    (connect(issuer, &identity).await, roots)
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
    // a pod of its own: the test above deletes its pod
    let pod = "meshward-node-expiry";
    k8s_psat::agent_pod(plane, pod).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let issuer = psat_issuer(plane, dir.path());
    let identity = CertStore::new();
    let mut client = connect(&issuer, &identity).await;
    let attest = |token: &str| k8s_psat_request("eks", token, p256_csr().1);
    let projected = k8s_psat::projected_token(plane, pod, AUDIENCE).unwrap();
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
