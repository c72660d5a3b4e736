//! Drain: the stop signal every stage of the data path watches, as ztunnel's
//! `drain.rs` and linkerd's `drain::Watch` hand one to every stage. When it
//! starts (SIGTERM), listeners stop accepting, HBONE and downstream HTTP/2
//! connections send GOAWAY, HTTP/1.1 keep-alive connections close after the
//! response in flight, and requests and TCP streams already under way go on. The
//! data path is drained once every connection its listeners accepted has ended
//! (`DataPath::run` returns); the daemon waits for that at most
//! `limits.drain_grace_period`.

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
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

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
