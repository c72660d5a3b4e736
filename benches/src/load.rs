//! Load generators run inside a pod's (or node's) network namespace, each bounded
//! by a deadline and a request count so it always stops by itself.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PAYLOAD: usize = 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Latencies of completed exchanges and how long the run took.
pub(crate) struct Latencies {
    pub(crate) sorted: Vec<Duration>,
    pub(crate) elapsed: Duration,
    pub(crate) errors: usize,
}

impl Latencies {
    pub(crate) fn rate(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let n = self.sorted.len() as f64;
        n / self.elapsed.as_secs_f64()
    }
}

fn exchange(stream: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<()> {
    stream.write_all(&buf[..PAYLOAD])?;
    stream.read_exact(&mut buf[..PAYLOAD])
}

fn connect(target: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(stream)
}

/// 1 KiB request, 1 KiB response, on one held connection (a TCP echo server).
pub(crate) fn held_connection(target: SocketAddr, duration: Duration, max: usize) -> Latencies {
    let mut buf = vec![7u8; PAYLOAD];
    let mut sorted = Vec::with_capacity(max.min(1 << 20));
    let started = Instant::now();
    let mut errors = 0;
    if let Ok(mut stream) = connect(target) {
        while started.elapsed() < duration && sorted.len() < max {
            let t = Instant::now();
            match exchange(&mut stream, &mut buf) {
                Ok(()) => sorted.push(t.elapsed()),
                Err(_) => {
                    errors += 1;
                    break;
                }
            }
        }
    } else {
        errors += 1;
    }
    let elapsed = started.elapsed();
    sorted.sort();
    Latencies {
        sorted,
        elapsed,
        errors,
    }
}

/// A new connection per 1 KiB exchange.
pub(crate) fn new_connection_each(target: SocketAddr, duration: Duration, max: usize) -> Latencies {
    let mut buf = vec![7u8; PAYLOAD];
    let mut sorted = Vec::new();
    let mut errors = 0;
    let started = Instant::now();
    while started.elapsed() < duration && sorted.len() < max && errors < 100 {
        let t = Instant::now();
        match connect(target).and_then(|mut s| exchange(&mut s, &mut buf)) {
            Ok(()) => sorted.push(t.elapsed()),
            Err(_) => errors += 1,
        }
    }
    let elapsed = started.elapsed();
    sorted.sort();
    Latencies {
        sorted,
        elapsed,
        errors,
    }
}

/// Opens `count` connections that each exchange once and then stay idle; returns
/// them (dropping closes them) and how many failed.
pub(crate) fn idle_connections(
    target: SocketAddr,
    count: usize,
    deadline: Duration,
) -> (Vec<TcpStream>, usize) {
    let started = Instant::now();
    let mut open = Vec::with_capacity(count);
    let mut buf = vec![7u8; PAYLOAD];
    let mut failed = 0;
    while open.len() < count && started.elapsed() < deadline && failed < 100 {
        match connect(target).and_then(|mut s| exchange(&mut s, &mut buf).map(|()| s)) {
            Ok(stream) => open.push(stream),
            Err(_) => failed += 1,
        }
    }
    (open, failed)
}

/// Full mutual TLS 1.3 handshakes (then close) for `duration`: how many completed.
pub(crate) fn handshakes(
    target: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    duration: Duration,
    max: usize,
) -> (usize, usize) {
    let started = Instant::now();
    let (mut done, mut errors) = (0, 0);
    let name = rustls_pki_types::ServerName::IpAddress(target.ip().into());
    while started.elapsed() < duration && done < max && errors < 100 {
        let result = connect(target).and_then(|mut tcp| {
            let mut tls = rustls::ClientConnection::new(config.clone(), name.clone())
                .map_err(std::io::Error::other)?;
            while tls.is_handshaking() {
                tls.complete_io(&mut tcp)?;
            }
            Ok(())
        });
        match result {
            Ok(()) => done += 1,
            Err(_) => errors += 1,
        }
    }
    (done, errors)
}

/// New connections (each one 1 KiB exchange, then closed) started on a schedule:
/// `rate` per second for `duration`, from `threads` threads, so a slow proxy
/// makes connections late rather than fewer. A latency counts from the moment
/// its connection was due (queueing included: no coordinated omission).
pub(crate) fn paced_new_connections(
    target: SocketAddr,
    rate: u32,
    duration: Duration,
    threads: usize,
) -> Latencies {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};
    let total = u64::from(rate) * duration.as_secs();
    let next = AtomicU64::new(0);
    let results = Mutex::new((Vec::new(), 0usize));
    let started = Instant::now();
    // a hard stop: twice the schedule, whatever the proxy does
    let give_up = started + duration * 2;
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut buf = vec![7u8; PAYLOAD];
                let (mut sorted, mut errors) = (Vec::new(), 0);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total || Instant::now() >= give_up {
                        break;
                    }
                    let due = started + Duration::from_secs_f64(i as f64 / f64::from(rate));
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    match connect(target).and_then(|mut s| exchange(&mut s, &mut buf)) {
                        Ok(()) => sorted.push(due.elapsed()),
                        Err(_) => errors += 1,
                    }
                }
                if let Ok(mut all) = results.lock() {
                    all.0.extend(sorted);
                    all.1 += errors;
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let (mut sorted, errors) = results.into_inner().unwrap_or_default();
    sorted.sort();
    Latencies {
        sorted,
        elapsed,
        errors,
    }
}
