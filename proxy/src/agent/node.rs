//! The node's own identity: attestation to the issuer (the configured method of
//! `attestor.rs`), the node SVID kept on disk (0600) so a restart needs no
//! new token, and its renewal at half life.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::AgentConfig;
use meshward_api::proto;
use meshward_api::proto::agent_api_client::AgentApiClient;
use meshward_tls::{CertStore, TrustBundles};
use rustls_pki_types::CertificateDer;
use tonic::transport::Channel;

use super::AgentError;
use super::issuers::Issuers;
use super::keys::NewKey;
use meshward_spiffe::{SpiffeId, TrustDomain, pem};

/// The node SVID with its key.
#[derive(Clone)]
pub(crate) struct NodeIdentity {
    pub(crate) spiffe_id: SpiffeId,
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key_pkcs8: Vec<u8>,
    pub(crate) issued_at: SystemTime,
    pub(crate) expires_at: SystemTime,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never the key
        f.debug_struct("NodeIdentity")
            .field("spiffe_id", &self.spiffe_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl NodeIdentity {
    /// Half of the lifetime has passed: time to renew.
    pub(crate) fn renew_due(&self, now: SystemTime) -> bool {
        let life = self
            .expires_at
            .duration_since(self.issued_at)
            .unwrap_or_default();
        now >= self.issued_at + life / 2
    }

    fn from_svid(svid: proto::X509Svid, key_pkcs8: Vec<u8>) -> Result<Self, AgentError> {
        let expires_at =
            SystemTime::UNIX_EPOCH + Duration::from_secs(svid.expires_at.max(0) as u64);
        let chain: Vec<CertificateDer<'static>> = svid
            .cert_chain
            .into_iter()
            .map(CertificateDer::from)
            .collect();
        // the leaf obeys the X509-SVID rules and names the ID it was sent for
        let spiffe_id =
            meshward_tls::spiffe_id_of(chain.first().ok_or(AgentError::NoNodeIdentity)?)?;
        if spiffe_id.as_str() != svid.spiffe_id {
            return Err(AgentError::Attestation(format!(
                "the issuer sent an SVID for {spiffe_id} as {}",
                svid.spiffe_id
            )));
        }
        Ok(Self {
            spiffe_id,
            chain,
            key_pkcs8,
            issued_at: SystemTime::now(),
            expires_at,
        })
    }
}

/// Files under `<data_dir>`: `node.pem` (chain), `node.key` (0600), `bundle.pem`.
/// Writes are fsynced and renamed into place on the blocking pool, and the bundle
/// only when it changed (every sync hands it over).
pub(crate) struct NodeStore {
    dir: PathBuf,
    saved_bundle: parking_lot::Mutex<Vec<CertificateDer<'static>>>,
}

impl NodeStore {
    pub(crate) fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            saved_bundle: parking_lot::Mutex::default(),
        }
    }

    pub(crate) fn load(&self) -> Option<NodeIdentity> {
        let chain =
            pem::certificates(&std::fs::read_to_string(self.dir.join("node.pem")).ok()?).ok()?;
        let key = std::fs::read(self.dir.join("node.key")).ok()?;
        let (_, leaf) = x509_parser::parse_x509_certificate(chain.first()?).ok()?;
        let spiffe_id = meshward_tls::spiffe_id_of(chain.first()?).ok()?;
        let to_time = |t: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
        Some(NodeIdentity {
            spiffe_id,
            issued_at: to_time(leaf.validity().not_before.timestamp()),
            expires_at: to_time(leaf.validity().not_after.timestamp()),
            chain,
            key_pkcs8: key,
        })
    }

    pub(crate) async fn save(&self, node: &NodeIdentity) -> Result<(), AgentError> {
        let pem: String = node.chain.iter().map(|c| pem::certificate(c)).collect();
        let (dir, key) = (self.dir.clone(), node.key_pkcs8.clone());
        off_thread(move || {
            write_private(&dir, "node.pem", pem.as_bytes(), 0o644)?;
            write_private(&dir, "node.key", &key, 0o600)
        })
        .await
    }

    /// Forgets the node SVID (the issuer rejected it): the next start attests anew.
    pub(crate) fn forget(&self) {
        for name in ["node.pem", "node.key"] {
            let _ = std::fs::remove_file(self.dir.join(name));
        }
    }

    /// The last bundle the issuer served (trusted for the next start).
    pub(crate) fn load_bundle(&self) -> Option<Vec<CertificateDer<'static>>> {
        let certs =
            pem::certificates(&std::fs::read_to_string(self.dir.join("bundle.pem")).ok()?).ok()?;
        (!certs.is_empty()).then_some(certs)
    }

    pub(crate) async fn save_bundle(
        &self,
        certs: &[CertificateDer<'static>],
    ) -> Result<(), AgentError> {
        if *self.saved_bundle.lock() == certs {
            return Ok(());
        }
        let pem: String = certs.iter().map(|c| pem::certificate(c)).collect();
        let dir = self.dir.clone();
        off_thread(move || write_private(&dir, "bundle.pem", pem.as_bytes(), 0o644)).await?;
        certs.clone_into(&mut self.saved_bundle.lock());
        Ok(())
    }
}

/// File writes with fsync block: they run on the blocking pool, not on a worker.
async fn off_thread(
    write: impl FnOnce() -> Result<(), AgentError> + Send + 'static,
) -> Result<(), AgentError> {
    tokio::task::spawn_blocking(write).await?
}

fn write_private(dir: &Path, name: &str, contents: &[u8], mode: u32) -> Result<(), AgentError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |path: &Path| {
        let path = path.to_owned();
        move |source| AgentError::File { path, source }
    };
    std::fs::create_dir_all(dir).map_err(failed(dir))?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(failed(&tmp))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(failed(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(failed(&path))
}

/// A client to the issuer that presents `identity` (empty before attestation): the
/// first replica of `issuers` that answers.
pub(crate) async fn connect(
    issuers: &mut Issuers,
    trust_domain: &TrustDomain,
    bundles: &Arc<TrustBundles>,
    identity: &Arc<CertStore>,
) -> Result<AgentApiClient<Channel>, AgentError> {
    let mut last_error = None;
    for addr in issuers.candidates().await {
        let client = meshward_api::client::agent_client(
            &addr.to_string(),
            trust_domain,
            bundles.clone(),
            identity.clone(),
        )
        .await;
        match client {
            Ok(client) => {
                issuers.answered(addr);
                return Ok(client);
            }
            Err(e) => {
                tracing::warn!("agent: issuer {addr} did not answer: {e}");
                issuers.failed(addr);
                last_error = Some(e);
            }
        }
    }
    Err(match last_error {
        Some(e) => AgentError::IssuerConnect(e),
        None => AgentError::IssuerUnavailable("no issuer address resolved".into()),
    })
}

/// Attests with the configured method (`attestor.rs`); a join token is used up
/// by this.
pub(crate) async fn attest(
    config: &AgentConfig,
    client: &mut AgentApiClient<Channel>,
) -> Result<(NodeIdentity, Vec<CertificateDer<'static>>), AgentError> {
    let attestor = super::attestor::configured(config)?;
    let key = NewKey::generate()?;
    let payload = attestor.payload().await.inspect_err(|_| {
        crate::metrics::node_attestation_failed(attestor.kind(), "evidence");
    })?;
    let request = proto::AttestAgentRequest {
        r#type: attestor.kind().to_owned(),
        payload,
        csr: key.csr.clone(),
    };
    let response = crate::metrics::observe_issuer("AttestAgent", client.attest_agent(request))
        .await
        .map_err(|status| match status.code() {
            tonic::Code::PermissionDenied | tonic::Code::InvalidArgument => {
                crate::metrics::node_attestation_failed(attestor.kind(), "refused");
                AgentError::Attestation(format!(
                    "the issuer refused {} attestation: {}{}",
                    attestor.kind(),
                    status.message(),
                    attestor.refusal_hint()
                ))
            }
            _ => {
                crate::metrics::node_attestation_failed(attestor.kind(), "unavailable");
                AgentError::IssuerUnavailable(status.message().to_owned())
            }
        })?;
    let response = response.into_inner();
    let svid = response
        .svid
        .ok_or_else(|| AgentError::Attestation("the issuer answered without an SVID".into()))?;
    let bundle = response
        .bundle
        .map(|b| {
            b.x509_authorities
                .into_iter()
                .map(CertificateDer::from)
                .collect()
        })
        .unwrap_or_default();
    Ok((NodeIdentity::from_svid(svid, key.pkcs8)?, bundle))
}

/// A fresh node SVID over the current mTLS identity.
pub(crate) async fn renew(
    client: &mut AgentApiClient<Channel>,
) -> Result<NodeIdentity, AgentError> {
    let key = NewKey::generate()?;
    let response = crate::metrics::observe_issuer(
        "RenewAgent",
        client.renew_agent(proto::RenewAgentRequest {
            csr: key.csr.clone(),
        }),
    )
    .await
    .map_err(super::status_error)?
    .into_inner();
    let svid = response
        .svid
        .ok_or_else(|| AgentError::Attestation("the issuer answered without an SVID".into()))?;
    NodeIdentity::from_svid(svid, key.pkcs8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(name: &str) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        cert.der().clone()
    }

    #[tokio::test]
    async fn the_bundle_is_written_only_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = NodeStore::new(dir.path());
        let file = dir.path().join("bundle.pem");
        let first = vec![certificate("a")];
        store.save_bundle(&first).await.unwrap();
        assert_eq!(store.load_bundle().unwrap(), first);

        // every sync hands the same bundle over: no write (the file stays gone)
        std::fs::remove_file(&file).unwrap();
        store.save_bundle(&first).await.unwrap();
        assert!(!file.exists());

        let rotated = vec![certificate("a"), certificate("b")];
        store.save_bundle(&rotated).await.unwrap();
        assert_eq!(store.load_bundle().unwrap(), rotated);
    }
}
