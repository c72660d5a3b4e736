//! The admin endpoints (`admin_listen`, loopback by default) and the metrics
//! endpoint (`metrics_listen`, `/stats/prometheus`). JSON for tools, text where a
//! person reads it (`/explain`):
//!
//! - `GET /config_dump`: the effective configuration, workloads, certificates, policies
//! - `GET /certs`: per workload identity: serial, validity, seconds left, chain (PEM)
//! - `GET /workloads`: the node's pods and their identities
//! - `GET /policies`: the policy set in force
//! - `GET /explain?pod=..&principal=..&method=..&path=..&port=..`: why a request would
//!   be allowed or denied (the engine `meshward policy explain` uses)
//! - `GET /logging`, `POST /logging?level=..`: log directives, read or changed

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::ProxyConfig;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use meshward_policy::{HttpRequest, PolicySet, SpiffeId, Workload};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::agent::{PodIdentities, Snapshot};
use crate::logging::LogControl;

/// What the admin endpoints read; all of it shared, nothing copied per request.
#[derive(Clone)]
pub struct AdminState {
    pub config: Arc<ProxyConfig>,
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub policies: watch::Receiver<Arc<PolicySet>>,
    pub logs: Option<LogControl>,
}

/// Serves the admin endpoints until the listener fails.
pub async fn serve_admin(listener: TcpListener, state: AdminState) -> std::io::Result<()> {
    serve(listener, move |request| admin(&state, &request)).await
}

/// Serves `/stats/prometheus` (and `/metrics`); `refresh` first sets the gauges
/// read at scrape time (the allocator's, which the binary owns).
pub async fn serve_metrics(
    listener: TcpListener,
    handle: PrometheusHandle,
    refresh: fn(),
) -> std::io::Result<()> {
    serve(listener, move |request| match request.uri().path() {
        "/stats/prometheus" | "/metrics" => {
            refresh();
            respond(StatusCode::OK, "text/plain; version=0.0.4", handle.render())
        }
        _ => not_found(),
    })
    .await
}

async fn serve<F>(listener: TcpListener, route: F) -> std::io::Result<()>
where
    F: Fn(Request<Incoming>) -> Response<Full<Bytes>> + Clone + Send + Sync + 'static,
{
    loop {
        let (stream, _) = listener.accept().await?;
        let route = route.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = route(request);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn admin(state: &AdminState, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let query = query_pairs(request.uri().query().unwrap_or_default());
    let snapshot = state.snapshots.borrow().clone();
    let policies = state.policies.borrow().clone();
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/config_dump") => json_response(&json!({
            "config": state.config.as_ref(),
            "node": {"name": snapshot.node_name, "spiffe_id": snapshot.node_id},
            "workloads": workloads(&snapshot),
            "certificates": certificates(&snapshot),
            "policies": policy_list(&policies, &state.config),
        })),
        (&Method::GET, "/certs") => json_response(&certificates(&snapshot)),
        (&Method::GET, "/workloads") => json_response(&workloads(&snapshot)),
        (&Method::GET, "/policies") => json_response(&policy_list(&policies, &state.config)),
        (&Method::GET, "/explain") => match explain(&snapshot, &policies, &query) {
            Ok(text) => respond(StatusCode::OK, "text/plain", text),
            Err(e) => respond(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n")),
        },
        (&Method::GET, "/logging") => match &state.logs {
            Some(logs) => respond(
                StatusCode::OK,
                "text/plain",
                format!("{}\n", logs.current()),
            ),
            None => respond(
                StatusCode::NOT_FOUND,
                "text/plain",
                "no log control\n".into(),
            ),
        },
        (&Method::POST, "/logging") => match (&state.logs, query.get("level")) {
            (Some(logs), Some(level)) => match logs.set(level) {
                Ok(()) => respond(StatusCode::OK, "text/plain", format!("{level}\n")),
                Err(e) => respond(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n")),
            },
            _ => respond(
                StatusCode::BAD_REQUEST,
                "text/plain",
                "say ?level=<directives>\n".into(),
            ),
        },
        _ => not_found(),
    }
}

/// The node's pods by namespace and name, so every listing reads the same way.
fn sorted_pods(snapshot: &Snapshot) -> Vec<&PodIdentities> {
    let mut pods: Vec<_> = snapshot.pods.values().collect();
    pods.sort_by(|a, b| (&a.pod.namespace, &a.pod.name).cmp(&(&b.pod.namespace, &b.pod.name)));
    pods
}

fn workloads(snapshot: &Snapshot) -> Value {
    let pods = sorted_pods(snapshot);
    Value::Array(
        pods.into_iter()
            .map(|p| {
                json!({
                    "name": p.pod.name,
                    "namespace": p.pod.namespace,
                    "ip": p.pod.ip,
                    "service_account": p.pod.service_account,
                    "labels": p.pod.labels,
                    "identities": p.svids.iter().map(|s| s.spiffe_id.as_str()).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

fn certificates(snapshot: &Snapshot) -> Value {
    let now = SystemTime::now();
    let unix = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut out = Vec::new();
    let pods = sorted_pods(snapshot);
    for pod in pods {
        for svid in &pod.svids {
            out.push(json!({
                "spiffe_id": svid.spiffe_id,
                "pod": format!("{}/{}", pod.pod.namespace, pod.pod.name),
                "serial": svid.chain.first().and_then(meshward_tls::serial_of),
                "issued_at": unix(svid.issued_at),
                "expires_at": unix(svid.expires_at),
                "seconds_to_expiry": svid.expires_at.duration_since(now).map_or(0, |d| d.as_secs()),
                "source": svid.source,
                "chain": svid.chain.iter().map(meshward_spiffe::pem::certificate).collect::<Vec<_>>(),
            }));
        }
    }
    Value::Array(out)
}

fn policy_list(policies: &PolicySet, config: &ProxyConfig) -> Value {
    json!({
        "paths": config.authorization.policy_paths,
        "default": config.authorization.default.as_str(),
        "count": policies.len(),
        "policies": policies.summaries().iter().map(|p| json!({
            "namespace": p.id.namespace,
            "name": p.id.name,
            "action": p.action.as_str(),
            "dry_run": p.dry_run,
            "applies": p.applies,
            "origin": p.origin.to_string(),
        })).collect::<Vec<_>>(),
    })
}

/// `pod` (name or IP) and the request: `principal` (absent: plaintext), `method`
/// and `path` (absent: a TCP connection), `port`, `host`, `source_ip`.
fn explain(
    snapshot: &Snapshot,
    policies: &PolicySet,
    query: &HashMap<String, String>,
) -> Result<String, String> {
    let pod_key = query.get("pod").ok_or("say ?pod=<name or IP>")?;
    let pod = snapshot
        .pods
        .values()
        .find(|p| p.pod.name == *pod_key || p.pod.ip.to_string() == *pod_key)
        .ok_or_else(|| format!("no pod {pod_key:?} on this node"))?;
    let workload = Workload {
        namespace: pod.pod.namespace.clone(),
        labels: pod.pod.labels.clone(),
    };
    let source = query
        .get("principal")
        .map(|p| SpiffeId::parse_principal(p).map_err(|e| e.to_string()))
        .transpose()?;
    let port: u16 = query
        .get("port")
        .map_or(Ok(80), |p| p.parse())
        .map_err(|_| "port: not a number")?;
    let source_ip: IpAddr = query
        .get("source_ip")
        .map_or(Ok(IpAddr::from([0, 0, 0, 0])), |ip| ip.parse())
        .map_err(|_| "source_ip: not an IP")?;
    let http = match query.get("method") {
        None => None,
        Some(method) => {
            let path = query.get("path").map_or("/", String::as_str);
            let host = query
                .get("host")
                .cloned()
                .unwrap_or_else(|| format!("{}:{port}", pod.pod.ip));
            Some(Box::new(
                HttpRequest::new(
                    method,
                    path,
                    &host,
                    http::HeaderMap::new(),
                    policies.options().path_normalization,
                )
                .map_err(|e| format!("the request would get 400: {e}"))?,
            ))
        }
    };
    let request = meshward_policy::Request {
        source,
        source_namespace: None,
        source_ip,
        remote_ip: source_ip,
        destination_ip: pod.pod.ip,
        destination_port: port,
        sni: None,
        http,
    };
    Ok(format!("{}\n", policies.explain(&workload, &request)))
}

/// The query string as a map (`application/x-www-form-urlencoded` rules).
fn query_pairs(query: &str) -> HashMap<String, String> {
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

fn json_response(value: &Value) -> Response<Full<Bytes>> {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    respond(StatusCode::OK, "application/json", text + "\n")
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

fn not_found() -> Response<Full<Bytes>> {
    respond(
        StatusCode::NOT_FOUND,
        "text/plain",
        "endpoints: /config_dump /certs /workloads /policies /explain /logging\n".into(),
    )
}

/// Where a socket address is bound, for the startup line.
pub fn describe(addr: SocketAddr) -> String {
    if addr.ip().is_loopback() {
        format!("{addr} (this node only)")
    } else {
        addr.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_decoded() {
        let q = query_pairs(
            "pod=echoserver&principal=spiffe%3A%2F%2Fmath.example.com%2Fns%2Fdefault%2Fsa%2Fcurl-spire&path=%2Fapi%2Fpayment&level=info%2Caccess%3Ddebug&x=%zz",
        );
        assert_eq!(q["pod"], "echoserver");
        assert_eq!(
            q["principal"],
            "spiffe://math.example.com/ns/default/sa/curl-spire"
        );
        assert_eq!(q["path"], "/api/payment");
        assert_eq!(q["level"], "info,access=debug");
        assert_eq!(q["x"], "%zz");
    }
}
