//! Small external authorizers for tests, speaking Envoy's ext_authz protocol as
//! OPA-Envoy or Istio's sample `ext-authz` server do: the gRPC
//! `envoy.service.auth.v3.Authorization/Check` and the HTTP form, on loopback.
//!
//! Their rule is the Istio sample's: an HTTP request carrying `x-ext-authz: allow`
//! is allowed (and `x-ext-authz-check-result: allowed` is set for the pod);
//! anything else is denied with 403, `x-ext-authz-check-result: denied` and a body
//! saying why. A TCP connection (gRPC only) is allowed when its source principal
//! is in `allowed_principals`. `delay` holds every answer (timeouts); every check
//! received is kept for the test to read.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use meshward_extauthz::proto::envoy::config::core::v3 as core;
use meshward_extauthz::proto::envoy::service::auth::v3 as auth;
use meshward_extauthz::proto::envoy::r#type::v3::HttpStatus;
use meshward_extauthz::proto::google::rpc::Status;
use tokio::net::TcpListener;

const DENIED_BODY: &str =
    "denied by ext_authz for not found header `x-ext-authz: allow` in the request";

/// What one check asked, as the test reads it.
#[derive(Debug, Clone, Default)]
pub struct SeenCheck {
    pub method: String,
    pub path: String,
    pub host: String,
    pub headers: Vec<(String, String)>,
    pub source_principal: String,
    pub destination_principal: String,
    pub source_address: String,
    /// `false` for a TCP connection's check.
    pub http: bool,
    /// The request body the check carried.
    pub body: Vec<u8>,
}

/// How the authorizer behaves.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    pub delay: Duration,
    pub allowed_principals: Vec<String>,
}

pub struct ExtAuthzServer {
    address: SocketAddr,
    seen: Arc<Mutex<Vec<SeenCheck>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ExtAuthzServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ExtAuthzServer {
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Every check received so far.
    pub fn seen(&self) -> Vec<SeenCheck> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The gRPC form.
    pub async fn grpc(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let service = GrpcAuthorizer {
            behaviour,
            seen: seen.clone(),
        };
        let task = tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(auth::authorization_server::AuthorizationServer::new(
                    service,
                ))
                .serve_with_incoming(incoming)
                .await;
        });
        Self {
            address,
            seen,
            task,
        }
    }

    /// The HTTP form.
    pub async fn http(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (seen, behaviour) = (state.clone(), behaviour.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let (seen, behaviour) = (seen.clone(), behaviour.clone());
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                http_check(request, &behaviour, &seen).await,
                            )
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Self {
            address,
            seen,
            task,
        }
    }
}

async fn http_check(
    request: Request<hyper::body::Incoming>,
    behaviour: &Behaviour,
    seen: &Mutex<Vec<SeenCheck>>,
) -> Response<Full<Bytes>> {
    tokio::time::sleep(behaviour.delay).await;
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let allowed = headers
        .iter()
        .any(|(n, v)| n == "x-ext-authz" && v == "allow");
    if let Ok(mut seen) = seen.lock() {
        seen.push(SeenCheck {
            method: parts.method.to_string(),
            path: parts
                .uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            host: parts
                .headers
                .get("host")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned(),
            headers,
            http: true,
            body,
            ..SeenCheck::default()
        });
    }
    let (status, result, body) = if allowed {
        (StatusCode::OK, "allowed", Bytes::new())
    } else {
        (
            StatusCode::FORBIDDEN,
            "denied",
            Bytes::from_static(DENIED_BODY.as_bytes()),
        )
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("x-ext-authz-check-result", result.parse().expect("value"));
    response
}

struct GrpcAuthorizer {
    behaviour: Behaviour,
    seen: Arc<Mutex<Vec<SeenCheck>>>,
}

#[tonic::async_trait]
impl auth::authorization_server::Authorization for GrpcAuthorizer {
    async fn check(
        &self,
        request: tonic::Request<auth::CheckRequest>,
    ) -> Result<tonic::Response<auth::CheckResponse>, tonic::Status> {
        tokio::time::sleep(self.behaviour.delay).await;
        let attributes = request.into_inner().attributes.unwrap_or_default();
        let source = attributes.source.unwrap_or_default();
        let destination = attributes.destination.unwrap_or_default();
        let http = attributes.request.and_then(|r| r.http);
        let address = source
            .address
            .and_then(|a| a.address)
            .map(|core::address::Address::SocketAddress(s)| {
                let port = match s.port_specifier {
                    Some(core::socket_address::PortSpecifier::PortValue(p)) => p.to_string(),
                    _ => String::new(),
                };
                format!("{}:{port}", s.address)
            })
            .unwrap_or_default();
        let check = SeenCheck {
            method: http.as_ref().map(|h| h.method.clone()).unwrap_or_default(),
            path: http.as_ref().map(|h| h.path.clone()).unwrap_or_default(),
            host: http.as_ref().map(|h| h.host.clone()).unwrap_or_default(),
            headers: http
                .as_ref()
                .map(|h| {
                    h.headers
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            source_principal: source.principal.clone(),
            destination_principal: destination.principal,
            source_address: address,
            http: http.is_some(),
            body: http
                .as_ref()
                .map(|h| {
                    if h.raw_body.is_empty() {
                        h.body.clone().into_bytes()
                    } else {
                        h.raw_body.clone()
                    }
                })
                .unwrap_or_default(),
        };
        let allowed = if check.http {
            check
                .headers
                .iter()
                .any(|(n, v)| n == "x-ext-authz" && v == "allow")
        } else {
            self.behaviour
                .allowed_principals
                .contains(&source.principal)
        };
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(check);
        }
        let header = |value: &str| core::HeaderValueOption {
            header: Some(core::HeaderValue {
                key: "x-ext-authz-check-result".into(),
                value: value.into(),
                raw_value: Vec::new(),
            }),
            append: Some(false),
            ..Default::default()
        };
        let response = if allowed {
            auth::CheckResponse {
                status: Some(Status::default()),
                http_response: Some(auth::check_response::HttpResponse::OkResponse(
                    auth::OkHttpResponse {
                        headers: vec![header("allowed")],
                        ..Default::default()
                    },
                )),
                dynamic_metadata: None,
            }
        } else {
            auth::CheckResponse {
                status: Some(Status {
                    code: 7, // PERMISSION_DENIED
                    message: "denied".into(),
                    details: Vec::new(),
                }),
                http_response: Some(auth::check_response::HttpResponse::DeniedResponse(
                    auth::DeniedHttpResponse {
                        status: Some(HttpStatus { code: 403 }),
                        headers: vec![header("denied")],
                        body: DENIED_BODY.into(),
                    },
                )),
                dynamic_metadata: None,
            }
        };
        Ok(tonic::Response::new(response))
    }
}
