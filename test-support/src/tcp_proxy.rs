//! A loopback TCP forwarder that can be cut and restored, to prove that a
//! component survives its dependency going away (e.g. the issuer's database).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};

pub struct TcpProxy {
    address: SocketAddr,
    up: Arc<AtomicBool>,
    /// Bumped on every cut, so live connections notice and close.
    generation: Arc<AtomicU64>,
    /// Connections being forwarded right now.
    active: Arc<AtomicUsize>,
    /// Connections forwarded since the start.
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Forwards `127.0.0.1:<port>` to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let up = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(AtomicU64::new(0));
        let active = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (task_up, task_generation, task_active, task_accepted) = (
            up.clone(),
            generation.clone(),
            active.clone(),
            accepted.clone(),
        );
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !task_up.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection close
                }
                let (up, generation, active) = (
                    task_up.clone(),
                    task_generation.clone(),
                    task_active.clone(),
                );
                active.fetch_add(1, Ordering::SeqCst);
                task_accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    forward(client, target, up, generation).await;
                    active.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            address,
            up,
            generation,
            active,
            accepted,
            task,
        }
    }

    /// How many connections it has forwarded since it started.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Closes every connection (returns once they are closed, within two seconds)
    /// and refuses new ones until `restore`.
    pub async fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
        for _ in 0..100 {
            if self.active.load(Ordering::SeqCst) == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    mut client: TcpStream,
    target: SocketAddr,
    up: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
) {
    let Ok(mut server) = TcpStream::connect(target).await else {
        return;
    };
    let born = generation.load(Ordering::SeqCst);
    let cut = async {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            if generation.load(Ordering::SeqCst) != born || !up.load(Ordering::SeqCst) {
                return;
            }
        }
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        () = cut => {}
    }
}
