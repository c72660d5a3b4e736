//! The daemon's own upstream sockets: marked so capture never takes them again,
//! connected with a deadline, no Nagle (HBONE frames and small requests).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

/// Connects to `addr` from a socket carrying `mark` (SO_MARK; needs CAP_NET_ADMIN).
pub(crate) async fn connect_marked(
    addr: SocketAddr,
    mark: u32,
    timeout: Duration,
) -> io::Result<TcpStream> {
    connect_marked_from(None, addr, mark, timeout).await
}

/// [`connect_marked`], from `source` when given: a transparent socket bound to an
/// address that is not the node's (a pod's; IP_TRANSPARENT, CAP_NET_ADMIN), so the
/// peer reads the pod's address as the TCP source. Capture delivers the replies
/// back to the socket (see capture.rs).
pub(crate) async fn connect_marked_from(
    source: Option<IpAddr>,
    addr: SocketAddr,
    mark: u32,
    timeout: Duration,
) -> io::Result<TcpStream> {
    use nix::sys::socket::{setsockopt, sockopt};
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    setsockopt(&socket, sockopt::Mark, &mark).map_err(io::Error::from)?;
    if let Some(source) = source {
        setsockopt(&socket, sockopt::IpTransparent, &true).map_err(io::Error::from)?;
        socket.bind(SocketAddr::new(source, 0))?;
    }
    socket.set_nodelay(true)?;
    match tokio::time::timeout(timeout, socket.connect(addr)).await {
        Ok(stream) => stream,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connect to {addr}: no answer within {timeout:?}"),
        )),
    }
}

/// Closes with RST instead of FIN: how a refused or failed tunnel ends for the
/// client, so it never mistakes the close for an orderly end of the stream.
pub(crate) fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}
