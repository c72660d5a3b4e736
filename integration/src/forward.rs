//! A TCP forwarder across namespaces: it listens on loopback inside a namespace
//! and connects from the test's own namespace, so a process in a node can reach a
//! server the test runs on its loopback (e.g. the kube-apiserver of
//! `meshward_test_support::control_plane`) without any route between the two.
//! Threads, not tasks: it needs no runtime.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::error::{HarnessError, Result};
use crate::netns::Netns;

/// Stops accepting when dropped (open connections end with their peers).
#[derive(Debug)]
pub struct LoopbackForward {
    stop: Arc<AtomicBool>,
}

impl LoopbackForward {
    /// Listens on `127.0.0.1:port` in `ns`; each connection is joined to `target`,
    /// dialled from the caller's namespace.
    pub fn start(ns: &Netns, port: u16, target: SocketAddr) -> Result<Self> {
        let listener = ns
            .run(move || TcpListener::bind(("127.0.0.1", port)))?
            .map_err(HarnessError::io(format!("listen on 127.0.0.1:{port}")))?;
        listener
            .set_nonblocking(true)
            .map_err(HarnessError::io("non-blocking listener"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((inside, _)) => {
                        let _ = join(inside, target);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(_) => return,
                }
            }
        });
        Ok(Self { stop })
    }
}

impl Drop for LoopbackForward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies both ways on two threads; each direction ends at EOF or error.
fn join(inside: TcpStream, target: SocketAddr) -> io::Result<()> {
    inside.set_nonblocking(false)?;
    let outside = TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
    for (mut from, mut to) in [
        (inside.try_clone()?, outside.try_clone()?),
        (outside, inside),
    ] {
        std::thread::spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        });
    }
    Ok(())
}
