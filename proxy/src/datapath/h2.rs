//! HTTP/2 settings, in one place: the HBONE tunnel (`h2` driven directly: client
//! in `pool.rs`, server in `inbound.rs`, streams in `h2_stream.rs`) and the pods'
//! own HTTP/2 through hyper (server in `http.rs`, client in `upstream.rs`).
//!
//! - HBONE flow control as ztunnel sets it: a 4 MiB stream window and a connection
//!   window four times that, so one slow stream cannot stall the others; 1 MiB frames.
//! - Keepalive PINGs every 10 s, 20 s to answer: a dead peer is noticed within half
//!   a minute, and an idle pooled tunnel is kept open until it is released.
//! - Streams per connection and header sizes come from `limits:`.

use std::time::Duration;

use crate::config::LimitsConfig;
use hyper::client::conn::http2 as client;
use hyper::server::conn::http2 as server;
use hyper_util::rt::{TokioExecutor, TokioTimer};

const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
const MAX_FRAME: u32 = 1024 * 1024;
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// An HBONE CONNECT is a handful of headers: this is ample, and bounds a hostile peer.
const HBONE_MAX_HEADER_LIST: u32 = 64 * 1024;

/// The HBONE client: one connection to a peer node carries many tunnels.
pub(crate) fn hbone_client() -> ::h2::client::Builder {
    let mut builder = ::h2::client::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_header_list_size(HBONE_MAX_HEADER_LIST);
    builder
}

/// The HBONE server on 15008.
pub(crate) fn hbone_server(limits: &LimitsConfig) -> ::h2::server::Builder {
    let mut builder = ::h2::server::Builder::new();
    builder
        .max_concurrent_streams(limits.max_streams_per_connection)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_header_list_size(HBONE_MAX_HEADER_LIST);
    builder
}

/// An HBONE connection's keepalive: a PING every 10 s, idle or not, each to be
/// answered within 20 s. Returns (why) when the peer stopped answering; it runs
/// beside the connection's own future, which answers the peer's PINGs.
pub(crate) async fn hbone_keepalive(pings: Option<::h2::PingPong>) -> String {
    let Some(mut pings) = pings else {
        // taken already: never the case for a connection just made
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(KEEPALIVE_INTERVAL).await;
        match tokio::time::timeout(KEEPALIVE_TIMEOUT, pings.ping(::h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(e)) => return format!("PING failed: {e}"),
            Err(_) => return format!("no answer to a PING within {KEEPALIVE_TIMEOUT:?}"),
        }
    }
}

/// The server for a client's HTTP/2 inside a tunnel or a plaintext connection.
pub(crate) fn app_server(limits: &LimitsConfig) -> server::Builder<TokioExecutor> {
    let mut builder = server::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_streams_per_connection)
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT);
    builder
}

/// The client to a pod's HTTP/2 server.
pub(crate) fn app_client() -> client::Builder<TokioExecutor> {
    let mut builder = client::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT);
    builder
}
