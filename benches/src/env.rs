//! The benchmark's world: two nodes with meshward daemons, a client pod on
//! node-1 and a server pod on node-2, the server's apps on a meshed port and on a
//! port capture leaves alone (direct), and the peer: an nginx mTLS pair (client
//! nginx on node-1 tunnelling TCP in TLS to a server nginx on node-2) using the
//! same SVIDs; and, when its binary is here, the ztunnel pair (`ztunnel.rs`).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use meshward_integration::{Mesh, MeshSpec, PodSpec, Process, exec, wait_for_port};

use crate::ztunnel::{self, ZtunnelPair};

const TD: &str = "bench.example.com";
/// Meshed ports on the server pod, and their direct twins (excluded from capture).
pub(crate) const HTTP: u16 = 8080;
pub(crate) const HTTP_DIRECT: u16 = 8081;
pub(crate) const ECHO: u16 = 9000;
pub(crate) const ECHO_DIRECT: u16 = 9001;
pub(crate) const BULK: u16 = 5201;
pub(crate) const BULK_DIRECT: u16 = 5202;
/// The server nginx's TLS ports (on node-2's address): stream for echo and bulk,
/// http for the L7 path.
const PEER_TLS_ECHO: u16 = 19001;
const PEER_TLS_BULK: u16 = 15202;
const PEER_TLS_HTTP: u16 = 18081;

/// Who is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum Variant {
    Direct,
    Meshward,
    Nginx,
    /// Istio ambient's ztunnel pair (optional: `ztunnel.rs`).
    Ztunnel,
}

impl Variant {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Meshward => "meshward",
            Self::Nginx => "nginx mTLS",
            Self::Ztunnel => "ztunnel",
        }
    }
}

pub(crate) struct Env {
    pub(crate) mesh: Mesh,
    _apps: Vec<Process>,
    _nginx: Vec<Process>,
    pub(crate) server_ip: IpAddr,
    pub(crate) node1_ip: IpAddr,
    pub(crate) node2_ip: IpAddr,
    /// The client pod's SVID files (svid.0.pem, svid.0.key, bundle.0.pem).
    pub(crate) client_svid: PathBuf,
    /// HBONE's key exchange groups, as the daemons were given them.
    pub(crate) key_exchange: Vec<meshward_tls::KeyExchangeGroup>,
    /// The ztunnel pair and its client pod, when measured.
    pub(crate) ztunnel: Option<(ZtunnelPair, meshward_integration::Netns)>,
}

impl Env {
    /// Two nodes whose daemons run `worker_threads` runtime threads each.
    pub(crate) fn start(
        bin: &Path,
        worker_threads: usize,
        key_exchange: &[meshward_tls::KeyExchangeGroup],
        pool_idle_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let groups: Vec<String> = key_exchange.iter().map(|g| format!("{g:?}")).collect();
        let mut spec = MeshSpec::new(TD, &["node-1", "node-2"]);
        spec.pod(
            "node-1",
            PodSpec::new("client").service_account("curl-spire"),
            true,
        )
        .pod(
            "node-2",
            PodSpec::new("server")
                .namespace("echoserver")
                .label("app", "bench"),
            true,
        )
        .exclude_ports(&[HTTP_DIRECT, ECHO_DIRECT, BULK_DIRECT])
        // the daemon's default level: the tests' `access=debug` logs every allowed
        // request, which was 10% of the daemons' CPU in the HTTP/1.1 profile
        .log("info")
        .proxy_yaml(&format!(
            "worker_threads: {worker_threads}\ninbound:\n  ports: {{{ECHO}: tcp, {BULK}: tcp, {HTTP}: http}}\nhbone:\n  key_exchange: [{}]\nlimits:\n  pool_idle_timeout: {}s\n",
            groups.join(", "),
            pool_idle_timeout.as_secs()
        ));
        let mesh = Mesh::start(bin, spec).context("starting the mesh")?;
        mesh.apply_policy(
            "bench",
            &format!(
                "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: bench, namespace: echoserver}}\nspec:\n  selector: {{matchLabels: {{app: bench}}}}\n  rules:\n  - from: [{{source: {{principals: [\"{TD}/ns/default/sa/curl-spire\"]}}}}]\n    to: [{{operation: {{ports: [\"{ECHO}\", \"{BULK}\"]}}}}]\n  - from: [{{source: {{principals: [\"{TD}/ns/default/sa/curl-spire\"]}}}}]\n    to: [{{operation: {{methods: [GET], paths: [\"/bench/*\"]}}}}]\n"
            ),
        )?;
        mesh.wait_for_policy_count(1)
            .context("the bench policy in force")?;
        let bin_str = bin.display().to_string();
        let mut apps = Vec::new();
        for (args, port) in [
            (vec!["echoserver", "--listen"], HTTP),
            (vec!["echoserver", "--listen"], HTTP_DIRECT),
            (vec!["echoserver", "--tcp", "--listen"], ECHO),
            (vec!["echoserver", "--tcp", "--listen"], ECHO_DIRECT),
        ] {
            let listen = format!("0.0.0.0:{port}");
            let mut args = args.clone();
            args.push(&listen);
            apps.push(mesh.cluster.spawn_in_pod("server", &bin_str, &args)?);
        }
        for port in [BULK, BULK_DIRECT] {
            apps.push(mesh.cluster.spawn_in_pod(
                "server",
                "iperf3",
                &["-s", "-p", &port.to_string()],
            )?);
        }
        let server = mesh.cluster.pod("server")?;
        let server_ip = server.ip();
        for port in [HTTP, HTTP_DIRECT, ECHO, ECHO_DIRECT, BULK, BULK_DIRECT] {
            wait_for_port(
                server.netns(),
                SocketAddr::new(server_ip, port),
                Duration::from_secs(10),
            )?;
        }
        let node1_ip = IpAddr::V4(mesh.cluster.node("node-1")?.underlay_ip());
        let node2_ip = IpAddr::V4(mesh.cluster.node("node-2")?.underlay_ip());
        let dir = mesh.cluster.log_dir().to_owned();
        let client_svid = fetch_svid(&mesh, bin, "client", "node-1", &dir.join("client-svid"))?;
        let server_svid = fetch_svid(&mesh, bin, "server", "node-2", &dir.join("server-svid"))?;
        let nginx = start_nginx_pair(
            &mesh,
            &dir,
            &client_svid,
            &server_svid,
            server_ip,
            node1_ip,
            node2_ip,
        )?;
        Ok(Self {
            mesh,
            _apps: apps,
            _nginx: nginx,
            server_ip,
            node1_ip,
            node2_ip,
            client_svid,
            key_exchange: key_exchange.to_vec(),
            ztunnel: None,
        })
    }

    /// Lets every namespace of both topologies reuse a port in TIME_WAIT for a
    /// new connection (`net.ipv4.tcp_tw_reuse`, per namespace; 2, loopback only,
    /// by default). Without it the figures that open tens of thousands of
    /// connections (new connections, memory, churn) exhaust the 28,000 ephemeral
    /// ports of the side that closes first, and measure the client's port search
    /// rather than the proxies. The same for every variant.
    pub(crate) fn reuse_time_wait_ports(&self) -> anyhow::Result<()> {
        let ztunnel = self
            .ztunnel
            .as_ref()
            .map_or(&[][..], |_| &ztunnel::NAMESPACES[..]);
        for name in self
            .mesh
            .cluster
            .namespaces()
            .into_iter()
            .chain(ztunnel.iter().copied())
        {
            meshward_integration::Netns::existing(name)
                .sysctl("net.ipv4.tcp_tw_reuse", "1")
                .with_context(|| format!("tcp_tw_reuse in {name}"))?;
        }
        Ok(())
    }

    /// Where the client connects for `port`'s service, per variant.
    pub(crate) fn target(&self, variant: Variant, meshed_port: u16) -> SocketAddr {
        let direct_port = match meshed_port {
            HTTP => HTTP_DIRECT,
            ECHO => ECHO_DIRECT,
            _ => BULK_DIRECT,
        };
        match variant {
            Variant::Direct => SocketAddr::new(self.server_ip, direct_port),
            Variant::Meshward => SocketAddr::new(self.server_ip, meshed_port),
            // the client nginx listens on node-1 with the direct port numbers
            Variant::Nginx => SocketAddr::new(self.node1_ip, direct_port),
            // the same ports on the ztunnel topology's server pod
            Variant::Ztunnel => SocketAddr::new(ZtunnelPair::server_ip(), meshed_port),
        }
    }

    /// The processes doing the proxying for a variant (both nodes).
    /// The last `lines` lines of each daemon's log, for failure messages.
    pub(crate) fn log_tails(&self, lines: usize) -> String {
        ["node-1", "node-2"]
            .iter()
            .map(|node| {
                let log = self.mesh.daemon_log(node);
                let tail: Vec<&str> = log.lines().rev().take(lines).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- {node} ---\n{}", tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub(crate) fn proxy_pids(&self, variant: Variant) -> Vec<i32> {
        match variant {
            Variant::Direct => Vec::new(),
            Variant::Meshward => ["node-1", "node-2"]
                .iter()
                .filter_map(|n| self.mesh.daemon_pid(n))
                .collect(),
            Variant::Nginx => ["node-1", "node-2"]
                .iter()
                .filter_map(|n| self.mesh.cluster.node(n).ok())
                .flat_map(|n| crate::measure::named(&n.netns().pids(), "nginx"))
                .collect(),
            Variant::Ztunnel => self
                .ztunnel
                .as_ref()
                .map(|(pair, _)| pair.pids())
                .unwrap_or_default(),
        }
    }

    /// meshward's allocator per node (`meshward_allocator_bytes`, averaged over
    /// both nodes): allocated, resident and metadata bytes, or `None` when
    /// unreadable.
    pub(crate) fn meshward_allocator(&self) -> Option<(f64, f64, f64)> {
        let mut sums = (0.0, 0.0, 0.0);
        for node in ["node-1", "node-2"] {
            let ns = self.mesh.cluster.node(node).ok()?.netns();
            let url = "http://127.0.0.1:15020/stats/prometheus";
            let out = exec(ns, "curl", &["-sS", url], Duration::from_secs(10)).ok()?;
            let state = |name: &str| {
                let prefix = format!("meshward_allocator_bytes{{state=\"{name}\"}} ");
                out.stdout
                    .lines()
                    .find_map(|l| l.strip_prefix(&prefix)?.parse::<f64>().ok())
            };
            sums.0 += state("allocated")?;
            sums.1 += state("resident")?;
            sums.2 += state("metadata")?;
        }
        Some((sums.0 / 2.0, sums.1 / 2.0, sums.2 / 2.0))
    }

    /// The mTLS endpoint a handshake benchmark dials, per variant.
    pub(crate) fn handshake_target(&self, variant: Variant) -> Option<SocketAddr> {
        match variant {
            Variant::Direct => None,
            Variant::Meshward => Some(SocketAddr::new(self.server_ip, 15008)),
            Variant::Nginx => Some(SocketAddr::new(self.node2_ip, PEER_TLS_ECHO)),
            // its fake CA trusts no SVID of ours: no handshake figure
            Variant::Ztunnel => None,
        }
    }
}

/// A pod's SVID through the Workload API, written as files.
fn fetch_svid(
    mesh: &Mesh,
    bin: &Path,
    pod: &str,
    node: &str,
    dir: &Path,
) -> anyhow::Result<PathBuf> {
    let socket = mesh.workload_api_socket(node);
    let out = mesh.cluster.exec_in_pod(
        pod,
        &bin.display().to_string(),
        &[
            "api",
            "fetch",
            "x509",
            "-socketPath",
            &socket.display().to_string(),
            "-write",
            &dir.display().to_string(),
            "-silent",
        ],
        Duration::from_secs(30),
    )?;
    if out.code != Some(0) {
        bail!("fetching {pod}'s SVID: {}", out.stderr);
    }
    Ok(dir.to_owned())
}

/// The peer: a client nginx on node-1 (TCP in, TLS with the client's SVID out)
/// and a server nginx on node-2 (mTLS in, verifying against the bundle; plain to
/// the pod; the HTTP port also checks method and path and sets XFCC, as an L7
/// proxy must). nginx cannot check SPIFFE IDs, and the client side does not verify
/// the server's chain (an SVID has no DNS name to verify against): the peer does
/// less work than meshward.
fn start_nginx_pair(
    mesh: &Mesh,
    dir: &Path,
    client: &Path,
    server: &Path,
    server_ip: IpAddr,
    node1: IpAddr,
    node2: IpAddr,
) -> anyhow::Result<Vec<Process>> {
    let common = "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\nworker_processes auto;\nworker_rlimit_nofile 65536;\nerror_log stderr warn;\nevents { worker_connections 30000; }\n";
    let client_conf = format!(
        "{common}stream {{\n  proxy_ssl on;\n  proxy_ssl_protocols TLSv1.3;\n  proxy_ssl_certificate {c}/svid.0.pem;\n  proxy_ssl_certificate_key {c}/svid.0.key;\n  proxy_ssl_verify off;\n  server {{ listen {node1}:{ECHO_DIRECT}; proxy_pass {node2}:{PEER_TLS_ECHO}; }}\n  server {{ listen {node1}:{BULK_DIRECT}; proxy_pass {node2}:{PEER_TLS_BULK}; }}\n  server {{ listen {node1}:{HTTP_DIRECT}; proxy_pass {node2}:{PEER_TLS_HTTP}; }}\n}}\n",
        c = client.display()
    );
    let tls = format!(
        "ssl_protocols TLSv1.3;\n  ssl_certificate {s}/svid.0.pem;\n  ssl_certificate_key {s}/svid.0.key;\n  ssl_client_certificate {s}/bundle.0.pem;\n  ssl_verify_client on;\n",
        s = server.display()
    );
    let server_conf = format!(
        "{common}stream {{\n  {tls}  server {{ listen {node2}:{PEER_TLS_ECHO} ssl; proxy_pass {server_ip}:{ECHO_DIRECT}; }}\n  server {{ listen {node2}:{PEER_TLS_BULK} ssl; proxy_pass {server_ip}:{BULK_DIRECT}; }}\n}}\nhttp {{\n  access_log off;\n  upstream app {{ server {server_ip}:{HTTP_DIRECT}; keepalive 64; }}\n  server {{\n    listen {node2}:{PEER_TLS_HTTP} ssl;\n    {tls}    location /bench/ {{\n      limit_except GET {{ deny all; }}\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_set_header X-Forwarded-Client-Cert \"Hash=$ssl_client_fingerprint;Subject=\\\"$ssl_client_s_dn\\\"\";\n      proxy_pass http://app;\n    }}\n    location / {{ return 403 \"RBAC: access denied\"; }}\n  }}\n}}\n"
    );
    let mut processes = Vec::new();
    for (node, name, conf) in [
        ("node-2", "nginx-server", server_conf),
        ("node-1", "nginx-client", client_conf),
    ] {
        let prefix = dir.join(name);
        std::fs::create_dir_all(prefix.join("logs"))?;
        let file = prefix.join("nginx.conf");
        std::fs::write(&file, conf)?;
        let test = exec(
            mesh.cluster.node(node)?.netns(),
            "nginx",
            &[
                "-t",
                "-q",
                "-p",
                &prefix.display().to_string(),
                "-c",
                &file.display().to_string(),
            ],
            Duration::from_secs(10),
        )?;
        if test.code != Some(0) {
            bail!("nginx rejects {}: {}", file.display(), test.stderr);
        }
        processes.push(Process::spawn(
            mesh.cluster.node(node)?.netns(),
            name,
            "nginx",
            &[
                "-p",
                &prefix.display().to_string(),
                "-c",
                &file.display().to_string(),
                "-g",
                "daemon off; pid nginx.pid;",
            ],
            &[],
            dir,
        )?);
    }
    wait_for_port(
        mesh.cluster.node("node-1")?.netns(),
        SocketAddr::new(node1, ECHO_DIRECT),
        Duration::from_secs(10),
    )?;
    Ok(processes)
}
