//! One inbound stream for a local pod, after the tunnel or the plaintext accept:
//! detect the protocol, then TCP (authorized once, bytes copied) or HTTP (each
//! request authorized, see `http.rs`).

use std::sync::Arc;
use std::time::Instant;

use crate::config::AppProtocol;

use super::Shared;
use super::access_log;
use super::admit::{self, Admitted};
use super::copy::{self, CopyIo};
use super::detect::{Detected, Prefixed, detect};
use super::http;
use super::socket::connect_marked;
use super::stream::InboundStream;
use super::upstream::Version;
use crate::metrics;

/// Serves `io` for `stream`. `admitted`: a `tcp` port's connection, admitted at
/// CONNECT time (so it is not judged, nor counted, twice); boxed, as an async fn
/// keeps its arguments for its whole life (memory per idle connection).
/// Returning drops `io`: for a tunnel that ends the stream (END_STREAM after what
/// was written, `h2_stream.rs`), for plaintext it closes the connection.
pub(crate) async fn serve<S>(
    shared: Arc<Shared>,
    stream: Arc<InboundStream>,
    io: S,
    admitted: Option<Box<Admitted>>,
) where
    S: CopyIo + Send + 'static,
{
    let configured = shared.declared_protocol(stream.destination);
    let (detected, io) = if configured == Some(AppProtocol::Tcp) {
        (Detected::Tcp, Prefixed::new(io))
    } else {
        match Box::pin(detect(io, shared.inbound.protocol_detection_timeout)).await {
            Ok(found) => found,
            Err(e) => {
                tracing::debug!(dst_addr = %stream.destination, "stream ended before a byte: {e}");
                return;
            }
        }
    };
    // the HTTP server and the upstream connect are boxed: a TCP stream in its
    // copy stage then holds a pointer, not their state (memory per connection).
    // A port declared `http` is HTTP whatever its bytes (the server answers 400 to
    // what does not parse); see detect.rs for the rule.
    match (configured, detected) {
        (_, Detected::Http2) => {
            Box::pin(http::serve(shared, stream, io, Version::Http2)).await;
        }
        (_, Detected::Http1) | (Some(AppProtocol::Http), Detected::Tcp | Detected::Silent) => {
            Box::pin(http::serve(shared, stream, io, Version::Http1)).await;
        }
        (_, Detected::Tcp) | (Some(AppProtocol::Tcp), Detected::Silent) => {
            Box::pin(serve_tcp(&shared, &stream, io, admitted)).await;
        }
        (None, Detected::Silent) => {
            metrics::stream_refused("silent_client");
            tracing::info!(
                target: "access",
                src_addr = %stream.source, src_principal = %stream.source_principal(),
                dst_addr = %stream.destination, dst_workload = %stream.pod.info.name,
                dst_namespace = %stream.pod.info.namespace,
                "refused: the client sent nothing within inbound.protocol_detection_timeout \
                 ({:?}); a server-first protocol needs its port declared `tcp` (inbound.ports or its Service)",
                shared.inbound.protocol_detection_timeout
            );
        }
    }
}

/// A TCP stream: admitted (at CONNECT time, or here), then copied to the pod.
/// What the copy stage holds is all an idle connection costs: the judged
/// request goes to the revocation watcher, the admission's state is not kept.
async fn serve_tcp<S>(
    shared: &Shared,
    stream: &InboundStream,
    mut io: S,
    admitted: Option<Box<Admitted>>,
) where
    S: CopyIo,
{
    let started = Instant::now();
    let admitted = match admitted {
        Some(admitted) => admitted,
        None => match Box::pin(admit::connection(shared, stream)).await {
            Ok(admitted) => Box::new(admitted),
            Err(refusal) => {
                access_log::connection(stream, &refusal.record(), (0, 0), started.elapsed(), None);
                return;
            }
        },
    };
    let mut upstream = match Box::pin(connect_marked(
        stream.destination,
        shared.mark,
        shared.limits.connect_timeout,
    ))
    .await
    {
        Ok(upstream) => upstream,
        Err(e) => {
            let error = format!("the pod did not accept the connection: {e}");
            access_log::connection(
                stream,
                &admitted.record,
                (0, 0),
                started.elapsed(),
                Some(&error),
            );
            return;
        }
    };
    let Admitted { record, judged, .. } = *admitted;
    let labels = stream.connection_labels();
    labels.opened();
    let revoked = shared
        .revocations
        .watch(stream, judged, record.approved_by.clone());
    let copy = copy::bidirectional(&mut io, &mut upstream, shared.limits.idle_timeout);
    let (moved, result) = tokio::select! {
        done = copy => done,
        refusal = revoked => {
            labels.closed(0, 0);
            let error = "closed: a policy change no longer allows this connection";
            access_log::connection(stream, &refusal.record(), (0, 0), started.elapsed(), Some(error));
            return;
        }
    };
    labels.closed(moved.sent, moved.received);
    let error = result.err().map(|e| e.to_string());
    access_log::connection(
        stream,
        &record,
        (moved.sent, moved.received),
        started.elapsed(),
        error.as_deref(),
    );
}
