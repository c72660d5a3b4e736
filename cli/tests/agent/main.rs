//! The agent against a real issuer process: attestation with a join token, SVIDs
//! for exactly the pods an entry or a template grants, published as snapshots;
//! pods that leave lose their SVIDs; an issuer outage leaves the served SVIDs in
//! place; an agent restart reuses its node SVID (the join token is already used).
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshward_proxy::agent::{AgentHandle, Snapshot};
use meshward_proxy::config::{PodInfo, ProxyConfig, WorkloadsFile};
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
    config_at(dir, issuer, token, issuer.agent)
}

/// [`config`] with the issuer reached at `address` (a [`TcpProxy`] in front of it).
///
/// [`TcpProxy`]: meshward_test_support::tcp_proxy::TcpProxy
fn config_at(
    dir: &Path,
    issuer: &IssuerProcess,
    token: &str,
    address: std::net::SocketAddr,
) -> ProxyConfig {
    std::fs::write(dir.join("bundle.pem"), issuer.bundle_pem()).unwrap();
    let yaml = format!(
        "trust_domain: {TD}\nagent:\n  issuer_address: {}\n  trust_bundle_path: {}\n  data_dir: {}\n  join_token: {token}\n  workloads:\n    file: {}\n  sync_interval: 1s\n",
        address,
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
    curl_spire_entry_with(issuer, &[]);
}

/// [`curl_spire_entry`] with more `entry create` flags (e.g. `-x509SVIDTTL`).
fn curl_spire_entry_with(issuer: &IssuerProcess, flags: &[&str]) {
    let id = format!("spiffe://{TD}/ns/default/sa/curl-spire");
    let parent = format!("spiffe://{TD}/node/node-1");
    let mut args = vec![
        "entry",
        "create",
        "-spiffeID",
        &id,
        "-parentID",
        &parent,
        "-selector",
        "k8s:sa:curl-spire",
    ];
    args.extend_from_slice(flags);
    issuer.cli_json(&args);
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
        async move { meshward_proxy::workload_api::serve(&socket, handle).await }
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
/// Where a Kubernetes API is, and the token that reads it.
struct KubeApi<'a> {
    url: &'a str,
    ca_file: &'a Path,
    token_file: &'a Path,
}

/// An issuer with curl-spire's entry, and an agent for node-1 (attested with a
/// join token) whose workloads are the pods `api` lists for node-1.
fn agent_on_kubernetes(dir: &Path, api: &KubeApi<'_>) -> (IssuerProcess, AgentHandle) {
    let issuer = start_issuer(dir);
    let token = node_token(&issuer);
    curl_spire_entry(&issuer);
    std::fs::write(dir.join("bundle.pem"), issuer.bundle_pem()).unwrap();
    let yaml = format!(
        "trust_domain: {TD}\nagent:\n  issuer_address: {}\n  trust_bundle_path: {}\n  data_dir: {}\n  join_token: {}\n  workloads:\n    kubernetes:\n      node_name: node-1\n      api_server: {}\n      api_ca_path: {}\n      api_token_path: {}\n  sync_interval: 1s\n",
        issuer.agent,
        dir.join("bundle.pem").display(),
        dir.join("agent").display(),
        &token,
        api.url,
        api.ca_file.display(),
        api.token_file.display()
    );
    let config = ProxyConfig::from_yaml(&yaml, "proxy.yaml").unwrap();
    let handle = meshward_proxy::agent::start(&config).unwrap();
    (issuer, handle)
}

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
        .map(|p| p.svids.iter().map(|s| s.spiffe_id.to_string()).collect())
        .unwrap_or_default()
}

mod identities;
mod real_kubernetes;
mod workload_api;
