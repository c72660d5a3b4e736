//! What a refused request gets, as Envoy's RBAC filter answers it: HTTP `403`,
//! `content-type: text/plain`, body `RBAC: access denied` (19 bytes); for gRPC a
//! trailers-only `200` with `grpc-status: 7` (PERMISSION_DENIED) and the same
//! message. The connection stays usable.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

pub const BODY: &str = "RBAC: access denied";

/// Whether a request is gRPC (`content-type: application/grpc[+proto|...]`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// The refusal for a request with these headers.
pub fn response(request_headers: &HeaderMap) -> Response<Full<Bytes>> {
    if is_grpc(request_headers) {
        let mut response = Response::new(Full::new(Bytes::new()));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", HeaderValue::from_static("7"));
        headers.insert("grpc-message", HeaderValue::from_static(BODY));
        return response;
    }
    let mut response = Response::new(Full::new(Bytes::from_static(BODY.as_bytes())));
    *response.status_mut() = StatusCode::FORBIDDEN;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn http_and_grpc_refusals() {
        let r = response(&HeaderMap::new());
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/plain");
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!((body.as_ref(), body.len()), (BODY.as_bytes(), 19));

        let mut grpc = HeaderMap::new();
        grpc.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        let r = response(&grpc);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            (
                r.headers()["grpc-status"].to_str().unwrap(),
                r.headers()["grpc-message"].to_str().unwrap()
            ),
            ("7", BODY)
        );
    }
}
