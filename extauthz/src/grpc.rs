//! The gRPC form: `envoy.service.auth.v3.Authorization/Check` on a channel that
//! connects on first use and reconnects by itself.

use std::time::Duration;

use bytes::Bytes;

use crate::check::{CheckError, CheckInput, HeaderChange, HeaderMode, PeerInput, Verdict};
use crate::proto::envoy::config::core::v3 as core;
use crate::proto::envoy::service::auth::v3 as auth;
use auth::authorization_client::AuthorizationClient;
use auth::check_response::HttpResponse;

pub(crate) struct GrpcClient {
    client: AuthorizationClient<tonic::transport::Channel>,
    timeout: Duration,
    pack_as_bytes: bool,
}

impl GrpcClient {
    pub(crate) fn new(
        service: &str,
        port: u16,
        timeout: Duration,
        pack_as_bytes: bool,
    ) -> Result<Self, CheckError> {
        let endpoint = tonic::transport::Endpoint::from_shared(format!(
            "http://{}:{port}",
            bracketed(service)
        ))
        .map_err(|e| CheckError::Unreachable(format!("{service}:{port}: {e}")))?
        .connect_timeout(timeout)
        .timeout(timeout)
        .tcp_nodelay(true);
        Ok(Self {
            client: AuthorizationClient::new(endpoint.connect_lazy()),
            timeout,
            pack_as_bytes,
        })
    }

    pub(crate) async fn check(&self, input: &CheckInput) -> Result<Verdict, CheckError> {
        let mut client = self.client.clone();
        let request = request(input, self.pack_as_bytes);
        let response = tokio::time::timeout(self.timeout, client.check(request))
            .await
            .map_err(|_| CheckError::Timeout(self.timeout))?
            .map_err(|status| match status.code() {
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                    CheckError::Timeout(self.timeout)
                }
                _ => CheckError::Unreachable(status.to_string()),
            })?;
        Ok(verdict(response.into_inner()))
    }
}

/// An IPv6 address as a URI host.
pub(crate) fn bracketed(service: &str) -> String {
    if service.contains(':') && !service.starts_with('[') {
        format!("[{service}]")
    } else {
        service.to_owned()
    }
}

fn request(input: &CheckInput, pack_as_bytes: bool) -> auth::CheckRequest {
    let http = input.http.as_ref().map(|h| {
        let mut headers = std::collections::HashMap::<String, String>::new();
        for (name, value) in &h.headers {
            headers
                .entry(name.clone())
                .and_modify(|v| {
                    v.push(',');
                    v.push_str(value);
                })
                .or_insert_with(|| value.clone());
        }
        let (body, raw_body) = match (&h.body, pack_as_bytes) {
            (Some(b), true) => (String::new(), b.to_vec()),
            (Some(b), false) => (String::from_utf8_lossy(b).into_owned(), Vec::new()),
            (None, _) => (String::new(), Vec::new()),
        };
        auth::attribute_context::HttpRequest {
            id: headers.get("x-request-id").cloned().unwrap_or_default(),
            method: h.method.clone(),
            headers,
            path: h.path.clone(),
            host: h.host.clone(),
            scheme: h.scheme.clone(),
            size: h.size,
            protocol: h.protocol.clone(),
            body,
            raw_body,
            ..Default::default()
        }
    });
    auth::CheckRequest {
        attributes: Some(auth::AttributeContext {
            source: Some(peer(&input.source)),
            destination: Some(peer(&input.destination)),
            request: Some(auth::attribute_context::Request {
                time: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
                http,
            }),
            context_extensions: Default::default(),
        }),
    }
}

fn peer(p: &PeerInput) -> auth::attribute_context::Peer {
    auth::attribute_context::Peer {
        address: Some(core::Address {
            address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                protocol: core::socket_address::Protocol::Tcp.into(),
                address: p.address.ip().to_string(),
                port_specifier: Some(core::socket_address::PortSpecifier::PortValue(u32::from(
                    p.address.port(),
                ))),
            })),
        }),
        principal: p.principal.clone().unwrap_or_default(),
        ..Default::default()
    }
}

/// Envoy's reading of a CheckResponse: status OK (or none) allows.
pub(crate) fn verdict(response: auth::CheckResponse) -> Verdict {
    let ok = response.status.as_ref().is_none_or(|s| s.code == 0);
    match (ok, response.http_response) {
        (true, Some(HttpResponse::OkResponse(ok))) => Verdict::Allow {
            upstream: changes(ok.headers),
            remove: ok
                .headers_to_remove
                .into_iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            downstream: changes(ok.response_headers_to_add),
        },
        (true, _) => Verdict::allow(),
        (false, Some(HttpResponse::DeniedResponse(denied))) => Verdict::Deny {
            status: denied
                .status
                .and_then(|s| u16::try_from(s.code).ok())
                .filter(|c| (200..=599).contains(c))
                .unwrap_or(403),
            headers: changes(denied.headers),
            body: Bytes::from(denied.body),
        },
        (false, _) => Verdict::Deny {
            status: 403,
            headers: Vec::new(),
            body: Bytes::new(),
        },
    }
}

/// Header options as Envoy applies them: `append` when set; otherwise the
/// append action, its default (0) read as "overwrite", as `append` defaults to
/// false in ext_authz answers.
fn changes(options: Vec<core::HeaderValueOption>) -> Vec<HeaderChange> {
    use core::header_value_option::HeaderAppendAction as Action;
    options
        .into_iter()
        .filter_map(|option| {
            let header = option.header?;
            let value = if header.raw_value.is_empty() {
                header.value
            } else {
                String::from_utf8(header.raw_value).ok()?
            };
            let mode = match option.append {
                Some(true) => HeaderMode::Append,
                Some(false) => HeaderMode::Overwrite,
                None => match Action::try_from(option.append_action) {
                    Ok(Action::AddIfAbsent) => HeaderMode::AddIfAbsent,
                    Ok(Action::OverwriteIfExists) => HeaderMode::OverwriteIfExists,
                    _ => HeaderMode::Overwrite,
                },
            };
            Some(HeaderChange {
                name: header.key.to_ascii_lowercase(),
                value,
                mode,
            })
        })
        .collect()
}
