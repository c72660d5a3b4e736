//! Helpers for the data path's unit tests that follow the (fake) Kubernetes API.

use std::time::Duration;

use meshward_test_support::kube_api::FakeKubeApi;
use tokio::sync::watch;

/// A client of the fake API, as the daemon builds one from its configuration.
pub(super) fn kube_client(api: &FakeKubeApi) -> meshward_kubernetes::Connection {
    meshward_kubernetes::connect(&meshward_kubernetes::ApiEndpoint {
        api_server: Some(api.url()),
        api_ca_path: Some(api.ca_file().to_owned()),
        api_token_path: Some(api.token_file().to_owned()),
        watch_timeout_seconds: None,
    })
    .expect("a client of the fake API")
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
