//! The daemon's own upstream sockets: marked so capture never takes them again,
//! connected with a deadline, no Nagle (HBONE frames and small requests).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

/// Connects to `addr` from a socket carrying `mark` (SO_MARK; needs CAP_NET_ADMIN).
pub(crate) async fn connect_marked(
    addr: SocketAddr,
    mark: u32,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Mark, &mark)
        .map_err(io::Error::from)?;
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
