//! Why the admission step (`admit.rs`) refused a stream or a request, as one type
//! that knows how each boundary renders it: the HTTP or gRPC answer of a request
//! (`responses.rs` writes them as Envoy does), the status of an HBONE CONNECT, and
//! the access log's record. A new kind of refusal is a variant here; the compiler
//! then names every place that must say how it is rendered.

use bytes::Bytes;
use http::{Response, StatusCode};
use meshward_extauthz::HeaderChange;
use meshward_jwt::JwtFailure;
use meshward_spiffe::SpiffeId;

use super::body::ProxyBody;
use super::responses;
use super::stream::DecisionRecord;

#[derive(Debug)]
pub(crate) enum Refusal {
    /// The request cannot be judged as it is: HTTP `400`; a CONNECT, `400`.
    Malformed(String),
    /// The pod no longer trusts this peer's trust domain (a federation ended,
    /// `federatesWith` changed) since the handshake trusted it.
    Untrusted(SpiffeId),
    /// The peer's certificate expired since the handshake verified it, on a
    /// connection still open: no new stream (`401` to its CONNECT).
    Expired(SpiffeId),
    /// A token that does not verify (RequestAuthentication): `401` with Envoy's
    /// text; `realm` is the URL the client asked for.
    Unauthenticated { failure: JwtFailure, realm: String },
    /// The provider of a CUSTOM policy refused, with its answer (`None`: a
    /// provider that is not configured, refused as RBAC refuses).
    Custom {
        record: Box<DecisionRecord>,
        answer: Option<Box<CustomAnswer>>,
    },
    /// A CUSTOM policy came to apply to a held connection after its provider
    /// allowed it, or without one asked.
    CustomNeverAsked(Box<DecisionRecord>),
    /// The body a provider reads was too large (`413`), too slow (`408`) or bad.
    Body {
        record: Box<DecisionRecord>,
        status: StatusCode,
    },
    /// A DENY policy matched, or no ALLOW did.
    Denied(Box<DecisionRecord>),
}

/// A CUSTOM provider's refusal as it gave it.
#[derive(Debug)]
pub(crate) struct CustomAnswer {
    pub(crate) status: u16,
    pub(crate) headers: Vec<HeaderChange>,
    pub(crate) body: Bytes,
}

impl Refusal {
    /// The access log's record of this refusal.
    pub(crate) fn record(&self) -> DecisionRecord {
        match self {
            Self::Malformed(reason) => {
                DecisionRecord::refused("-", format!("bad request: {reason}"))
            }
            Self::Untrusted(peer) => DecisionRecord::refused(
                "-",
                format!(
                    "{peer} is no longer trusted here: the pod no longer federates with {}, or its bundle is gone",
                    peer.trust_domain()
                ),
            ),
            Self::Expired(peer) => DecisionRecord::refused(
                "-",
                format!("the certificate of {peer} expired since its connection was made"),
            ),
            Self::Unauthenticated { failure, .. } => {
                DecisionRecord::refused("-", format!("JWT refused: {failure} ({failure:?})"))
            }
            Self::Custom { record, .. }
            | Self::CustomNeverAsked(record)
            | Self::Body { record, .. }
            | Self::Denied(record) => DecisionRecord::clone(record),
        }
    }

    /// The answer to the HTTP request refused (`grpc`: as a gRPC status).
    pub(crate) fn response(self, grpc: bool) -> Response<ProxyBody> {
        match self {
            Self::Malformed(reason) => responses::bad_request(&reason),
            Self::Unauthenticated { failure, realm } => {
                responses::unauthorized(&failure.to_string(), &realm, grpc)
            }
            Self::Custom {
                answer: Some(answer),
                ..
            } => responses::custom_denied(answer.status, &answer.headers, answer.body),
            Self::Body { status, .. } => responses::status_only(status),
            Self::Untrusted(_)
            | Self::Expired(_)
            | Self::Custom { answer: None, .. }
            | Self::CustomNeverAsked(_)
            | Self::Denied(_) => responses::forbidden(grpc),
        }
    }

    /// The status of an HBONE CONNECT refused: `400` for a CONNECT that cannot be
    /// served as asked, `401` for one judged and refused before a byte flowed (as
    /// ztunnel answers).
    pub(crate) fn connect_status(&self) -> StatusCode {
        match self {
            Self::Malformed(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::UNAUTHORIZED,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.record().reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_boundary_renders_each_refusal() {
        let denied = || {
            Refusal::Denied(Box::new(DecisionRecord::refused(
                "ns/deny",
                "denied by ns/deny",
            )))
        };
        assert_eq!(denied().response(false).status(), StatusCode::FORBIDDEN);
        assert_eq!(denied().response(true).headers()["grpc-status"], "7");
        assert_eq!(denied().connect_status(), StatusCode::UNAUTHORIZED);
        assert_eq!(&*denied().record().policy, "ns/deny");

        let malformed = Refusal::Malformed("two Host headers".into());
        assert_eq!(malformed.connect_status(), StatusCode::BAD_REQUEST);
        assert_eq!(&*malformed.record().reason, "bad request: two Host headers");
        assert_eq!(malformed.response(false).status(), StatusCode::BAD_REQUEST);

        let jwt = || Refusal::Unauthenticated {
            failure: JwtFailure::Malformed,
            realm: "http://a/b".into(),
        };
        assert_eq!(jwt().response(false).status(), StatusCode::UNAUTHORIZED);
        assert_eq!(jwt().response(true).headers()["grpc-status"], "16");
        assert!(jwt().record().reason.starts_with("JWT refused: "));

        let custom = |answer| Refusal::Custom {
            record: Box::new(DecisionRecord::refused("ns/ext", "denied by ns/ext")),
            answer,
        };
        let teapot = CustomAnswer {
            status: 418,
            headers: Vec::new(),
            body: Bytes::from_static(b"no"),
        };
        assert_eq!(
            custom(Some(Box::new(teapot)))
                .response(true)
                .status()
                .as_u16(),
            418
        );
        assert_eq!(custom(None).response(false).status(), StatusCode::FORBIDDEN);

        let body = Refusal::Body {
            record: Box::new(DecisionRecord::refused("ns/ext", "too large")),
            status: StatusCode::PAYLOAD_TOO_LARGE,
        };
        assert_eq!(body.response(false).status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
