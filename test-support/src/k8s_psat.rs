//! k8s_psat on the real control plane ([`crate::control_plane`]), as the issuer's
//! tests and the agent's share it: a node and the node daemon's pod bound to it
//! (as a scheduler and a kubelet would leave them: there are none here), the pod's
//! projected token from the TokenRequest API, and issuer.yaml's `k8s_psat` section
//! reading the cluster as the `meshward-issuer` ServiceAccount.

use std::path::Path;
use std::sync::{Mutex, PoisonError};

use crate::control_plane::{COMPONENTS_NAMESPACE, ControlPlane, ControlPlaneError};

/// The node the agent pods run on.
pub const NODE: &str = "ip-10-0-1-23.ec2.internal";
/// Its `InternalIP`.
pub const NODE_IP: &str = "10.0.1.23";
/// The audience of the agents' projected tokens (the issuer's default).
pub const AUDIENCE: &str = "meshward-issuer";

/// [`NODE`] (its address written through the status subresource, as a kubelet
/// does) and the node daemon's pod `pod` bound to it (ServiceAccount
/// `meshward-node` of meshward-system: the shipped RBAC is applied first); the
/// pod's UID.
pub fn agent_pod(plane: &ControlPlane, pod: &str) -> Result<String, ControlPlaneError> {
    plane.apply_shipped_rbac()?;
    // one apply of the node at a time: two tests creating it at once, one meets
    // AlreadyExists
    static NODE_APPLY: Mutex<()> = Mutex::new(());
    let applying = NODE_APPLY.lock().unwrap_or_else(PoisonError::into_inner);
    plane.apply(&format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: {NODE}}}\n"
    ))?;
    drop(applying);
    let status =
        format!(r#"{{"status":{{"addresses":[{{"type":"InternalIP","address":"{NODE_IP}"}}]}}}}"#);
    plane.kubectl(&[
        "patch",
        "node",
        NODE,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status,
    ])?;
    bind_pod(plane, pod)
}

/// The node daemon's pod `pod` bound to [`NODE`] (made by [`agent_pod`]), e.g. again
/// after it was deleted; its UID.
pub fn bind_pod(plane: &ControlPlane, pod: &str) -> Result<String, ControlPlaneError> {
    plane.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: {COMPONENTS_NAMESPACE}}}\nspec:\n  nodeName: {NODE}\n  serviceAccountName: meshward-node\n  containers:\n  - {{name: meshward, image: \"ghcr.io/meshward/meshward:0.1.0\"}}\n"
    ))?;
    plane.kubectl(&[
        "get",
        "pod",
        pod,
        "-n",
        COMPONENTS_NAMESPACE,
        "-o",
        "jsonpath={.metadata.uid}",
    ])
}

/// The UID of [`NODE`].
pub fn node_uid(plane: &ControlPlane) -> Result<String, ControlPlaneError> {
    plane.kubectl(&["get", "node", NODE, "-o", "jsonpath={.metadata.uid}"])
}

/// A token of ServiceAccount `meshward-system/<service_account>` from the
/// TokenRequest API, valid 10 minutes, with `extra` flags of `kubectl create
/// token` (an audience, a bound object).
pub fn token(
    plane: &ControlPlane,
    service_account: &str,
    extra: &[&str],
) -> Result<String, ControlPlaneError> {
    let mut args = vec![
        "create",
        "token",
        service_account,
        "-n",
        COMPONENTS_NAMESPACE,
        "--duration=10m",
    ];
    args.extend_from_slice(extra);
    Ok(plane.kubectl(&args)?.trim().to_owned())
}

/// The projected token the kubelet would mount in the agent pod `pod`: of
/// `meshward-node`, for `audience`, bound to the pod.
pub fn projected_token(
    plane: &ControlPlane,
    pod: &str,
    audience: &str,
) -> Result<String, ControlPlaneError> {
    let audience = format!("--audience={audience}");
    let bound = format!("--bound-object-name={pod}");
    token(
        plane,
        "meshward-node",
        &[&audience, "--bound-object-kind=Pod", &bound],
    )
}

/// issuer.yaml's `k8s_psat` section: cluster `eks` is `plane`, read as the
/// `meshward-issuer` ServiceAccount under the shipped RBAC (its token written in
/// `dir`), allowing `meshward-system:meshward-node`.
pub fn issuer_yaml(plane: &ControlPlane, dir: &Path) -> Result<String, ControlPlaneError> {
    let issuer_token = plane.component_token_file("meshward-issuer", dir)?;
    Ok(format!(
        "k8s_psat:\n  clusters:\n  - name: eks\n    api_server: {}\n    api_ca_path: {}\n    api_token_path: {}\n    service_account_allow_list: [\"{COMPONENTS_NAMESPACE}:meshward-node\"]\n",
        plane.url(),
        plane.ca_file().display(),
        issuer_token.display()
    ))
}
