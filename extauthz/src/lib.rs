//! meshward-extauthz: external authorization for CUSTOM AuthorizationPolicies,
//! in Envoy's ext_authz protocol, so OPA-Envoy or any ext_authz server decides.
//!
//! An [`Authorizer`] is one configured provider (`extension_providers`): the gRPC
//! form (`envoy.service.auth.v3.Authorization/Check`, `grpc.rs`) or the HTTP form
//! (`http.rs`). [`Authorizer::check`] asks it about one request or connection
//! ([`CheckInput`]) and says what to do ([`Verdict`]): allow, with headers to set
//! for the pod and for the client, or deny, with the status, headers and body the
//! client gets. A provider that cannot be asked (unreachable, timed out, a
//! malformed answer) gives `statusOnError` (403) unless `failOpen`.

mod authorizer;
mod check;
pub mod config;
mod grpc;
mod headers;
mod http;

pub use authorizer::Authorizer;
pub use check::{CheckError, CheckInput, HeaderChange, HeaderMode, HttpInput, PeerInput, Verdict};
pub use headers::apply as apply_headers;

/// The generated protocol (a subset of Envoy's API with its field numbers).
#[allow(clippy::all, unreachable_pub, missing_docs)]
pub mod proto {
    pub mod envoy {
        pub mod service {
            pub mod auth {
                pub mod v3 {
                    tonic::include_proto!("envoy.service.auth.v3");
                }
            }
        }
        pub mod config {
            pub mod core {
                pub mod v3 {
                    tonic::include_proto!("envoy.config.core.v3");
                }
            }
        }
        pub mod r#type {
            pub mod v3 {
                tonic::include_proto!("envoy.r#type.v3");
            }
        }
    }
    pub mod google {
        pub mod rpc {
            tonic::include_proto!("google.rpc");
        }
    }
}

/// How an authorizer's answer is read, opened to the fuzz targets in `fuzz/` (the
/// `fuzzing` feature, which the product never enables).
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    use crate::config::ExtAuthzHttp;
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};
    use prost::Message as _;

    use crate::Verdict;

    /// A gRPC `CheckResponse` message as it arrives (protobuf), read as the proxy
    /// reads it.
    pub fn grpc_verdict(message: &[u8]) -> Result<Verdict, prost::DecodeError> {
        let response = crate::proto::envoy::service::auth::v3::CheckResponse::decode(message)?;
        Ok(crate::grpc::verdict(response))
    }

    /// An HTTP authorizer's answer, read under `config`.
    pub fn http_verdict(
        config: &ExtAuthzHttp,
        status: StatusCode,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Verdict {
        crate::http::HttpClient::new(config).verdict(status, headers, body)
    }
}
