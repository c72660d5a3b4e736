//! A real Kubernetes control plane for tests: etcd and kube-apiserver on loopback,
//! built from their Go modules by `scripts/peers.sh`.
//!
//! What it sets up, as a cluster installer would: a CA of its own signing the API
//! server's serving certificate and the client certificates (the client CA), an
//! admin client certificate in `system:masters` (used by `kubectl` through
//! [`ControlPlane::kubeconfig`]), a static admin bearer token for meshward's
//! `api_token_path` (bootstrap only: [`ControlPlane::service_account_token`] mints
//! real ServiceAccount tokens through the TokenRequest API), service-account signing
//! keys, `--authorization-mode=Node,RBAC`, and meshward's CRDs
//! (`docker/k8s/base/crds.yaml`) applied and Established. Everything listens on
//! 127.0.0.1 only; data lives in a temporary directory.
//!
//! [`shared`] gives one instance per test binary; [`own`] one of a
//! test's own, stopped on drop. etcd and kube-apiserver run in a process group of
//! their own, watched by a guardian (`guarded.rs`), so they stop however the test
//! process ends. The binaries are found through `MESHWARD_ETCD`,
//! `MESHWARD_KUBE_APISERVER`, `MESHWARD_KUBECTL` (and `MESHWARD_ETCDCTL`, and
//! `MESHWARD_HELM` for the chart's tests: [`with_helm`]), or else the `env` file
//! `scripts/peers.sh` writes in its cache ([`crate::peers`]). Without them,
//! [`shared`] prints `SKIPPED` and returns `None`; in CI (`CI=true`) it panics
//! instead.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::daemon::{free_port, http_get};
use crate::guarded::{new_dir, remove_stale_dirs, spawn, spawn_guardian, wait_output};
use crate::peers;

/// The variables naming the binaries (as `scripts/peers.sh` prints them).
pub const ETCD_VAR: &str = "MESHWARD_ETCD";
pub const ETCDCTL_VAR: &str = "MESHWARD_ETCDCTL";
pub const KUBE_APISERVER_VAR: &str = "MESHWARD_KUBE_APISERVER";
pub const KUBECTL_VAR: &str = "MESHWARD_KUBECTL";
/// Helm, for the chart's tests (not needed by the control plane itself).
pub const HELM_VAR: &str = "MESHWARD_HELM";
pub use crate::peers::PEERS_CACHE_VAR;

/// How long each step of the start may take.
const ETCD_READY: Duration = Duration::from_secs(30);
const APISERVER_READY: Duration = Duration::from_secs(90);
const CRDS_ESTABLISHED: Duration = Duration::from_secs(60);
/// Any single kubectl run.
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(60);

const DIR_PREFIX: &str = "meshward-control-plane-";

#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error("{0} is not set and {1} has no such line (run scripts/peers.sh)")]
    MissingBinary(&'static str, String),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("certificates: {0}")]
    Certificates(#[from] rcgen::Error),
    #[error("{what} exited ({status}) before it was ready; its log:\n{log}")]
    Exited {
        what: &'static str,
        status: String,
        log: String,
    },
    #[error("{what} not ready after {after:?}; its log:\n{log}")]
    NotReady {
        what: &'static str,
        after: Duration,
        log: String,
    },
    #[error("kubectl {args}: {status}\n{stderr}")]
    Kubectl {
        args: String,
        status: String,
        stderr: String,
    },
    #[error("kubectl {0} did not finish within {1:?}")]
    KubectlTimeout(String, Duration),
}

impl ControlPlaneError {
    fn port_was_taken(&self) -> bool {
        matches!(self, Self::Exited { log, .. } if log.contains("address already in use"))
    }
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> ControlPlaneError {
    let what = what.to_string();
    move |e| ControlPlaneError::Io(what, e)
}

/// The binaries the control plane runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub etcd: PathBuf,
    pub etcdctl: Option<PathBuf>,
    pub kube_apiserver: PathBuf,
    pub kubectl: PathBuf,
    pub helm: Option<PathBuf>,
}

impl Binaries {
    /// From the environment, or else from the peers cache's `env` file
    /// ([`crate::peers::find`]).
    pub fn find() -> Result<Self, ControlPlaneError> {
        let lookup =
            |var| peers::find(var).map_err(|e| ControlPlaneError::MissingBinary(e.var, e.env_file));
        Ok(Self {
            etcd: lookup(ETCD_VAR)?,
            etcdctl: lookup(ETCDCTL_VAR).ok(),
            kube_apiserver: lookup(KUBE_APISERVER_VAR)?,
            kubectl: lookup(KUBECTL_VAR)?,
            helm: lookup(HELM_VAR).ok(),
        })
    }
}

/// etcd and kube-apiserver on loopback, with what a client needs to reach them.
pub struct ControlPlane {
    binaries: Binaries,
    dir: PathBuf,
    url: String,
    etcd_url: String,
    ca_file: PathBuf,
    admin_token_file: PathBuf,
    admin_cert_file: PathBuf,
    admin_key_file: PathBuf,
    kubeconfig: PathBuf,
    client_ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    etcd: Option<Child>,
    apiserver: Option<Child>,
    apiserver_args: Vec<String>,
    /// The process group of etcd and kube-apiserver.
    group: u32,
    /// Its closing (drop, or the end of the test process) stops them.
    guardian: Option<ChildStdin>,
    /// How long [`ControlPlane::start`] took.
    pub started_in: Duration,
    /// Whether [`ControlPlane::apply_shipped_rbac`] has been done (once per plane:
    /// two applies at once could both try to create an object).
    rbac_applied: std::sync::Mutex<bool>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("url", &self.url)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

static SHARED: OnceLock<Option<ControlPlane>> = OnceLock::new();

/// The binaries, or `None` after printing `SKIPPED <test>` (a panic in CI).
fn binaries_or_skip(test: &str) -> Option<Binaries> {
    peers::or_skip(test, "real control plane", Binaries::find())
}

/// The binaries and helm, for a test of the chart; `None` after printing
/// `SKIPPED <test>` when one is missing (a panic in CI, as for [`shared`]).
pub fn with_helm(test: &str) -> Option<(Binaries, PathBuf)> {
    let binaries = binaries_or_skip(test)?;
    match binaries.helm.clone() {
        Some(helm) => Some((binaries, helm)),
        None if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!(
                "{test}: no {HELM_VAR}; CI must run the chart's tests (scripts/peers.sh builds helm)"
            )
        }
        None => {
            eprintln!("SKIPPED {test}: no {HELM_VAR} (run scripts/peers.sh)");
            None
        }
    }
}

/// A control plane of the test's own (to stop, restart or break), stopped on
/// drop; `None` as for [`shared`]. Panics when it cannot start.
pub fn own(test: &str) -> Option<ControlPlane> {
    let binaries = binaries_or_skip(test)?;
    match ControlPlane::start_with(binaries) {
        Ok(plane) => Some(plane),
        Err(e) => panic!("{test}: the control plane did not start: {e}"),
    }
}

/// The control plane of this test binary, started on first use; `None` (after
/// printing `SKIPPED <test>`) when the binaries are missing outside CI. Panics
/// when it cannot start, or in CI when the binaries are missing.
pub fn shared(test: &str) -> Option<&'static ControlPlane> {
    let binaries = binaries_or_skip(test)?;
    let shared = SHARED.get_or_init(|| match ControlPlane::start_with(binaries) {
        Ok(plane) => {
            eprintln!(
                "control plane at {} ready in {:.1?} ({})",
                plane.url,
                plane.started_in,
                plane.dir.display()
            );
            Some(plane)
        }
        Err(e) => {
            eprintln!("{test}: the control plane did not start: {e}");
            None
        }
    });
    match shared {
        Some(plane) => Some(plane),
        None => panic!("{test}: the control plane did not start (see the first test's output)"),
    }
}

impl ControlPlane {
    /// A control plane of its own (not shared), stopped on drop: for a test that
    /// stops, restarts or breaks it.
    pub fn start() -> Result<Self, ControlPlaneError> {
        Self::start_with(Binaries::find()?)
    }

    /// Starts once more on new ports when a port was taken before etcd or
    /// kube-apiserver bound it: one lost race must not fail a whole test binary.
    fn start_with(binaries: Binaries) -> Result<Self, ControlPlaneError> {
        match Self::start_once(binaries.clone()) {
            Err(e) if e.port_was_taken() => {
                eprintln!("the control plane starts again on other ports: {e}");
                Self::start_once(binaries)
            }
            result => result,
        }
    }

    fn start_once(binaries: Binaries) -> Result<Self, ControlPlaneError> {
        let started = Instant::now();
        remove_stale_dirs(DIR_PREFIX);
        let dir = new_dir(DIR_PREFIX).map_err(io("a temporary directory"))?;
        let pki = Pki::generate()?;
        let ca_file = dir.join("ca.pem");
        let write = |name: &str, contents: &str| -> Result<PathBuf, ControlPlaneError> {
            let path = dir.join(name);
            std::fs::write(&path, contents).map_err(io(path.display()))?;
            Ok(path)
        };
        write("ca.pem", &pki.ca_pem)?;
        let serving_cert = write("apiserver.pem", &pki.serving_cert_pem)?;
        let serving_key = write("apiserver-key.pem", &pki.serving_key_pem)?;
        let admin_cert_file = write("admin.pem", &pki.admin_cert_pem)?;
        let admin_key_file = write("admin-key.pem", &pki.admin_key_pem)?;
        let sa_key = write("service-accounts-key.pem", &pki.service_account_key_pem)?;
        let sa_public = write("service-accounts.pem", &pki.service_account_public_pem)?;
        let admin_token = random_hex(24)?;
        let admin_token_file = write("admin-token", &admin_token)?;
        let tokens_csv = write(
            "tokens.csv",
            &format!("{admin_token},meshward-test-admin,meshward-test-admin,\"system:masters\"\n"),
        )?;

        let etcd_port = free_port();
        let etcd_peer_port = free_port();
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer_port}");
        let mut plane = Self {
            binaries,
            url: String::new(),
            etcd_url: etcd_url.clone(),
            ca_file,
            admin_token_file,
            admin_cert_file,
            admin_key_file,
            kubeconfig: dir.join("kubeconfig"),
            client_ca: pki.ca,
            etcd: None,
            apiserver: None,
            apiserver_args: Vec::new(),
            group: 0,
            guardian: None,
            started_in: Duration::ZERO,
            rbac_applied: std::sync::Mutex::new(false),
            dir,
        };
        let etcd_data = plane.dir.join("etcd");
        let etcd_args = [
            "--name=meshward-test".to_owned(),
            format!("--data-dir={}", etcd_data.display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=meshward-test={peer_url}"),
            "--log-level=warn".to_owned(),
            // test data: losing it on a crash is fine, waiting for the disk is not
            "--unsafe-no-fsync".to_owned(),
        ];
        let etcd = spawn(
            &plane.binaries.etcd,
            &etcd_args,
            &plane.dir.join("etcd.log"),
            0,
        )
        .map_err(io(plane.binaries.etcd.display()))?;
        plane.group = etcd.id();
        plane.etcd = Some(etcd);
        plane.guardian = Some(
            spawn_guardian(plane.group, &plane.dir).map_err(io("the control plane's guardian"))?,
        );
        let etcd_addr = ([127, 0, 0, 1], etcd_port).into();
        plane.wait("etcd", ETCD_READY, |_| {
            http_get(etcd_addr, "/health")
                .is_some_and(|(s, body)| s == 200 && body.contains("true"))
        })?;

        let port = free_port();
        plane.url = format!("https://127.0.0.1:{port}");
        let apiserver_args = [
            "--bind-address=127.0.0.1".to_owned(),
            "--advertise-address=127.0.0.1".to_owned(),
            // the `kubernetes` Service's endpoints may not be a loopback address, and
            // nothing here reaches the API server through that Service
            "--endpoint-reconciler-type=none".to_owned(),
            format!("--secure-port={port}"),
            format!("--cert-dir={}", plane.dir.join("certs").display()),
            format!("--etcd-servers={etcd_url}"),
            format!("--tls-cert-file={}", serving_cert.display()),
            format!("--tls-private-key-file={}", serving_key.display()),
            format!("--client-ca-file={}", plane.ca_file.display()),
            format!("--token-auth-file={}", tokens_csv.display()),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_owned(),
            format!("--service-account-key-file={}", sa_public.display()),
            format!("--service-account-signing-key-file={}", sa_key.display()),
            "--authorization-mode=Node,RBAC".to_owned(),
            "--enable-admission-plugins=NodeRestriction".to_owned(),
            "--service-cluster-ip-range=10.96.0.0/16".to_owned(),
            "--allow-privileged=true".to_owned(),
            "--profiling=false".to_owned(),
        ];
        plane.apiserver_args = apiserver_args.to_vec();
        plane.write_kubeconfig()?;
        plane.start_apiserver()?;
        let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/k8s/base/crds.yaml");
        let crds = crds.display().to_string();
        plane.kubectl(&["apply", "-f", &crds])?;
        let timeout = format!("--timeout={}s", CRDS_ESTABLISHED.as_secs());
        plane.kubectl_for(
            &["wait", "--for=condition=Established", &timeout, "-f", &crds],
            None,
            CRDS_ESTABLISHED + Duration::from_secs(5),
        )?;
        plane.started_in = started.elapsed();
        Ok(plane)
    }

    /// Starts kube-apiserver (again, after [`ControlPlane::stop_apiserver`]: the
    /// same port, etcd and keys) and waits until it is ready.
    pub fn start_apiserver(&mut self) -> Result<(), ControlPlaneError> {
        self.stop_apiserver();
        let apiserver = spawn(
            &self.binaries.kube_apiserver,
            &self.apiserver_args,
            &self.dir.join("kube-apiserver.log"),
            self.group,
        )
        .map_err(io(self.binaries.kube_apiserver.display()))?;
        self.apiserver = Some(apiserver);
        self.wait("kube-apiserver", APISERVER_READY, |p| {
            p.kubectl_for(&["get", "--raw=/readyz"], None, Duration::from_secs(5))
                .is_ok_and(|out| out.trim() == "ok")
        })
    }

    /// Kills kube-apiserver (SIGKILL: its connections end without goodbye); etcd
    /// and the data stay. For a control plane of a test's own.
    pub fn stop_apiserver(&mut self) {
        if let Some(mut old) = self.apiserver.take() {
            let _ = old.kill();
            let _ = old.wait();
        }
    }

    /// Compacts etcd's history up to its current revision (as the API server does
    /// every five minutes), so a watch from an older resourceVersion meets
    /// `410 Gone`. Returns the revision.
    pub fn compact_etcd(&self) -> Result<u64, ControlPlaneError> {
        let Some(etcdctl) = &self.binaries.etcdctl else {
            return Err(ControlPlaneError::MissingBinary(
                ETCDCTL_VAR,
                "the peers cache".into(),
            ));
        };
        let endpoints = format!("--endpoints={}", self.etcd_url);
        let run = |args: &[&str]| -> Result<String, ControlPlaneError> {
            let child = Command::new(etcdctl)
                .arg(&endpoints)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(io(etcdctl.display()))?;
            let output = wait_output(child, KUBECTL_TIMEOUT)
                .ok_or_else(|| ControlPlaneError::KubectlTimeout(args.join(" "), KUBECTL_TIMEOUT))?
                .map_err(io("etcdctl"))?;
            if output.status.success() {
                Ok(String::from_utf8_lossy(&output.stdout).into_owned())
            } else {
                Err(ControlPlaneError::Kubectl {
                    args: format!("(etcdctl) {}", args.join(" ")),
                    status: output.status.to_string(),
                    stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
                })
            }
        };
        let status = run(&["endpoint", "status", "--write-out=json"])?;
        let revision = status
            .split("\"revision\":")
            .nth(1)
            .and_then(|rest| {
                rest.split(|c: char| !c.is_ascii_digit())
                    .find(|s| !s.is_empty())
            })
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| ControlPlaneError::Kubectl {
                args: "(etcdctl) endpoint status".into(),
                status: "no revision in its answer".into(),
                stderr: status.clone(),
            })?;
        run(&["compact", &revision.to_string(), "--physical"])?;
        Ok(revision)
    }

    fn write_kubeconfig(&self) -> Result<(), ControlPlaneError> {
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: meshward-test\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: admin\n  user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: meshward-test\n  context: {{cluster: meshward-test, user: admin}}\ncurrent-context: meshward-test\n",
            self.url,
            self.ca_file.display(),
            self.admin_cert_file.display(),
            self.admin_key_file.display()
        );
        std::fs::write(&self.kubeconfig, kubeconfig).map_err(io(self.kubeconfig.display()))
    }

    /// Polls `ready` until it holds, failing early when a process has exited.
    fn wait(
        &mut self,
        what: &'static str,
        timeout: Duration,
        ready: impl Fn(&Self) -> bool,
    ) -> Result<(), ControlPlaneError> {
        let deadline = Instant::now() + timeout;
        loop {
            let exited = crate::guarded::first_exited(&mut [
                ("etcd", &mut self.etcd),
                ("kube-apiserver", &mut self.apiserver),
            ]);
            if let Some((name, status)) = exited {
                return Err(ControlPlaneError::Exited {
                    what: name,
                    status,
                    log: self.log(name),
                });
            }
            if ready(self) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(ControlPlaneError::NotReady {
                    what,
                    after: timeout,
                    log: self.log(what),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines of a process's log (`etcd` or `kube-apiserver`).
    pub fn log(&self, name: &str) -> String {
        let text =
            std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// etcd's client URL (`http://127.0.0.1:<port>`), for `etcdctl`.
    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }

    /// The CA (PEM) of the serving certificate and of client certificates.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// A bearer token file of a user in `system:masters`.
    pub fn admin_token_file(&self) -> &Path {
        &self.admin_token_file
    }

    /// The admin client certificate (`O=system:masters`) and its key.
    pub fn admin_cert_files(&self) -> (&Path, &Path) {
        (&self.admin_cert_file, &self.admin_key_file)
    }

    /// The service-account signing key (PKCS#8 PEM, P-256: ES256), for a test
    /// that must re-sign a real token's claims (e.g. with an expiry already past,
    /// which the TokenRequest API's 10-minute minimum cannot give quickly).
    pub fn service_account_signing_key_file(&self) -> PathBuf {
        self.dir.join("service-accounts-key.pem")
    }

    /// A kubeconfig for `kubectl --kubeconfig` (admin client certificate).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// meshward's `kubernetes:` block (flow YAML) reaching this server as admin.
    pub fn api_yaml(&self) -> String {
        self.api_yaml_with_token(&self.admin_token_file)
    }

    /// meshward's `kubernetes:` block (flow YAML) with another token file.
    pub fn api_yaml_with_token(&self, token_file: &Path) -> String {
        format!(
            "{{api_server: \"{}\", api_ca_path: \"{}\", api_token_path: \"{}\"}}",
            self.url,
            self.ca_file.display(),
            token_file.display()
        )
    }

    /// A client certificate and key (PEM) signed by the client CA, for
    /// `CN=<user>` in `groups` (e.g. `system:node:<name>` in `system:nodes`).
    pub fn client_certificate(
        &self,
        user: &str,
        groups: &[&str],
    ) -> Result<(String, String), ControlPlaneError> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, user);
        for group in groups {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, *group);
        }
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.client_ca)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// `kubectl --kubeconfig <admin> args...`; its stdout, or an error with stderr.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, ControlPlaneError> {
        self.kubectl_for(args, None, KUBECTL_TIMEOUT)
    }

    /// `kubectl ... args...` with `stdin` fed in (e.g. `apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Result<String, ControlPlaneError> {
        self.kubectl_for(args, Some(stdin), KUBECTL_TIMEOUT)
    }

    /// `kubectl apply --server-side -f -` of `yaml`. Server-side: the tests of a
    /// binary share this server and apply the same objects at once, and a
    /// client-side apply looks an object up before creating it, so of two applies
    /// of one new namespace one fails with `AlreadyExists`; the server's apply
    /// creates or updates in one request. Conflicts are forced: every test applies
    /// as one field manager, and the last apply wins as it would client-side.
    pub fn apply(&self, yaml: &str) -> Result<String, ControlPlaneError> {
        self.kubectl_stdin(
            &["apply", "--server-side", "--force-conflicts", "-f", "-"],
            yaml,
        )
    }

    /// A ServiceAccount token from the TokenRequest API (`kubectl create token`),
    /// creating the namespace and the ServiceAccount when missing.
    pub fn service_account_token(
        &self,
        namespace: &str,
        service_account: &str,
        audience: Option<&str>,
        duration: Duration,
    ) -> Result<String, ControlPlaneError> {
        self.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {namespace}}}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {service_account}, namespace: {namespace}}}\n"
        ))?;
        let duration = format!("--duration={}s", duration.as_secs());
        let mut args = vec![
            "create",
            "token",
            service_account,
            "-n",
            namespace,
            &duration,
        ];
        let audience = audience.map(|a| format!("--audience={a}"));
        if let Some(a) = &audience {
            args.push(a);
        }
        Ok(self.kubectl(&args)?.trim().to_owned())
    }

    /// How many watches of `resource` (plural, e.g. `authorizationpolicies`) the
    /// API server has finished serving, by any client (its
    /// `apiserver_request_total` for verb WATCH): for a control plane of a test's
    /// own, whose only watchers are the test's.
    pub fn watches_served(&self, resource: &str) -> Result<u64, ControlPlaneError> {
        let metrics = self.kubectl(&["get", "--raw=/metrics"])?;
        let wanted = format!("resource=\"{resource}\"");
        Ok(metrics
            .lines()
            .filter(|l| {
                l.starts_with("apiserver_request_total{")
                    && l.contains("verb=\"WATCH\"")
                    && l.contains(&wanted)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64)
    }

    /// `kubectl kustomize <dir>`: the rendered objects.
    pub fn kustomize(&self, dir: &Path) -> Result<Vec<serde_json::Value>, ControlPlaneError> {
        let rendered = self.kubectl(&["kustomize", &dir.display().to_string()])?;
        objects(&rendered).map_err(|e| ControlPlaneError::Kubectl {
            args: format!("kustomize {}", dir.display()),
            status: "not YAML".into(),
            stderr: e.to_string(),
        })
    }

    /// The objects of the rendered `docker/k8s/base` that say who the components
    /// are and what they may do ([`RBAC_KINDS`]), and the Namespace they live in:
    /// taken from the rendering, so a test runs under exactly what ships.
    pub fn shipped_rbac(&self) -> Result<Vec<serde_json::Value>, ControlPlaneError> {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/k8s/base");
        Ok(self
            .kustomize(&base)?
            .into_iter()
            .filter(|o| {
                let kind = o["kind"].as_str().unwrap_or_default();
                kind == "Namespace" || RBAC_KINDS.contains(&kind)
            })
            .collect())
    }

    /// [`ControlPlane::shipped_rbac`] applied (once per control plane): then
    /// [`ControlPlane::component_token_file`] gives a component's own token.
    pub fn apply_shipped_rbac(&self) -> Result<(), ControlPlaneError> {
        let mut applied = self
            .rbac_applied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !*applied {
            let list = serde_json::json!({
                "apiVersion": "v1",
                "kind": "List",
                "items": self.shipped_rbac()?,
            });
            self.apply(&list.to_string())?;
            *applied = true;
        }
        Ok(())
    }

    /// A token of ServiceAccount `meshward-system/<service_account>` (one of the
    /// components: `meshward-node`, `meshward-issuer`) from the TokenRequest API,
    /// valid for an hour, after [`ControlPlane::apply_shipped_rbac`]; written to
    /// `<dir>/<service_account>.token`, whose path is returned (for
    /// `api_token_path`, [`ControlPlane::api_yaml_with_token`]).
    pub fn component_token_file(
        &self,
        service_account: &str,
        dir: &Path,
    ) -> Result<PathBuf, ControlPlaneError> {
        self.apply_shipped_rbac()?;
        let token = self.kubectl(&[
            "create",
            "token",
            service_account,
            "-n",
            COMPONENTS_NAMESPACE,
            "--duration=1h",
        ])?;
        let file = dir.join(format!("{service_account}.token"));
        std::fs::write(&file, token.trim()).map_err(io(file.display()))?;
        Ok(file)
    }

    fn kubectl_for(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        timeout: Duration,
    ) -> Result<String, ControlPlaneError> {
        let kubeconfig = format!("--kubeconfig={}", self.kubeconfig.display());
        let mut child = Command::new(&self.binaries.kubectl)
            .arg(&kubeconfig)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io(self.binaries.kubectl.display()))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())
                .map_err(io("kubectl's stdin"))?;
        }
        let output = wait_output(child, timeout)
            .ok_or_else(|| ControlPlaneError::KubectlTimeout(args.join(" "), timeout))?
            .map_err(io("kubectl"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(ControlPlaneError::Kubectl {
                args: args.join(" "),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            })
        }
    }
}

/// The namespace of meshward's components and their ServiceAccounts.
pub const COMPONENTS_NAMESPACE: &str = "meshward-system";

/// The kinds that say who a component is and what it may do.
pub const RBAC_KINDS: [&str; 5] = [
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
];

/// The objects of a multi-document YAML text (a rendered kustomization or chart,
/// a manifest file) as JSON values; empty documents are left out.
pub fn objects(yaml: &str) -> Result<Vec<serde_json::Value>, serde_yaml::Error> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_json::Value::deserialize(doc)?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

/// `<Kind> <namespace>/<name>` (or `<Kind> <name>`), naming an object in messages.
pub fn label(object: &serde_json::Value) -> String {
    let meta = &object["metadata"];
    let ns = meta["namespace"]
        .as_str()
        .map(|n| format!("{n}/"))
        .unwrap_or_default();
    format!(
        "{} {ns}{}",
        object["kind"].as_str().unwrap_or("?"),
        meta["name"].as_str().unwrap_or("?")
    )
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for mut child in [self.apiserver.take(), self.etcd.take()]
            .into_iter()
            .flatten()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        // the guardian, seeing its stdin closed, stops whatever is left and removes
        // the directory (done here too, so it is gone when drop returns)
        self.guardian.take();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn random_hex(bytes: usize) -> Result<String, ControlPlaneError> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(io("/dev/urandom"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The control plane's keys and certificates.
struct Pki {
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_pem: String,
    serving_cert_pem: String,
    serving_key_pem: String,
    admin_cert_pem: String,
    admin_key_pem: String,
    service_account_key_pem: String,
    service_account_public_pem: String,
}

impl Pki {
    fn generate() -> Result<Self, ControlPlaneError> {
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::default();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "meshward test kubernetes CA");
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let ca = rcgen::Issuer::new(ca_params, ca_key);

        let serving_key = rcgen::KeyPair::generate()?;
        let mut serving = rcgen::CertificateParams::new(vec![
            "localhost".to_owned(),
            "kubernetes".to_owned(),
            "kubernetes.default".to_owned(),
            "kubernetes.default.svc".to_owned(),
            "kubernetes.default.svc.cluster.local".to_owned(),
        ])?;
        serving
            .subject_alt_names
            .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        serving
            .subject_alt_names
            .push(rcgen::SanType::IpAddress([10, 96, 0, 1].into()));
        serving
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kube-apiserver");
        serving.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving.signed_by(&serving_key, &ca)?;

        let admin_key = rcgen::KeyPair::generate()?;
        let mut admin = rcgen::CertificateParams::default();
        admin
            .distinguished_name
            .push(rcgen::DnType::CommonName, "meshward-test-admin");
        admin
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:masters");
        admin.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin.signed_by(&admin_key, &ca)?;

        let service_account_key = rcgen::KeyPair::generate()?;
        Ok(Self {
            ca,
            ca_pem: ca_cert.pem(),
            serving_cert_pem: serving_cert.pem(),
            serving_key_pem: serving_key.serialize_pem(),
            admin_cert_pem: admin_cert.pem(),
            admin_key_pem: admin_key.serialize_pem(),
            service_account_key_pem: service_account_key.serialize_pem(),
            service_account_public_pem: service_account_key.public_key_pem(),
        })
    }
}
