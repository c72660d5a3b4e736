//! The agent against a real issuer process: attestation with a join token, SVIDs
//! for exactly the pods an entry or a template grants, published as snapshots;
//! pods that leave lose their SVIDs; an issuer outage leaves the served SVIDs in
//! place; an agent restart reuses its node SVID (the join token is already used).
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshward::agent::{AgentHandle, Snapshot};
use meshward_config::{PodInfo, ProxyConfig, WorkloadsFile};
use meshward_test_support::check_x509_svid;
use meshward_test_support::issuer::{IssuerProcess, sqlite_url};

const TD: &str = "math.example.com";

fn pod(name: &str, namespace: &str, sa: &str, ip: &str, labels: &[(&str, &str)]) -> PodInfo {
    PodInfo {
        name: name.into(),
        namespace: namespace.into(),
        service_account: sa.into(),
        uid: format!("{name}-uid"),
        ip: ip.parse().unwrap(),
        image: "example.com/app:1".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        netns: None,
    }
}

fn write_workloads(path: &Path, pods: Vec<PodInfo>) {
    let file = WorkloadsFile {
        node: "node-1".into(),
        workloads: pods,
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, file.to_yaml()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn config(dir: &Path, issuer: &IssuerProcess, token: &str) -> ProxyConfig {
    std::fs::write(dir.join("bundle.pem"), issuer.bundle_pem()).unwrap();
    let yaml = format!(
        "trust_domain: {TD}\nagent:\n  issuer_address: {}\n  trust_bundle_path: {}\n  data_dir: {}\n  join_token: {token}\n  workloads:\n    file: {}\n  sync_interval: 1s\n",
        issuer.agent,
        dir.join("bundle.pem").display(),
        dir.join("agent").display(),
        dir.join("workloads.yaml").display()
    );
    ProxyConfig::from_yaml(&yaml, "proxy.yaml").unwrap()
}

/// The real issuer process on SQLite in `dir`.
fn start_issuer(dir: &Path) -> IssuerProcess {
    IssuerProcess::new(
        Path::new(env!("CARGO_BIN_EXE_meshward")),
        TD,
        dir,
        &sqlite_url(dir),
    )
}

/// A join token for `spiffe://<td>/node/node-1`.
fn node_token(issuer: &IssuerProcess) -> String {
    let token = issuer.cli_json(&[
        "token",
        "generate",
        "-spiffeID",
        &format!("spiffe://{TD}/node/node-1"),
    ]);
    token["value"].as_str().unwrap().to_owned()
}

/// An entry: pods with service account curl-spire on node-1 are `.../ns/default/sa/curl-spire`.
fn curl_spire_entry(issuer: &IssuerProcess) {
    issuer.cli_json(&[
        "entry",
        "create",
        "-spiffeID",
        &format!("spiffe://{TD}/ns/default/sa/curl-spire"),
        "-parentID",
        &format!("spiffe://{TD}/node/node-1"),
        "-selector",
        "k8s:sa:curl-spire",
    ]);
}

/// Serves the Workload API for `handle` on `<dir>/agent.sock`; returns once the socket exists.
async fn serve_workload_api(
    dir: &Path,
    handle: &AgentHandle,
) -> (
    std::path::PathBuf,
    tokio::task::JoinHandle<Result<(), String>>,
) {
    let socket = dir.join("agent.sock");
    let server = tokio::spawn({
        let (socket, handle) = (socket.clone(), handle.clone());
        async move { meshward::workload_api::serve(&socket, handle).await }
    });
    for _ in 0..100 {
        if socket.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (socket, server)
}

/// Waits (bounded) for a snapshot that satisfies `done`.
async fn wait_for(
    handle: &mut AgentHandle,
    what: &str,
    done: impl Fn(&Snapshot) -> bool,
) -> Arc<Snapshot> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let current = handle.snapshots.borrow_and_update().clone();
        if done(&current) {
            return current;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; last snapshot: {current:?}"
        );
        let _ = tokio::time::timeout(Duration::from_millis(500), handle.snapshots.changed()).await;
    }
}

fn ids(snapshot: &Snapshot, ip: &str) -> Vec<String> {
    let ip: IpAddr = ip.parse().unwrap();
    snapshot
        .pods
        .get(&ip)
        .map(|p| p.svids.iter().map(|s| s.spiffe_id.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_serves_exactly_the_granted_identities() {
    let dir = tempfile::tempdir().unwrap();
    let mut issuer = start_issuer(dir.path());
    let token = node_token(&issuer);
    issuer.cli_json(&[
        "entry",
        "create",
        "-spiffeID",
        &format!("spiffe://{TD}/ns/default/sa/curl-spire"),
        "-parentID",
        &format!("spiffe://{TD}/node/node-1"),
        "-selector",
        "k8s:ns:default",
        "-selector",
        "k8s:sa:curl-spire",
    ]);
    let template = dir.path().join("template.yaml");
    std::fs::write(
        &template,
        "apiVersion: spire.spiffe.io/v1alpha1\nkind: ClusterSPIFFEID\nmetadata:\n  name: enabled\nspec:\n  spiffeIDTemplate: \"spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}\"\n  podSelector:\n    matchLabels:\n      spiffe: enabled\n",
    )
    .unwrap();
    assert_eq!(
        issuer
            .cli(&["template", "apply", "-f", template.to_str().unwrap()])
            .0,
        0
    );

    let workloads = dir.path().join("workloads.yaml");
    write_workloads(
        &workloads,
        vec![
            pod("curl", "default", "curl-spire", "10.40.1.2", &[]),
            pod(
                "echo",
                "echoserver",
                "default",
                "10.40.1.3",
                &[("spiffe", "enabled")],
            ),
            pod("stranger", "default", "other", "10.40.1.4", &[]),
        ],
    );
    let config = config(dir.path(), &issuer, &token);
    let mut handle = meshward::agent::start(&config).unwrap();
    let snapshot = wait_for(&mut handle, "SVIDs for curl and echo", |s| {
        !ids(s, "10.40.1.2").is_empty() && !ids(s, "10.40.1.3").is_empty()
    })
    .await;
    // readiness follows the first published snapshot
    tokio::time::timeout(Duration::from_secs(5), handle.ready.wait_for(|r| *r))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(snapshot.node_id, format!("spiffe://{TD}/node/node-1"));
    assert_eq!(
        ids(&snapshot, "10.40.1.2"),
        [format!("spiffe://{TD}/ns/default/sa/curl-spire")]
    );
    assert_eq!(
        ids(&snapshot, "10.40.1.3"),
        [format!("spiffe://{TD}/ns/echoserver/sa/default")]
    );
    assert!(
        ids(&snapshot, "10.40.1.4").is_empty(),
        "no grant, no identity"
    );
    for p in snapshot.pods.values() {
        for svid in &p.svids {
            check_x509_svid(
                &svid.chain,
                &snapshot.bundle,
                &svid.spiffe_id,
                SystemTime::now(),
            )
            .unwrap();
            // the key is the one the certificate was made for
            let (_, leaf) = x509_parser::parse_x509_certificate(&svid.chain[0]).unwrap();
            let key = rcgen::KeyPair::try_from(svid.key_pkcs8.as_slice()).unwrap();
            assert_eq!(
                leaf.public_key().raw,
                rcgen::PublicKeyData::subject_public_key_info(&key).as_slice()
            );
        }
    }
    assert!(snapshot.jwks.contains("jwt-svid"));

    // a pod leaves: its SVIDs go
    write_workloads(
        &workloads,
        vec![pod("curl", "default", "curl-spire", "10.40.1.2", &[])],
    );
    wait_for(&mut handle, "echo forgotten", |s| {
        !s.pods.contains_key(&"10.40.1.3".parse::<IpAddr>().unwrap())
    })
    .await;

    // the issuer goes away: the SVIDs already served stay
    let before = handle.snapshots.borrow().clone();
    issuer.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = handle.snapshots.borrow().clone();
    assert_eq!(
        ids(&during, "10.40.1.2"),
        ids(&before, "10.40.1.2"),
        "no gap while the issuer is down"
    );
    issuer.start();

    // an agent restart reuses the node SVID from data_dir: the used token is not needed
    drop(handle);
    let mut restarted = meshward::agent::start(&config).unwrap();
    let snapshot = wait_for(&mut restarted, "SVIDs after restart", |s| {
        !ids(s, "10.40.1.2").is_empty()
    })
    .await;
    assert_eq!(snapshot.node_id, format!("spiffe://{TD}/node/node-1"));
    let agents = issuer.cli_json(&["agent", "list"]);
    assert_eq!(agents["agents"].as_array().unwrap().len(), 1);
}

#[test]
fn proxy_run_is_ready_after_attestation_and_first_sync() {
    use meshward_test_support::daemon::{Daemon, free_port, http_status};
    let dir = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_meshward"));
    let issuer = start_issuer(dir.path());
    let token = issuer.cli_json(&["token", "generate"]);
    write_workloads(
        &dir.path().join("workloads.yaml"),
        vec![pod("curl", "default", "curl-spire", "10.40.1.2", &[])],
    );
    std::fs::write(dir.path().join("bundle.pem"), issuer.bundle_pem()).unwrap();
    let ready = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = dir.path().join("proxy.yaml");
    std::fs::write(
        &config,
        format!(
            "trust_domain: {TD}\nreadiness_listen: {ready}\nagent:\n  issuer_address: {}\n  trust_bundle_path: {}\n  data_dir: {}\n  join_token: {}\n  workloads:\n    file: {}\n{}",
            issuer.agent,
            dir.path().join("bundle.pem").display(),
            dir.path().join("agent").display(),
            token["value"].as_str().unwrap(),
            dir.path().join("workloads.yaml").display(),
            // this host is not a node: no capture rules, listeners on free ports
            format_args!(
                "capture:\n  install: false\n  outbound_port: {}\n  inbound_plaintext_port: {}\n  inbound_hbone_port: {}\nadmin_listen: 127.0.0.1:{}\nmetrics_listen: 127.0.0.1:{}\n",
                free_port(),
                free_port(),
                free_port(),
                free_port(),
                free_port()
            ),
        ),
    )
    .unwrap();
    let mut proxy = Daemon::spawn(
        bin,
        &["proxy", "run", "-c", config.to_str().unwrap()],
        &dir.path().join("proxy.log"),
    );
    proxy.wait_http_ok(ready, "/healthz/ready", Duration::from_secs(30));
    assert!(
        proxy
            .log()
            .contains("attested as spiffe://math.example.com/spire/agent/join_token/"),
        "{}",
        proxy.log()
    );
    assert_eq!(http_status(ready, "/other"), Some(404));
    let status = proxy.stop();
    assert!(status.contains("exit status: 0"), "{status}");
}

mod workload_api {
    use super::*;
    use meshward::workload_proto::spiffe_workload_api_client::SpiffeWorkloadApiClient;
    use meshward::workload_proto::{
        JwtsvidRequest, ValidateJwtsvidRequest, X509BundlesRequest, X509svidRequest,
    };
    use tonic::transport::Channel;

    async fn client(socket: &Path) -> SpiffeWorkloadApiClient<Channel> {
        meshward::workload_api::client(socket).await.unwrap()
    }

    fn with_header<T>(message: T) -> tonic::Request<T> {
        meshward::workload_api::with_security_header(message)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_caller_gets_exactly_its_pods_identity() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = start_issuer(dir.path());
        let token = node_token(&issuer);
        curl_spire_entry(&issuer);
        // this test process is "the pod": it lives in the network namespace named here
        let mut me = pod("curl", "default", "curl-spire", "10.40.1.2", &[]);
        me.netns = Some(format!("/proc/{}/ns/net", std::process::id()).into());
        let workloads = dir.path().join("workloads.yaml");
        write_workloads(&workloads, vec![me.clone()]);
        let config = config(dir.path(), &issuer, &token);
        let mut handle = meshward::agent::start(&config).unwrap();
        wait_for(&mut handle, "the SVID", |s| !ids(s, "10.40.1.2").is_empty()).await;
        let (socket, server) = serve_workload_api(dir.path(), &handle).await;
        let mut api = client(&socket).await;

        // the security header is required
        let missing = api.fetch_x509svid(X509svidRequest {}).await.unwrap_err();
        assert_eq!(missing.code(), tonic::Code::InvalidArgument);
        assert_eq!(missing.message(), "security header missing from request");

        let mut stream = api
            .fetch_x509svid(with_header(X509svidRequest {}))
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().unwrap();
        assert_eq!(first.svids.len(), 1);
        let svid = &first.svids[0];
        assert_eq!(
            svid.spiffe_id,
            format!("spiffe://{TD}/ns/default/sa/curl-spire")
        );
        let chain: Vec<rustls_pki_types::CertificateDer<'static>> =
            x509_parser::parse_x509_certificate(&svid.x509_svid)
                .map(|(rest, _)| {
                    let leaf_len = svid.x509_svid.len() - rest.len();
                    vec![svid.x509_svid[..leaf_len].to_vec().into()]
                })
                .unwrap();
        let (bundle_rest, _) = x509_parser::parse_x509_certificate(&svid.bundle).unwrap();
        assert!(bundle_rest.is_empty(), "one CA in the bundle, as DER");
        let roots = vec![rustls_pki_types::CertificateDer::from(svid.bundle.clone())];
        check_x509_svid(&chain, &roots, &svid.spiffe_id, SystemTime::now()).unwrap();
        let key = rcgen::KeyPair::try_from(svid.x509_svid_key.as_slice()).unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
        assert_eq!(
            leaf.public_key().raw,
            rcgen::PublicKeyData::subject_public_key_info(&key).as_slice()
        );

        let bundles = api
            .fetch_x509_bundles(with_header(X509BundlesRequest {}))
            .await
            .unwrap()
            .into_inner()
            .message()
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            bundles.bundles.keys().collect::<Vec<_>>(),
            [&format!("spiffe://{TD}")]
        );

        // JWT-SVID: audience required; minted by the issuer, validated here
        let no_audience = api
            .fetch_jwtsvid(with_header(JwtsvidRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(no_audience.code(), tonic::Code::InvalidArgument);
        let jwt = api
            .fetch_jwtsvid(with_header(JwtsvidRequest {
                audience: vec!["payments".into()],
                spiffe_id: String::new(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(jwt.svids[0].spiffe_id, svid.spiffe_id);
        let validated = api
            .validate_jwtsvid(with_header(ValidateJwtsvidRequest {
                audience: "payments".into(),
                svid: jwt.svids[0].svid.clone(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(validated.spiffe_id, svid.spiffe_id);
        let aud = &validated.claims.unwrap().fields["aud"];
        assert!(
            matches!(&aud.kind, Some(prost_types::value::Kind::ListValue(l)) if l.values.len() == 1),
            "{aud:?}"
        );
        let wrong = api
            .validate_jwtsvid(with_header(ValidateJwtsvidRequest {
                audience: "other".into(),
                svid: jwt.svids[0].svid.clone(),
            }))
            .await
            .unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::InvalidArgument);

        // the Rust `spiffe` crate (a client no one here wrote) sees the same
        let rust_client = spiffe::workload_api::WorkloadApiClient::connect_to(format!(
            "unix:{}",
            socket.display()
        ))
        .await
        .unwrap();
        let rust_svid = rust_client.fetch_x509_svid().await.unwrap();
        assert_eq!(rust_svid.spiffe_id().to_string(), svid.spiffe_id);
        let rust_bundles = rust_client.fetch_x509_bundles().await.unwrap();
        assert!(
            rust_bundles
                .get(&spiffe::TrustDomain::new(TD).unwrap())
                .is_some()
        );
        let rust_jwt = rust_client
            .fetch_jwt_svid(["payments"], None)
            .await
            .unwrap();
        assert_eq!(rust_jwt.spiffe_id().to_string(), svid.spiffe_id);
        let checked = rust_client
            .validate_jwt_token("payments", rust_jwt.token())
            .await
            .unwrap();
        assert_eq!(checked.spiffe_id().to_string(), svid.spiffe_id);

        // the pod leaves: the open stream ends with PermissionDenied, new calls too
        write_workloads(&workloads, vec![]);
        let ended = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .unwrap();
        assert_eq!(ended.unwrap_err().code(), tonic::Code::PermissionDenied);
        let denied = api
            .fetch_x509svid(with_header(X509svidRequest {}))
            .await
            .unwrap_err();
        assert_eq!(
            (denied.code(), denied.message()),
            (tonic::Code::PermissionDenied, "no identity issued")
        );
        server.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn local_processes_get_identities_by_unix_selectors() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = start_issuer(dir.path());
        let token = node_token(&issuer);
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned();
        let exe = std::env::current_exe().unwrap();
        for (id, selectors) in [
            (
                "local/me",
                vec![
                    format!("unix:uid:{uid}"),
                    format!("unix:path:{}", exe.display()),
                ],
            ),
            ("local/someone-else", vec!["unix:uid:4242".to_owned()]),
        ] {
            let spiffe_id = format!("spiffe://{TD}/{id}");
            let node_id = format!("spiffe://{TD}/node/node-1");
            let mut args = vec![
                "entry",
                "create",
                "-spiffeID",
                &spiffe_id,
                "-parentID",
                &node_id,
            ];
            for s in &selectors {
                args.extend(["-selector", s.as_str()]);
            }
            issuer.cli_json(&args);
        }
        write_workloads(&dir.path().join("workloads.yaml"), vec![]);
        let config = config(dir.path(), &issuer, &token);
        let mut handle = meshward::agent::start(&config).unwrap();
        wait_for(&mut handle, "the local identity", |s| !s.local.is_empty()).await;
        let (socket, server) = serve_workload_api(dir.path(), &handle).await;
        let mut api = client(&socket).await;
        let mut stream = api
            .fetch_x509svid(with_header(X509svidRequest {}))
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().unwrap();
        let got: Vec<&str> = first.svids.iter().map(|s| s.spiffe_id.as_str()).collect();
        assert_eq!(
            got,
            [format!("spiffe://{TD}/local/me").as_str()],
            "only the entry whose every selector matches"
        );
        server.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_source_watches_the_pods_of_this_node() {
    use meshward_test_support::kube_api::{FakeKubeApi, FakePod};
    let dir = tempfile::tempdir().unwrap();
    let api = FakeKubeApi::start(dir.path()).await;
    let fake = |name: &str, node: &str, ip: &str, sa: &str| FakePod {
        namespace: "default".into(),
        name: name.into(),
        uid: format!("{name}-uid"),
        node_name: node.into(),
        service_account: sa.into(),
        ip: ip.into(),
        image: "example.com/app:1".into(),
        ..Default::default()
    };
    api.add_pod(fake("curl", "node-1", "10.40.1.2", "curl-spire"));
    api.add_pod(fake("elsewhere", "node-2", "10.40.2.2", "curl-spire"));
    api.add_pod(fake("pending", "node-1", "", "curl-spire"));
    let issuer = start_issuer(dir.path());
    let token = node_token(&issuer);
    curl_spire_entry(&issuer);
    std::fs::write(dir.path().join("bundle.pem"), issuer.bundle_pem()).unwrap();
    let yaml = format!(
        "trust_domain: {TD}\nagent:\n  issuer_address: {}\n  trust_bundle_path: {}\n  data_dir: {}\n  join_token: {}\n  workloads:\n    kubernetes:\n      node_name: node-1\n      api_server: {}\n      api_ca_path: {}\n      api_token_path: {}\n  sync_interval: 1s\n",
        issuer.agent,
        dir.path().join("bundle.pem").display(),
        dir.path().join("agent").display(),
        &token,
        api.url(),
        api.ca_file().display(),
        api.token_file().display()
    );
    let config = ProxyConfig::from_yaml(&yaml, "proxy.yaml").unwrap();
    let mut handle = meshward::agent::start(&config).unwrap();
    // listed: only this node's running pod
    let snapshot = wait_for(&mut handle, "curl from the pod list", |s| {
        !ids(s, "10.40.1.2").is_empty()
    })
    .await;
    assert_eq!(
        snapshot.pods.len(),
        1,
        "{:?}",
        snapshot.pods.keys().collect::<Vec<_>>()
    );
    // watched: a new pod gets its IP, the first one is deleted
    api.add_pod(fake("pending", "node-1", "10.40.1.9", "curl-spire"));
    wait_for(&mut handle, "the pod that got an IP", |s| {
        !ids(s, "10.40.1.9").is_empty()
    })
    .await;
    api.remove_pod("default", "curl");
    wait_for(&mut handle, "the deleted pod forgotten", |s| {
        !s.pods.contains_key(&"10.40.1.2".parse::<IpAddr>().unwrap())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_attests_with_its_projected_service_account_token() {
    use meshward_test_support::kube_api::FakeKubeApi;
    let dir = tempfile::tempdir().unwrap();
    let api = FakeKubeApi::start(dir.path()).await;
    let agent_pod = api.add_agent_pod("node-1", "node-uid-1", "meshward-node-1", "agent-pod-uid");
    let issuer = IssuerProcess::with_extra(
        Path::new(env!("CARGO_BIN_EXE_meshward")),
        TD,
        dir.path(),
        &sqlite_url(dir.path()),
        &api.issuer_psat_yaml(),
    );
    // a node alias: every node of cluster eks may serve the curl-spire entry
    let alias = format!("spiffe://{TD}/cluster/eks");
    issuer.cli_json(&[
        "entry",
        "create",
        "-node",
        "-spiffeID",
        &alias,
        "-selector",
        "k8s_psat:cluster:eks",
    ]);
    issuer.cli_json(&[
        "entry",
        "create",
        "-spiffeID",
        &format!("spiffe://{TD}/ns/default/sa/curl-spire"),
        "-parentID",
        &alias,
        "-selector",
        "k8s:sa:curl-spire",
    ]);
    let token_path = dir.path().join("psat-token");
    std::fs::write(
        &token_path,
        api.service_account_token(&agent_pod, "meshward-issuer", Duration::from_secs(600)),
    )
    .unwrap();
    std::fs::write(dir.path().join("bundle.pem"), issuer.bundle_pem()).unwrap();
    write_workloads(
        &dir.path().join("workloads.yaml"),
        vec![pod("curl", "default", "curl-spire", "10.40.1.2", &[])],
    );
    let yaml = format!(
        "trust_domain: {TD}\nagent:\n  issuer_address: {}\n  trust_bundle_path: {}\n  data_dir: {}\n  k8s_psat:\n    cluster: eks\n    token_path: {}\n  workloads:\n    file: {}\n  sync_interval: 1s\n",
        issuer.agent,
        dir.path().join("bundle.pem").display(),
        dir.path().join("agent").display(),
        token_path.display(),
        dir.path().join("workloads.yaml").display()
    );
    let config = ProxyConfig::from_yaml(&yaml, "proxy.yaml").unwrap();
    let mut handle = meshward::agent::start(&config).unwrap();
    let snapshot = wait_for(&mut handle, "the SVID through the node alias", |s| {
        !ids(s, "10.40.1.2").is_empty()
    })
    .await;
    assert_eq!(
        snapshot.node_id,
        format!("spiffe://{TD}/spire/agent/k8s_psat/eks/node-uid-1")
    );
    assert_eq!(
        ids(&snapshot, "10.40.1.2"),
        [format!("spiffe://{TD}/ns/default/sa/curl-spire")]
    );

    // evicted: a PSAT node attests again by itself (re-reading its token)
    issuer.cli_json(&["agent", "evict", "-spiffeID", &snapshot.node_id]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let agents = issuer.cli_json(&["agent", "list"]);
        if agents["agents"].as_array().is_some_and(|a| a.len() == 1) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent did not attest again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
