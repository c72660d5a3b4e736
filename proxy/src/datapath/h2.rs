//! HTTP/2 settings, in one place: the HBONE tunnel (client in `pool.rs`, server in
//! `inbound.rs`) and the pods' own HTTP/2 (server in `http.rs`, client in
//! `upstream.rs`).
//!
//! - HBONE flow control as ztunnel sets it: a 4 MiB stream window and a connection
//!   window four times that, so one slow stream cannot stall the others; 1 MiB frames.
//! - Keepalive PINGs every 10 s, 20 s to answer: a dead peer is noticed within half
//!   a minute, and an idle pooled tunnel is kept open until it is released.
//! - Streams per connection and header sizes come from `limits:`.

use std::time::Duration;

use hyper::client::conn::http2 as client;
use hyper::server::conn::http2 as server;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use meshward_config::LimitsConfig;

const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
const MAX_FRAME: u32 = 1024 * 1024;
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// An HBONE CONNECT is a handful of headers: this is ample, and bounds a hostile peer.
const HBONE_MAX_HEADER_LIST: u32 = 64 * 1024;

/// The HBONE client: one connection to a peer node carries many tunnels.
pub(crate) fn hbone_client() -> client::Builder<TokioExecutor> {
    let mut builder = client::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    builder
}

/// The HBONE server on 15008.
pub(crate) fn hbone_server(limits: &LimitsConfig) -> server::Builder<TokioExecutor> {
    let mut builder = server::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams_per_connection)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_header_list_size(HBONE_MAX_HEADER_LIST)
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT);
    builder
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
