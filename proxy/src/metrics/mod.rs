//! Prometheus metrics of the node daemon, through the `metrics` facade; served on
//! `:15020/stats/prometheus` (`admin.rs`). Names follow Istio's standard metrics
//! where one exists (`istio_tcp_*`, `istio_requests_total`) so dashboards carry
//! over; meshward's own start with `meshward_`. Labels are identities, policies,
//! codes and reasons: bounded by what is deployed, never by traffic (no IPs, no
//! paths).

use meshward_spiffe::SpiffeId;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

mod per_stream;
pub(crate) use per_stream::{DecisionMetrics, RequestMetrics};

/// Installs the process-wide recorder; the handle renders the text format.
pub fn install() -> Result<PrometheusHandle, String> {
    PrometheusBuilder::new()
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())
}

/// What the process's allocator holds, in bytes (jemalloc's `stats.*`): live
/// objects, the pages they occupy, the pages mapped, those kept unmapped for
/// reuse, and its own bookkeeping. Resident far above allocated is memory the allocator keeps.
#[derive(Debug, Clone, Copy)]
pub struct AllocatorStats {
    pub allocated: u64,
    pub active: u64,
    pub resident: u64,
    pub retained: u64,
    /// jemalloc's own bookkeeping, which grows with the peak and stays.
    pub metadata: u64,
}

/// Sets `meshward_allocator_bytes{state}` (read at each scrape).
pub fn allocator(stats: AllocatorStats) {
    for (state, bytes) in [
        ("allocated", stats.allocated),
        ("active", stats.active),
        ("resident", stats.resident),
        ("retained", stats.retained),
        ("metadata", stats.metadata),
    ] {
        gauge!("meshward_allocator_bytes", "state" => state).set(bytes as f64);
    }
}

/// Which end of a connection reports it, as Istio labels it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Reporter {
    Source,
    Destination,
}

impl Reporter {
    fn as_str(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Destination => "destination",
        }
    }
}

/// A peer's SPIFFE ID as labels and access logs write it: `unknown` without one
/// (plaintext), as Istio's telemetry does.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Principal<'a>(pub(crate) Option<&'a SpiffeId>);

impl std::fmt::Display for Principal<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(id) => id.fmt(f),
            None => f.write_str("unknown"),
        }
    }
}

/// The identities of one connection, as metric labels.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionLabels {
    pub(crate) reporter: Reporter,
    pub(crate) source_principal: Option<SpiffeId>,
    pub(crate) destination_principal: Option<SpiffeId>,
    pub(crate) mutual_tls: bool,
}

impl ConnectionLabels {
    fn labels(&self) -> [(&'static str, String); 4] {
        [
            ("reporter", self.reporter.as_str().to_owned()),
            (
                "source_principal",
                Principal(self.source_principal.as_ref()).to_string(),
            ),
            (
                "destination_principal",
                Principal(self.destination_principal.as_ref()).to_string(),
            ),
            (
                "connection_security_policy",
                if self.mutual_tls {
                    "mutual_tls"
                } else {
                    "none"
                }
                .to_owned(),
            ),
        ]
    }

    pub(crate) fn opened(&self) {
        counter!("istio_tcp_connections_opened_total", &self.labels()).increment(1);
    }

    /// A connection ended, with the bytes it moved each way.
    pub(crate) fn closed(&self, sent: u64, received: u64) {
        let labels = self.labels();
        counter!("istio_tcp_connections_closed_total", &labels).increment(1);
        counter!("istio_tcp_sent_bytes_total", &labels).increment(sent);
        counter!("istio_tcp_received_bytes_total", &labels).increment(received);
    }
}

/// A plaintext connection refused under STRICT.
pub(crate) fn plaintext_refused() {
    counter!("meshward_plaintext_refused_total").increment(1);
}

/// An inbound stream refused before any policy could judge it, by short reason
/// (`silent_client`: nothing sent on a port not declared `tcp`).
pub(crate) fn stream_refused(reason: &'static str) {
    counter!("meshward_streams_refused_total", "reason" => reason).increment(1);
}

/// An open connection closed because a policy change no longer allows it.
pub(crate) fn connection_revoked() {
    counter!("meshward_connections_revoked_total").increment(1);
}

/// A request refused with `401` because a JWT did not verify, by short reason
/// (`meshward_jwt::JwtFailure::reason`).
pub(crate) fn jwt_refused(reason: &'static str) {
    counter!("meshward_jwt_refused_total", "reason" => reason).increment(1);
}

/// A CUSTOM policy's provider asked, by provider and result (`allow`, `deny`,
/// `error`, `not_configured`, `not_for_tcp`).
pub(crate) fn ext_authz_check(provider: &str, result: &'static str) {
    counter!(
        "meshward_ext_authz_checks_total",
        "provider" => provider.to_owned(),
        "result" => result,
    )
    .increment(1);
}

/// A fetch of remote JWT keys (`jwksUri`, OpenID discovery), by source.
pub(crate) fn jwks_fetch(source: &str, ok: bool) {
    counter!(
        "meshward_jwks_fetches_total",
        "source" => source.to_owned(),
        "result" => if ok { "ok" } else { "error" },
    )
    .increment(1);
}

/// A completed HBONE handshake, by the key exchange group it agreed on.
pub(crate) fn handshake(direction: &'static str, group: Option<rustls::NamedGroup>) {
    let group = group.map_or_else(|| "none".to_owned(), |g| format!("{g:?}"));
    counter!(
        "meshward_tls_handshakes_total",
        "direction" => direction,
        "key_exchange" => group,
    )
    .increment(1);
}

/// A TLS handshake (or the connect before it) that failed, by short reason.
pub(crate) fn handshake_failure(direction: &'static str, reason: &'static str) {
    counter!(
        "meshward_tls_handshake_failures_total",
        "direction" => direction,
        "reason" => reason,
    )
    .increment(1);
}

pub(crate) fn hbone_connection_opened() {
    counter!("meshward_hbone_connections_opened_total").increment(1);
    gauge!("meshward_hbone_connections").increment(1.0);
}

pub(crate) fn hbone_connection_closed() {
    gauge!("meshward_hbone_connections").decrement(1.0);
}

pub(crate) fn hbone_stream(delta: f64) {
    gauge!("meshward_hbone_streams").increment(delta);
}

pub(crate) fn policy_reload(ok: bool, loaded: usize) {
    counter!("meshward_policy_reloads_total", "result" => if ok { "ok" } else { "failed" })
        .increment(1);
    if ok {
        #[allow(clippy::cast_precision_loss)]
        gauge!("meshward_policies_loaded").set(loaded as f64);
    }
}

pub(crate) fn svid_seconds_to_expiry(spiffe_id: &SpiffeId, seconds: f64) {
    gauge!("meshward_svid_seconds_to_expiry", "spiffe_id" => spiffe_id.to_string()).set(seconds);
}

/// How long ago the least recently renewed SVID on this node was issued; it
/// passes half an SVID's life only while renewals fail (no issuer answers).
pub(crate) fn svid_oldest_age_seconds(seconds: f64) {
    gauge!("meshward_svid_oldest_age_seconds").set(seconds);
}

pub(crate) fn svid_rotated(spiffe_id: &SpiffeId) {
    counter!("meshward_svid_rotations_total", "spiffe_id" => spiffe_id.to_string()).increment(1);
}

/// A node attestation that failed: `evidence` (it could not be gathered: an
/// unreadable token, an IMDS that hung or answered too much), `refused` (the
/// issuer said no) or `unavailable` (no issuer answered).
pub(crate) fn node_attestation_failed(method: &'static str, reason: &'static str) {
    counter!("meshward_node_attestation_failures_total", "method" => method, "reason" => reason)
        .increment(1);
}

/// One call to the issuer: its latency, and its error code if it failed.
pub(crate) fn issuer_rpc(method: &'static str, duration: Duration, error: Option<&str>) {
    histogram!("meshward_issuer_rpc_duration_seconds", "method" => method)
        .record(duration.as_secs_f64());
    if let Some(code) = error {
        counter!(
            "meshward_issuer_rpc_errors_total",
            "method" => method,
            "code" => code.to_owned(),
        )
        .increment(1);
    }
}

/// Times one call to the issuer and counts it when it fails.
pub(crate) async fn observe_issuer<T>(
    method: &'static str,
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    let started = std::time::Instant::now();
    let result = call.await;
    let code = result.as_ref().err().map(|s| format!("{:?}", s.code()));
    issuer_rpc(method, started.elapsed(), code.as_deref());
    result
}
