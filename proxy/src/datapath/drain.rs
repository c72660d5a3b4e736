//! Drain: the stop signal every stage of the data path watches, as ztunnel's
//! `drain.rs` and linkerd's `drain::Watch` hand one to every stage. When it
//! starts (SIGTERM), listeners stop accepting, HBONE and downstream HTTP/2
//! connections send GOAWAY, HTTP/1.1 keep-alive connections close after the
//! response in flight, and requests and TCP streams already under way go on. The
//! data path is drained once every connection its listeners accepted has ended
//! (`DataPath::run` returns); the daemon waits for that at most
//! `limits.drain_grace_period`.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::watch;

/// What a stage watches.
#[derive(Debug, Clone)]
pub struct Drain(watch::Receiver<bool>);

/// What starts the drain; dropping it without starting never drains.
#[derive(Debug)]
pub struct DrainSignal(watch::Sender<bool>);

/// A signal and the watch every stage gets a clone of.
pub fn channel() -> (DrainSignal, Drain) {
    let (tx, rx) = watch::channel(false);
    (DrainSignal(tx), Drain(rx))
}

impl DrainSignal {
    pub fn start(&self) {
        self.0.send_replace(true);
    }
}

impl Drain {
    /// Resolves once draining has started.
    pub async fn started(&self) {
        let mut rx = self.0.clone();
        if rx.wait_for(|draining| *draining).await.is_err() {
            // the signal is gone without starting: never
            std::future::pending::<()>().await;
        }
    }

    /// Drives a server `connection` to its end; once the drain has started,
    /// `shutdown` asks it to finish what is in flight and stop. The connection
    /// is polled before the drain is looked at: a request whose bytes have
    /// arrived is then in flight (read, and handed to the service) when the
    /// shutdown comes, even if the drain started before the connection's first
    /// poll. Otherwise HTTP/1.1's graceful shutdown sees a connection with no
    /// request yet and closes it unanswered.
    pub(crate) async fn serve<C: Future>(
        &self,
        mut connection: Pin<&mut C>,
        shutdown: impl FnOnce(Pin<&mut C>),
    ) -> C::Output {
        tokio::select! {
            biased;
            result = connection.as_mut() => result,
            () = self.started() => {
                shutdown(connection.as_mut());
                connection.await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::Empty;
    use hyper::body::Bytes;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An upgrade's SIGTERM can land between a tunnel's CONNECT, whose first
    /// DATA frame carries the request, and the stream's HTTP server's first
    /// poll. That request is in flight: it is answered, then the connection
    /// closes. (Twenty rounds: which of two ready branches went first was left
    /// to chance, and the drain's won half the time.)
    #[tokio::test]
    async fn a_request_already_sent_when_the_drain_starts_is_answered() {
        for round in 0..20 {
            let (signal, drain) = channel();
            let (mut client, server) = tokio::io::duplex(4096);
            client
                .write_all(b"GET / HTTP/1.1\r\nhost: pod\r\n\r\n")
                .await
                .unwrap();
            signal.start();
            let answer = hyper::service::service_fn(|_| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(Empty::<Bytes>::new()))
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(server), answer);
            tokio::pin!(connection);
            let served = drain.serve(connection.as_mut(), |c| c.graceful_shutdown());
            tokio::time::timeout(Duration::from_secs(5), served)
                .await
                .expect("the connection ends")
                .expect("served");
            let mut response = String::new();
            client.read_to_string(&mut response).await.unwrap();
            assert!(
                response.starts_with("HTTP/1.1 200"),
                "round {round}: {response:?}"
            );
        }
    }

    #[tokio::test]
    async fn started_resolves_for_every_watcher_and_only_after_start() {
        let (signal, drain) = channel();
        let early = drain.clone();
        let waiting = tokio::spawn(async move { early.started().await });
        let pending = tokio::time::timeout(Duration::from_millis(50), drain.started()).await;
        assert!(pending.is_err(), "not before the signal");
        signal.start();
        waiting.await.unwrap();
        drain.started().await;
        // a watcher cloned after the start sees it at once
        drain.clone().started().await;
        let dropped = channel().1;
        let never = tokio::time::timeout(Duration::from_millis(50), dropped.started()).await;
        assert!(never.is_err(), "a dropped signal never drains");
    }
}
