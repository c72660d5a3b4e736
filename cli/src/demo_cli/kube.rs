//! `meshward demo --kube`: the same acts against a real control plane, etcd and
//! kube-apiserver as `scripts/peers.sh` builds them, started here on loopback with
//! meshward's CRDs and the RBAC of `docker/k8s/base`. The node daemons watch
//! AuthorizationPolicy and RequestAuthentication as the `meshward-node`
//! ServiceAccount (a TokenRequest token), and every policy change is a `kubectl`
//! command, printed as it is run.
//!
//! What stays the harness's: pods, their addresses and their registration entries
//! (the agent reads its node's pods from a workloads file), and federation, done
//! with the issuer's CLI as an operator would.

use std::path::{Path, PathBuf};

use anyhow::Context;
use meshward_integration::{LoopbackForward, Mesh, MeshSpec};
use meshward_test_support::control_plane::{ControlPlane, ControlPlaneError};

/// Where the policy files a user applies live in this repository.
const POLICY_FILES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docker/examples/policies");
/// The namespace the talk's policies are in.
const POLICY_NAMESPACE: &str = "echoserver";

pub(super) struct KubeDemo {
    plane: ControlPlane,
    /// The daemons' ServiceAccount token (`api_token_path`).
    _token_dir: tempfile::TempDir,
    api_yaml: String,
}

impl KubeDemo {
    /// Starts the control plane, applies the shipped RBAC and makes the
    /// namespace of the policies.
    pub(super) fn start() -> anyhow::Result<Self> {
        let plane = ControlPlane::start().map_err(|e| match e {
            ControlPlaneError::MissingBinary(..) => anyhow::anyhow!(
                "{e}\n--kube needs etcd, kube-apiserver and kubectl: run it as ./scripts/demo.sh --kube, which builds them once (scripts/peers.sh)"
            ),
            e => anyhow::Error::new(e).context("starting etcd and kube-apiserver"),
        })?;
        let token_dir = tempfile::tempdir().context("a directory for the daemons' token")?;
        let token = plane
            .component_token_file("meshward-node", token_dir.path())
            .context("the meshward-node ServiceAccount's token, under the shipped RBAC")?;
        let api_yaml = plane.api_yaml_with_token(&token);
        let demo = Self {
            plane,
            _token_dir: token_dir,
            api_yaml,
        };
        println!(
            "   API server {}; kubectl below is {} --kubeconfig={}",
            demo.plane.url(),
            demo.plane.binaries().kubectl.display(),
            demo.plane.kubeconfig().display()
        );
        demo.run(&["create", "namespace", POLICY_NAMESPACE], None)?;
        Ok(demo)
    }

    /// Every node daemon watches the policies in this API server (both clusters'
    /// daemons: one control plane serves the two here).
    pub(super) fn configure(&self, spec: &mut MeshSpec) {
        spec.authorization_yaml(&format!("  kubernetes: {}\n", self.api_yaml));
    }

    /// The API server's loopback port, reachable at the same address inside every
    /// node's namespace while the forwards live.
    pub(super) fn reach_from(&self, mesh: &Mesh) -> anyhow::Result<Vec<LoopbackForward>> {
        let api: std::net::SocketAddr = self
            .plane
            .url()
            .trim_start_matches("https://")
            .parse()
            .context("the API server's address")?;
        mesh.cluster
            .nodes()
            .map(|node| {
                LoopbackForward::start(node.netns(), api.port(), api)
                    .with_context(|| format!("forwarding the API server into {}", node.name()))
            })
            .collect()
    }

    /// `kubectl apply` of the policy `name` (`yaml`, with the trust domain already
    /// substituted): its file when the text is the file's, else the text on stdin.
    pub(super) fn apply(&self, name: &str, yaml: &str) -> anyhow::Result<()> {
        match policy_file(name, yaml) {
            Some(file) => self.run(&["apply", "-f", &file], None),
            None => self.run(&["apply", "-f", "-"], Some(yaml)),
        }
    }

    /// `kubectl delete` of what [`KubeDemo::apply`] applied.
    pub(super) fn delete(&self, name: &str, yaml: &str) -> anyhow::Result<()> {
        match policy_file(name, yaml) {
            Some(file) => self.run(&["delete", "-f", &file], None),
            None => self.run(&["delete", "-f", "-"], Some(yaml)),
        }
    }

    /// The hints for a user trying things while the demo stays up.
    pub(super) fn hints(&self) -> String {
        format!(
            "The policies as the API server holds them:\n\
             \x20 {} --kubeconfig={} get authorizationpolicies,requestauthentications -A\n\
             (kubectl apply/edit/delete them: the daemons follow within a second)",
            self.plane.binaries().kubectl.display(),
            self.plane.kubeconfig().display()
        )
    }

    /// Prints `$ kubectl args...` (and the text given on stdin), runs exactly that,
    /// and prints what kubectl said.
    fn run(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<()> {
        println!(
            "$ kubectl {}{}",
            args.join(" "),
            if stdin.is_some() { " <<'EOF'" } else { "" }
        );
        if let Some(text) = stdin {
            text.lines().for_each(|line| println!("{line}"));
            println!("EOF");
        }
        let output = match stdin {
            Some(text) => self.plane.kubectl_stdin(args, text),
            None => self.plane.kubectl(args),
        }?;
        output.lines().for_each(|line| println!("   {line}"));
        Ok(())
    }
}

/// The repository's file of policy `name`, shown relative to the working
/// directory when it is under it, if its text is `yaml`.
fn policy_file(name: &str, yaml: &str) -> Option<String> {
    let file = Path::new(POLICY_FILES)
        .join(format!("{name}.yaml"))
        .canonicalize()
        .ok()?;
    if std::fs::read_to_string(&file).ok()? != yaml {
        return None;
    }
    let shown = std::env::current_dir()
        .ok()
        .and_then(|cwd| file.strip_prefix(cwd).ok().map(PathBuf::from))
        .unwrap_or(file);
    Some(shown.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_is_applied_from_its_file_only_when_the_text_is_the_files() {
        let file = std::fs::read_to_string(format!("{POLICY_FILES}/02-allow-curl-spire.yaml"))
            .unwrap_or_default();
        assert!(!file.is_empty(), "the example policy is in the repository");
        let shown = policy_file("02-allow-curl-spire", &file);
        assert!(
            shown
                .as_deref()
                .is_some_and(|f| f.ends_with("docker/examples/policies/02-allow-curl-spire.yaml")),
            "{shown:?}"
        );
        // another trust domain substituted: the text goes on stdin instead
        let edited = file.replace("math.example.com", "td.example");
        assert_eq!(policy_file("02-allow-curl-spire", &edited), None);
        assert_eq!(policy_file("no-such-policy", &file), None);
    }
}
