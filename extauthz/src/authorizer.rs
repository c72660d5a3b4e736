//! One configured provider and its failure rule.

use crate::config::{ExtensionProvider, RequestBody};

use crate::check::{CheckError, CheckInput, Verdict};
use crate::grpc::GrpcClient;
use crate::http::HttpClient;

/// A provider of `extension_providers`, ready to be asked.
pub struct Authorizer {
    name: String,
    kind: Kind,
    fail_open: bool,
    status_on_error: u16,
    body: Option<RequestBody>,
}

enum Kind {
    Grpc(GrpcClient),
    Http(Box<HttpClient>),
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("name", &self.name)
            .field("fail_open", &self.fail_open)
            .finish_non_exhaustive()
    }
}

impl Authorizer {
    /// Builds the client; nothing connects until the first check.
    pub fn new(config: &ExtensionProvider) -> Result<Self, CheckError> {
        let (kind, fail_open, body) =
            match (&config.envoy_ext_authz_grpc, &config.envoy_ext_authz_http) {
                (Some(g), _) => {
                    let pack = g
                        .include_request_body_in_check
                        .as_ref()
                        .is_some_and(|b| b.pack_as_bytes);
                    (
                        Kind::Grpc(GrpcClient::new(&g.service, g.port, g.timeout, pack)?),
                        g.fail_open,
                        g.include_request_body_in_check.clone(),
                    )
                }
                (None, Some(h)) => (
                    Kind::Http(Box::new(HttpClient::new(h))),
                    h.fail_open,
                    h.include_request_body_in_check.clone(),
                ),
                (None, None) => {
                    return Err(CheckError::Protocol(format!(
                        "provider {:?} names no authorizer",
                        config.name
                    )));
                }
            };
        Ok(Self {
            name: config.name.clone(),
            kind,
            fail_open,
            status_on_error: config.status_on_error(),
            body,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the check carries the request body, and how much of it.
    pub fn body(&self) -> Option<&RequestBody> {
        self.body.as_ref()
    }

    /// Only the gRPC form judges TCP connections (Envoy's network ext_authz).
    pub fn judges_tcp(&self) -> bool {
        matches!(self.kind, Kind::Grpc(_))
    }

    /// Asks the authorizer.
    pub async fn check(&self, input: &CheckInput) -> Result<Verdict, CheckError> {
        match &self.kind {
            Kind::Grpc(client) => client.check(input).await,
            Kind::Http(client) => client.check(input).await,
        }
    }

    /// What a check that failed means: `statusOnError` (403 by default), or the
    /// request through when `failOpen`.
    pub fn on_error(&self) -> Verdict {
        if self.fail_open {
            return Verdict::allow();
        }
        Verdict::Deny {
            status: self.status_on_error,
            headers: Vec::new(),
            body: bytes::Bytes::new(),
        }
    }
}
