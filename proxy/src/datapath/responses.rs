//! Every answer the data path gives itself instead of the pod, in one place, as
//! Envoy gives them (a client cannot tell the two proxies apart by their refusals):
//!
//! - refused by policy: HTTP `403`, `text/plain`, body `RBAC: access denied`
//!   (19 bytes); gRPC: a trailers-only `200` with `grpc-status: 7`
//!   (PERMISSION_DENIED) and the same message. The connection stays usable.
//! - a JWT that does not verify (RequestAuthentication): `401`, `text/plain`,
//!   body Envoy's reason (`Jwt verification fails`, `Jwt is expired`, ...) and
//!   `www-authenticate: Bearer realm="http://<host><path>", error="invalid_token"`;
//!   gRPC: `grpc-status: 16` (UNAUTHENTICATED).
//! - refused by a CUSTOM policy's provider: the status, headers and body it gave
//!   (`statusOnError`, 403 by default, when it could not be asked).
//! - malformed: `400`, with the reason.
//! - the pod unreachable: `503` `upstream connect error or disconnect/reset before
//!   headers`; gRPC: `grpc-status: 14` (UNAVAILABLE).
//! - an HBONE CONNECT: `200` opens the tunnel; `400` a malformed or misdirected
//!   CONNECT; `401` a TCP port policy refused before a byte flowed.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use super::body::{self, ProxyBody};

pub(crate) const RBAC_DENIED: &str = "RBAC: access denied";
const UPSTREAM_FAILED: &str = "upstream connect error or disconnect/reset before headers\n";

/// Whether a request is gRPC (`content-type: application/grpc[+proto|...]`).
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// A request policy refused.
pub(crate) fn forbidden(grpc: bool) -> Response<ProxyBody> {
    if grpc {
        return grpc_status("7", RBAC_DENIED);
    }
    plain(
        StatusCode::FORBIDDEN,
        Bytes::from_static(RBAC_DENIED.as_bytes()),
    )
}

/// A request whose token did not verify; `reason` is Envoy's text, `realm` the
/// URL the client asked for.
pub(crate) fn unauthorized(reason: &str, realm: &str, grpc: bool) -> Response<ProxyBody> {
    if grpc {
        return grpc_status("16", reason);
    }
    let mut response = plain(StatusCode::UNAUTHORIZED, Bytes::from(reason.to_owned()));
    let challenge = format!("Bearer realm=\"{realm}\", error=\"invalid_token\"");
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// A CUSTOM provider's refusal: its status, headers and body, as it gave them.
pub(crate) fn custom_denied(
    status: u16,
    headers: &[meshward_extauthz::HeaderChange],
    body: Bytes,
) -> Response<ProxyBody> {
    let mut response = Response::new(body::full(Full::new(body)));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
    meshward_extauthz::apply_headers(response.headers_mut(), headers, &[]);
    response
}

/// A bare status (413, 408), as Envoy sends them.
pub(crate) fn status_only(status: StatusCode) -> Response<ProxyBody> {
    let text = status.canonical_reason().unwrap_or("").to_owned();
    plain(status, Bytes::from(text))
}

/// A request that cannot be judged as it is.
pub(crate) fn bad_request(reason: &str) -> Response<ProxyBody> {
    plain(
        StatusCode::BAD_REQUEST,
        Bytes::from(format!("bad request: {reason}\n")),
    )
}

/// The pod did not answer.
pub(crate) fn unavailable(grpc: bool) -> Response<ProxyBody> {
    if grpc {
        return grpc_status("14", "upstream connect error");
    }
    plain(
        StatusCode::SERVICE_UNAVAILABLE,
        Bytes::from_static(UPSTREAM_FAILED.as_bytes()),
    )
}

/// The answer to an HBONE CONNECT.
pub(crate) fn tunnel(status: StatusCode) -> Response<()> {
    let mut response = Response::new(());
    *response.status_mut() = status;
    response
}

fn plain(status: StatusCode, text: Bytes) -> Response<ProxyBody> {
    let mut response = Response::new(body::full(Full::new(text)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// A trailers-only gRPC answer: `200` with the status in the headers.
fn grpc_status(code: &'static str, message: &str) -> Response<ProxyBody> {
    let mut response = Response::new(body::full(Full::new(Bytes::new())));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from_static(code));
    // grpc-message is percent-encoded text; these messages are plain ASCII
    if let Ok(message) = HeaderValue::from_str(message) {
        headers.insert("grpc-message", message);
    }
    response
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn text(response: Response<ProxyBody>) -> String {
        let body = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn refusals_as_envoy_writes_them() {
        let r = forbidden(false);
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/plain");
        let body = text(r).await;
        assert_eq!((body.as_str(), body.len()), (RBAC_DENIED, 19));

        let r = forbidden(true);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "7");
        assert_eq!(r.headers()["grpc-message"], RBAC_DENIED);

        let r = unavailable(false);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(text(r).await, UPSTREAM_FAILED);
        assert_eq!(unavailable(true).headers()["grpc-status"], "14");

        let r = bad_request("two Host headers");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(text(r).await, "bad request: two Host headers\n");
        assert_eq!(tunnel(StatusCode::UNAUTHORIZED).status(), 401);
    }

    #[test]
    fn grpc_by_content_type() {
        let mut headers = HeaderMap::new();
        assert!(!is_grpc(&headers));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert!(is_grpc(&headers));
    }
}
