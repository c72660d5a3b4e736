//! Helpers for the data path's unit tests, among them those that follow the real
//! Kubernetes API (etcd + kube-apiserver from `scripts/peers.sh`, one control plane
//! for this test binary).

use std::time::Duration;

use meshward_test_support::control_plane::{self, ControlPlane};
use tokio::sync::watch;

/// The shared control plane and a client of it as the node daemon builds one from
/// its configuration, authenticated as the `meshward-node` ServiceAccount under the
/// shipped RBAC (its token in the returned directory, which must outlive the
/// client). `None`: the binaries are missing and the test is skipped.
pub(super) fn real_api(
    test: &str,
) -> Option<(
    &'static ControlPlane,
    meshward_kubernetes::Connection,
    tempfile::TempDir,
)> {
    let plane = control_plane::shared(test)?;
    let dir = tempfile::tempdir().unwrap();
    let token = plane
        .component_token_file("meshward-node", dir.path())
        .unwrap();
    let client = meshward_kubernetes::connect(&meshward_kubernetes::ApiEndpoint {
        api_server: Some(plane.url().to_owned()),
        api_ca_path: Some(plane.ca_file().to_owned()),
        api_token_path: Some(token),
        watch_timeout_seconds: None,
    })
    .expect("a client of the control plane");
    Some((plane, client, dir))
}

/// `kubectl apply` of `objects` (JSON values, each with its apiVersion and kind).
pub(super) fn apply(plane: &ControlPlane, objects: &[serde_json::Value]) {
    let list =
        serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects}).to_string();
    plane.apply(&list).unwrap();
}

/// A Namespace object, for [`apply`] before the objects that live in it.
pub(super) fn namespace(name: &str) -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

/// `kubectl delete <kind> <name> -n <namespace>`.
pub(super) fn delete(plane: &ControlPlane, kind: &str, namespace: &str, name: &str) {
    plane
        .kubectl(&["delete", kind, name, "-n", namespace])
        .unwrap();
}

/// Waits, at most 15 s, until the channel's value satisfies `done`.
pub(super) async fn settles<T>(rx: &mut watch::Receiver<T>, what: &str, done: impl Fn(&T) -> bool) {
    let wait = async {
        while !done(&rx.borrow_and_update()) {
            if rx.changed().await.is_err() {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), wait)
        .await
        .unwrap_or_else(|_| panic!("never {what}"));
}

/// `len` bytes of a pattern in which a lost, doubled or reordered chunk shows.
pub(super) fn pattern(len: u32) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Writes `data` to `io` from a task, then shuts its writing side down (EOF, or
/// END_STREAM); the task gives `io` back.
pub(super) fn write_then_shutdown<W>(mut io: W, data: Vec<u8>) -> tokio::task::JoinHandle<W>
where
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tokio::io::AsyncWriteExt;
    tokio::spawn(async move {
        io.write_all(&data).await.unwrap();
        io.shutdown().await.unwrap();
        io
    })
}

/// A CONNECT for `10.0.0.1:80`, as a test's hand-driven HBONE client sends it.
pub(super) fn connect_request() -> http::Request<()> {
    http::Request::builder()
        .method(http::Method::CONNECT)
        .uri("10.0.0.1:80")
        .body(())
        .expect("a CONNECT request")
}
