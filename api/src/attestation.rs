//! The payloads of `AttestAgent`, one per attestor type: what an agent sends and
//! what the issuer's attestor of that type reads, defined once for both sides.
//! The formats are SPIRE's, so the same attestation data means the same thing.

use serde::{Deserialize, Serialize};

use crate::proto::AttestAgentRequest;

/// A join token (one use, with a TTL); the payload is the token.
pub const JOIN_TOKEN: &str = "join_token";
/// A Kubernetes projected service-account token, checked by TokenReview.
pub const K8S_PSAT: &str = "k8s_psat";
/// An EC2 instance identity document with AWS's signatures, read from IMDS.
pub const AWS_IID: &str = "aws_iid";

/// `aws_iid`'s payload: SPIRE's `{"document", "signature", "rsa2048"}`, each as
/// IMDS answered it. The issuer verifies `rsa2048` (PKCS#7, base64 without PEM
/// armour) and requires `document` to be, byte for byte, the content it signs;
/// `signature` (the older RSA-1024 one) is carried for SPIRE compatibility only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsIidPayload {
    pub document: String,
    #[serde(default)]
    pub signature: String,
    pub rsa2048: String,
}

/// `k8s_psat`'s payload: SPIRE's `{"cluster": ..., "token": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K8sPsatPayload {
    pub cluster: String,
    pub token: String,
}

/// Why a payload is not its type's.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("{kind} payload: {reason}")]
    Invalid { kind: &'static str, reason: String },
}

impl K8sPsatPayload {
    pub fn encode(&self) -> Vec<u8> {
        // a struct of two strings always serializes
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(payload: &[u8]) -> Result<Self, PayloadError> {
        serde_json::from_slice(payload).map_err(|e| PayloadError::Invalid {
            kind: K8S_PSAT,
            reason: e.to_string(),
        })
    }
}

impl AwsIidPayload {
    pub fn encode(&self) -> Vec<u8> {
        // a struct of strings always serializes
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(payload: &[u8]) -> Result<Self, PayloadError> {
        serde_json::from_slice(payload).map_err(|e| PayloadError::Invalid {
            kind: AWS_IID,
            reason: e.to_string(),
        })
    }
}

/// The join token of a `join_token` payload.
pub fn join_token(payload: &[u8]) -> Result<&str, PayloadError> {
    std::str::from_utf8(payload).map_err(|_| PayloadError::Invalid {
        kind: JOIN_TOKEN,
        reason: "not UTF-8".into(),
    })
}

/// An attestation with a join token.
pub fn join_token_request(token: &str, csr: Vec<u8>) -> AttestAgentRequest {
    AttestAgentRequest {
        r#type: JOIN_TOKEN.into(),
        payload: token.as_bytes().to_vec(),
        csr,
    }
}

/// An attestation with a projected service-account token of `cluster`.
pub fn k8s_psat_request(cluster: &str, token: &str, csr: Vec<u8>) -> AttestAgentRequest {
    AttestAgentRequest {
        r#type: K8S_PSAT.into(),
        payload: K8sPsatPayload {
            cluster: cluster.into(),
            token: token.into(),
        }
        .encode(),
        csr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_spire_s_and_read_back() {
        let request = k8s_psat_request("eks", "t.o.k", vec![1]);
        let json: serde_json::Value = serde_json::from_slice(&request.payload).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"cluster": "eks", "token": "t.o.k"})
        );
        let payload = K8sPsatPayload::decode(&request.payload).unwrap();
        assert_eq!(payload.cluster, "eks");
        assert!(K8sPsatPayload::decode(b"{\"cluster\":\"eks\"}").is_err());
        assert!(K8sPsatPayload::decode(b"{\"cluster\":\"a\",\"token\":\"b\",\"x\":1}").is_err());
        assert_eq!(
            join_token(&join_token_request("abc", vec![]).payload).unwrap(),
            "abc"
        );
        assert!(join_token(&[0xff]).is_err());
        let iid = AwsIidPayload {
            document: "{}".into(),
            signature: "s".into(),
            rsa2048: "r".into(),
        };
        let json: serde_json::Value = serde_json::from_slice(&iid.encode()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"document": "{}", "signature": "s", "rsa2048": "r"})
        );
        assert_eq!(AwsIidPayload::decode(&iid.encode()).unwrap(), iid);
        assert!(AwsIidPayload::decode(b"{\"document\":\"{}\"}").is_err());
    }
}
