//! The EC2 instance metadata service, IMDSv2 only (SPIRE's agent uses the AWS
//! SDK, which tries v2 first): a session token by `PUT /latest/api/token`, then
//! the identity document and its RSA-2048 signature with that token.
//!
//! Every request is bounded in time and every answer in size: an IMDS that hangs
//! or answers without end fails the attestation (and it is retried), it never
//! holds the agent. AWS answers the token `PUT` with an IP hop limit (1 by
//! default): the daemon must run in the node's network namespace (hostNetwork),
//! or the node group's `HttpPutResponseHopLimit` must be raised.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use meshward_api::attestation::AwsIidPayload;

const TOKEN_PATH: &str = "/latest/api/token";
const DOCUMENT_PATH: &str = "/latest/dynamic/instance-identity/document";
const RSA2048_PATH: &str = "/latest/dynamic/instance-identity/rsa2048";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
/// The session is used at once: a short one leaks little.
const TOKEN_TTL_SECONDS: &str = "60";
/// AWS's token is ~60 bytes; a document or its signature is under 2 KiB.
const MAX_TOKEN: usize = 1024;
const MAX_ANSWER: usize = 16 * 1024;

/// Why IMDS did not give the node's identity.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ImdsError {
    #[error("IMDS {address}: {what} did not answer within {timeout:?}{hint}")]
    Timeout {
        address: SocketAddr,
        what: &'static str,
        timeout: Duration,
        hint: &'static str,
    },
    #[error("IMDS {address}: {what}: {reason}")]
    Http {
        address: SocketAddr,
        what: &'static str,
        reason: String,
    },
    #[error("IMDS {address}: {what} answered {status}")]
    Status {
        address: SocketAddr,
        what: &'static str,
        status: StatusCode,
    },
    #[error("IMDS {address}: {what} answered more than {limit} bytes")]
    TooLarge {
        address: SocketAddr,
        what: &'static str,
        limit: usize,
    },
}

/// An IMDS endpoint with its time bound per request.
#[derive(Debug, Clone)]
pub(crate) struct Imds {
    pub(crate) address: SocketAddr,
    pub(crate) timeout: Duration,
}

impl Imds {
    /// The identity document and its `rsa2048` signature, as SPIRE's agent sends them.
    pub(crate) async fn identity(&self) -> Result<AwsIidPayload, ImdsError> {
        let token = self
            .request(
                Method::PUT,
                TOKEN_PATH,
                (TTL_HEADER, TOKEN_TTL_SECONDS),
                MAX_TOKEN,
            )
            .await?;
        let token = text(token, self.address, "the session token")?;
        let get = |path| {
            self.request(
                Method::GET,
                path,
                (TOKEN_HEADER, token.as_str()),
                MAX_ANSWER,
            )
        };
        let document = text(get(DOCUMENT_PATH).await?, self.address, "the document")?;
        let rsa2048 = text(get(RSA2048_PATH).await?, self.address, "the signature")?;
        Ok(AwsIidPayload {
            document,
            signature: String::new(),
            rsa2048,
        })
    }

    /// One request on a fresh connection, the whole exchange within the timeout.
    async fn request(
        &self,
        method: Method,
        path: &'static str,
        (name, value): (&'static str, &str),
        limit: usize,
    ) -> Result<Bytes, ImdsError> {
        let what = match path {
            TOKEN_PATH => "the session token (PUT)",
            DOCUMENT_PATH => "the identity document",
            _ => "the rsa2048 signature",
        };
        let hint = if path == TOKEN_PATH {
            " (is the hop limit 1 and the daemon not in the node's network namespace?)"
        } else {
            ""
        };
        let exchange = self.exchange(method, path, (name, value), limit, what);
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ImdsError::Timeout {
                address: self.address,
                what,
                timeout: self.timeout,
                hint,
            })?
    }

    async fn exchange(
        &self,
        method: Method,
        path: &'static str,
        (name, value): (&'static str, &str),
        limit: usize,
        what: &'static str,
    ) -> Result<Bytes, ImdsError> {
        let address = self.address;
        let http = |reason: String| ImdsError::Http {
            address,
            what,
            reason,
        };
        let stream = TcpStream::connect(address)
            .await
            .map_err(|e| http(e.to_string()))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                .await
                .map_err(|e| http(e.to_string()))?;
        let connection = tokio::spawn(connection);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, address.ip().to_string())
            .header(name, value)
            .body(Empty::new())
            .map_err(|e| http(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| http(e.to_string()));
        let body = match response {
            Ok(response) if response.status() == StatusCode::OK => {
                Limited::new(response.into_body(), limit)
                    .collect()
                    .await
                    .map(http_body_util::Collected::to_bytes)
                    .map_err(|e| match e.downcast::<http_body_util::LengthLimitError>() {
                        Ok(_) => ImdsError::TooLarge {
                            address,
                            what,
                            limit,
                        },
                        Err(e) => http(e.to_string()),
                    })
            }
            Ok(response) => Err(ImdsError::Status {
                address,
                what,
                status: response.status(),
            }),
            Err(e) => Err(e),
        };
        connection.abort();
        body
    }
}

fn text(bytes: Bytes, address: SocketAddr, what: &'static str) -> Result<String, ImdsError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| ImdsError::Http {
        address,
        what,
        reason: "not UTF-8".into(),
    })
}

#[cfg(test)]
mod tests {
    use meshward_test_support::imds::{self, Behaviour};

    use super::*;

    fn client(address: SocketAddr) -> Imds {
        Imds {
            address,
            timeout: Duration::from_millis(500),
        }
    }

    #[tokio::test]
    async fn the_document_and_signature_with_a_session_token() {
        let (address, server) = imds::start(Behaviour::Serve {
            document: "{\"instanceId\" : \"i-0a\"}".into(),
            rsa2048: "MIAGCSqG".into(),
        })
        .await;
        let payload = client(address).identity().await.unwrap();
        assert_eq!(payload.document, "{\"instanceId\" : \"i-0a\"}");
        assert_eq!(payload.rsa2048, "MIAGCSqG");
        server.abort();
    }

    /// Advisory: an IMDS that hangs, or answers without end, fails the
    /// attestation within the timeout and the size bound.
    #[tokio::test]
    async fn an_imds_that_hangs_or_answers_without_end_fails_in_bounds() {
        let (address, server) = imds::start(Behaviour::Hang).await;
        let hung = tokio::time::timeout(Duration::from_secs(5), client(address).identity())
            .await
            .expect("the IMDS client gives up on its own")
            .unwrap_err();
        assert!(matches!(hung, ImdsError::Timeout { .. }), "{hung}");
        assert!(hung.to_string().contains("hop limit"), "{hung}");
        server.abort();

        let (address, server) = imds::start(Behaviour::Endless).await;
        let endless = client(address).identity().await.unwrap_err();
        assert!(
            matches!(
                endless,
                ImdsError::TooLarge {
                    limit: MAX_TOKEN,
                    ..
                }
            ),
            "{endless}"
        );
        server.abort();

        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = closed.local_addr().unwrap();
        drop(closed);
        let refused = client(address).identity().await.unwrap_err();
        assert!(matches!(refused, ImdsError::Http { .. }), "{refused}");
    }
}
