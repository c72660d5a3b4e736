//! What the issuer takes from the Kubernetes API: PSAT attestation and ClusterSPIFFEIDs.

use meshward_api::attestation::k8s_psat_request;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_psat_attestation_through_token_review() {
    use meshward_test_support::kube_api::{FakeKubeApi, FakePod};
    let dir = tempfile::tempdir().unwrap();
    let api = FakeKubeApi::start(dir.path()).await;
    let agent_pod = api.add_agent_pod(
        "ip-10-0-1-23.ec2.internal",
        "node-uid-1",
        "meshward-node-abcde",
        "pod-uid-1",
    );
    let issuer = Issuer::with_extra(
        meshward(),
        TD,
        dir.path(),
        &sqlite_url(dir.path()),
        &api.issuer_psat_yaml(),
    );
    let identity = CertStore::new();
    let mut client = connect(&issuer, &identity).await;
    let attest = |cluster: &str, token: String| k8s_psat_request(cluster, &token, p256_csr().1);
    let token = api.service_account_token(&agent_pod, "meshward-issuer", Duration::from_secs(600));
    let attested = client
        .attest_agent(attest("eks", token.clone()))
        .await
        .unwrap()
        .into_inner();
    let node_id = format!("spiffe://{TD}/spire/agent/k8s_psat/eks/node-uid-1");
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
        "k8s_psat:cluster:eks",
        "k8s_psat:agent_ns:meshward",
        "k8s_psat:agent_sa:meshward-node",
        "k8s_psat:agent_pod_name:meshward-node-abcde",
        "k8s_psat:agent_pod_uid:pod-uid-1",
        "k8s_psat:agent_node_name:ip-10-0-1-23.ec2.internal",
        "k8s_psat:agent_node_uid:node-uid-1",
        "k8s_psat:agent_node_ip:10.0.1.23",
    ] {
        assert!(
            selectors.contains(&want),
            "{want} missing from {selectors:?}"
        );
    }
    // PSAT nodes may attest again (a restarted agent pod)
    client
        .attest_agent(attest("eks", token.clone()))
        .await
        .unwrap();

    let refused = |r: Result<tonic::Response<proto::AttestResponse>, tonic::Status>, want: &str| {
        let e = r.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e}");
        assert!(e.message().contains(want), "want {want:?} in {e}");
    };
    refused(
        client.attest_agent(attest("gke", token.clone())).await,
        "cluster \"gke\" is not configured",
    );
    let wrong_audience =
        api.service_account_token(&agent_pod, "someone-else", Duration::from_secs(600));
    refused(
        client.attest_agent(attest("eks", wrong_audience)).await,
        "did not authenticate the token",
    );
    refused(
        client
            .attest_agent(attest(
                "eks",
                api.expired_service_account_token(&agent_pod, "meshward-issuer"),
            ))
            .await,
        "service account token has expired",
    );
    // a payload that is not k8s_psat's (SPIRE's JSON with cluster and token)
    let mut not_json = attest("eks", token.clone());
    not_json.payload = token.clone().into_bytes();
    let e = client.attest_agent(not_json).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("k8s_psat payload"), "{e}");
    let mut forged = token.clone();
    forged.pop();
    refused(
        client.attest_agent(attest("eks", forged)).await,
        "did not authenticate the token",
    );
    let other_sa = FakePod {
        service_account: "default".into(),
        ..agent_pod.clone()
    };
    let token_other =
        api.service_account_token(&other_sa, "meshward-issuer", Duration::from_secs(600));
    refused(
        client.attest_agent(attest("eks", token_other)).await,
        "not in the allow-list",
    );
    // the pod was replaced: same name, new UID
    api.add_pod(FakePod {
        uid: "pod-uid-2".into(),
        ..agent_pod.clone()
    });
    refused(
        client.attest_agent(attest("eks", token)).await,
        "another UID",
    );
    // a banned node cannot attest again
    issuer.cli_json(&["agent", "ban", "-spiffeID", &node_id]);
    let fresh = FakePod {
        uid: "pod-uid-2".into(),
        ..agent_pod
    };
    let token = api.service_account_token(&fresh, "meshward-issuer", Duration::from_secs(600));
    refused(client.attest_agent(attest("eks", token)).await, "banned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_templates_give_matching_pods_on_the_node_their_ids() {
    use meshward_test_support::kube_api::FakeKubeApi;
    let dir = tempfile::tempdir().unwrap();
    let api = FakeKubeApi::start(dir.path()).await;
    let agent_pod = api.add_agent_pod("node-1", "node-uid-1", "meshward-node-1", "agent-uid");
    let issuer = Issuer::with_extra(
        meshward(),
        TD,
        dir.path(),
        &sqlite_url(dir.path()),
        &api.issuer_psat_yaml(),
    );
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
    let identity = CertStore::new();
    let mut client = connect(&issuer, &identity).await;
    let (node_key, csr) = p256_csr();
    let token = api.service_account_token(&agent_pod, "meshward-issuer", Duration::from_secs(600));
    let attested = client
        .attest_agent(k8s_psat_request("eks", &token, csr))
        .await
        .unwrap()
        .into_inner();
    let node_chain: Vec<_> = attested
        .svid
        .unwrap()
        .cert_chain
        .into_iter()
        .map(Into::into)
        .collect();
    let roots: Vec<_> = attested
        .bundle
        .unwrap()
        .x509_authorities
        .into_iter()
        .map(Into::into)
        .collect();
    identity.set(node_chain, &node_key).unwrap();
    let mut client = connect(&issuer, &identity).await;
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
                by_template(pod("curl-1", "node-1", true)),
                by_template(pod("curl-2", "node-1", false)),
                by_template(pod("curl-3", "node-2", true)),
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
                ..by_template(pod("curl-1", "node-1", true))
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(both.code(), Code::InvalidArgument);
    let jwt = client
        .new_jwt_svid(proto::NewJwtSvidRequest {
            audience: vec!["payments".into()],
            template: "default".into(),
            pod: Some(pod("curl-1", "node-1", true)),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_spiffe_id_objects_become_identity_templates() {
    use meshward_test_support::kube_api::FakeKubeApi;
    let dir = tempfile::tempdir().unwrap();
    let api = FakeKubeApi::start(dir.path()).await;
    let object = |name: &str, template: &str| {
        serde_json::json!({
            "metadata": {"name": name, "uid": "u1", "generation": 1},
            "spec": {"spiffeIDTemplate": template, "podSelector": {"matchLabels": {"spiffe": "enabled"}}, "ttl": "20m"},
        })
    };
    let by_sa = "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}";
    api.apply_cluster_spiffe_id(object("default", by_sa));
    let issuer = Issuer::with_extra(
        meshward(),
        TD,
        dir.path(),
        &sqlite_url(dir.path()),
        &format!("cluster_spiffe_ids: {}\n", api.connection_yaml()),
    );
    // an operator's own template beside them is never touched
    let own = dir.path().join("own.yaml");
    std::fs::write(&own, format!("apiVersion: spire.spiffe.io/v1alpha1\nkind: ClusterSPIFFEID\nmetadata:\n  name: own\nspec:\n  spiffeIDTemplate: \"{by_sa}\"\n")).unwrap();
    let (code, _, stderr) = issuer.cli(&["template", "apply", "-f", own.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
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
                "templates {now:?}, want {want:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(&["k8s/default", "own"]);
    // a new object, a refused one (not a SPIFFE ID of this trust domain), a deletion
    api.apply_cluster_spiffe_id(object(
        "by-name",
        "spiffe://{{ .TrustDomain }}/pod/{{ .PodMeta.Name }}",
    ));
    api.apply_cluster_spiffe_id(object("foreign", "spiffe://elsewhere.example/x"));
    wait_for(&["k8s/by-name", "k8s/default", "own"]);
    api.delete_cluster_spiffe_id("default");
    wait_for(&["k8s/by-name", "own"]);
    assert!(
        issuer.log().contains("ClusterSPIFFEID foreign refused"),
        "{}",
        issuer.log()
    );
}
