//! Node attestation, the agent's side: one [`AgentAttestor`] per method (SPIRE's
//! agent-side NodeAttestor plugins) produces the evidence `AttestAgent` carries,
//! in the payload format `meshward_api::attestation` defines for its type. A new
//! method is one implementation here, chosen in [`configured`].

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use crate::config::AgentConfig;
use meshward_api::attestation::{self, K8sPsatPayload};

use super::imds::Imds;

use super::AgentError;

pub(crate) type PayloadFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<u8>, AgentError>> + Send + 'a>>;

/// One node attestation method, as the agent proves it.
pub(crate) trait AgentAttestor: Send + Sync {
    /// The type the issuer's attestor answers to.
    fn kind(&self) -> &'static str;
    /// The evidence, read fresh for each attestation (tokens rotate).
    fn payload(&self) -> PayloadFuture<'_>;
    /// What to tell an operator whose attestation was refused, if anything.
    fn refusal_hint(&self) -> &'static str {
        ""
    }
}

/// The attestor the configuration names: `k8s_psat`, `aws_iid`, else a join token.
pub(crate) fn configured(config: &AgentConfig) -> Result<Box<dyn AgentAttestor>, AgentError> {
    if let Some(iid) = &config.aws_iid {
        return Ok(Box::new(AwsIid(Imds {
            address: iid.imds_address,
            timeout: iid.imds_timeout,
        })));
    }
    if let Some(psat) = &config.k8s_psat {
        return Ok(Box::new(K8sPsat {
            cluster: psat.cluster.clone(),
            token_path: psat.token_path.clone(),
        }));
    }
    match (&config.join_token, &config.join_token_file) {
        (Some(token), _) => Ok(Box::new(JoinToken::Inline(token.clone()))),
        (None, Some(path)) => Ok(Box::new(JoinToken::File(path.clone()))),
        (None, None) => Err(AgentError::Attestation(
            "no attestation method: set agent.join_token, agent.join_token_file, agent.k8s_psat or agent.aws_iid"
                .into(),
        )),
    }
}

/// A file's contents without surrounding whitespace (tokens end with a newline).
async fn read_trimmed(path: &Path) -> Result<String, AgentError> {
    tokio::fs::read_to_string(path)
        .await
        .map(|s| s.trim().to_owned())
        .map_err(|e| AgentError::Attestation(format!("{}: {e}", path.display())))
}

enum JoinToken {
    Inline(String),
    File(PathBuf),
}

impl AgentAttestor for JoinToken {
    fn kind(&self) -> &'static str {
        attestation::JOIN_TOKEN
    }

    fn payload(&self) -> PayloadFuture<'_> {
        Box::pin(async move {
            let token = match self {
                Self::Inline(token) => token.clone(),
                Self::File(path) => read_trimmed(path).await?,
            };
            Ok(token.into_bytes())
        })
    }

    fn refusal_hint(&self) -> &'static str {
        " (a join token works once: after an eviction or a lost data_dir, generate a new one)"
    }
}

/// The projected service-account token of the daemon's pod.
struct K8sPsat {
    cluster: String,
    token_path: PathBuf,
}

impl AgentAttestor for K8sPsat {
    fn kind(&self) -> &'static str {
        attestation::K8S_PSAT
    }

    fn payload(&self) -> PayloadFuture<'_> {
        Box::pin(async move {
            let token = read_trimmed(&self.token_path).await?;
            Ok(K8sPsatPayload {
                cluster: self.cluster.clone(),
                token,
            }
            .encode())
        })
    }
}

/// The EC2 instance's identity document and its signature, fresh from IMDS.
struct AwsIid(Imds);

impl AgentAttestor for AwsIid {
    fn kind(&self) -> &'static str {
        attestation::AWS_IID
    }

    fn payload(&self) -> PayloadFuture<'_> {
        Box::pin(async move {
            let identity = self
                .0
                .identity()
                .await
                .map_err(|e| AgentError::Attestation(e.to_string()))?;
            Ok(identity.encode())
        })
    }

    fn refusal_hint(&self) -> &'static str {
        " (if the instance attested before and lost its data_dir: evict its node on the issuer)"
    }
}

#[cfg(test)]
mod tests {
    use crate::config::AgentPsat;

    use super::*;

    #[tokio::test]
    async fn the_configured_method_and_its_payload() {
        let dir = tempfile::tempdir().unwrap();
        let token_path = dir.path().join("token");
        std::fs::write(&token_path, "header.claims.sig\n").unwrap();
        let psat = configured(&AgentConfig {
            k8s_psat: Some(AgentPsat {
                cluster: "eks".into(),
                token_path: token_path.clone(),
            }),
            join_token: Some("ignored".into()),
            ..AgentConfig::default()
        })
        .unwrap();
        assert_eq!(psat.kind(), "k8s_psat");
        let payload = K8sPsatPayload::decode(&psat.payload().await.unwrap()).unwrap();
        assert_eq!(payload.cluster, "eks");
        assert_eq!(payload.token, "header.claims.sig");

        let join = configured(&AgentConfig {
            join_token_file: Some(token_path),
            ..AgentConfig::default()
        })
        .unwrap();
        assert_eq!(join.kind(), "join_token");
        assert_eq!(join.payload().await.unwrap(), b"header.claims.sig");
        assert!(configured(&AgentConfig::default()).is_err());
    }

    #[tokio::test]
    async fn aws_iid_sends_what_imds_serves() {
        use meshward_api::attestation::AwsIidPayload;
        use meshward_test_support::imds::{self, Behaviour};
        let (address, server) = imds::start(Behaviour::Serve {
            document: "{}".into(),
            rsa2048: "MIAG".into(),
        })
        .await;
        let iid = configured(&AgentConfig {
            aws_iid: Some(crate::config::AgentAwsIid {
                imds_address: address,
                ..Default::default()
            }),
            ..AgentConfig::default()
        })
        .unwrap();
        assert_eq!(iid.kind(), "aws_iid");
        let payload = AwsIidPayload::decode(&iid.payload().await.unwrap()).unwrap();
        assert_eq!(
            (payload.document.as_str(), payload.rsa2048.as_str()),
            ("{}", "MIAG")
        );
        server.abort();
    }
}
