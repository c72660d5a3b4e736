//! The issuer's behaviour, independent of transport: what the agent API and the
//! admin API do. The gRPC layer authenticates callers and maps [`ServiceError`] to
//! status codes; everything else is here.

mod admin;
mod agent;
mod federation;
mod rotation;

use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use crate::attestor::{AttestError, Attestors, NodeAttestor};
use crate::ca::Authority;
use crate::datastore::{CaRecord, Datastore, DatastoreError};
use crate::error::{CaError, Cause, SigningError};
use crate::random::RandomFailed;
use crate::x509::{SvidTemplate, X509Svid};
use meshward_spiffe::Bundle;
use meshward_spiffe::JwtPublicKey;
use meshward_spiffe::pem;
use meshward_spiffe::{SpiffeId, TrustDomain};

pub use agent::{BatchResult, Caller, MAX_SVID_ADDRESSES, SvidRequest, SvidTarget};

/// Why a call failed; each variant is one gRPC status code. The caller's mistakes
/// carry the message it reads; failures of ours or of what we depend on keep the
/// error that caused them.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// A dependency failed (the datastore, a Kubernetes API, no active CA): retry.
    #[error("{0}")]
    Unavailable(#[source] Cause),
    /// A fault of ours (corrupt state, failed cryptography), not the caller's.
    #[error("{0}")]
    Internal(#[source] Cause),
}

impl From<DatastoreError> for ServiceError {
    fn from(e: DatastoreError) -> Self {
        match e {
            DatastoreError::AlreadyExists(_) => Self::AlreadyExists(e.to_string()),
            DatastoreError::NotFound(_) => Self::NotFound(e.to_string()),
            DatastoreError::Refused(m) => Self::PermissionDenied(m),
            DatastoreError::Unavailable(_) => Self::Unavailable(Box::new(e)),
            DatastoreError::Corrupt(_) => Self::Internal(Box::new(e)),
        }
    }
}

impl From<AttestError> for ServiceError {
    fn from(e: AttestError) -> Self {
        match e {
            AttestError::InvalidArgument(m) => Self::InvalidArgument(m),
            AttestError::Denied(m) => Self::PermissionDenied(m),
            AttestError::Unavailable(cause) => Self::Unavailable(cause),
            AttestError::Store(e) => e.into(),
        }
    }
}

impl From<RandomFailed> for ServiceError {
    fn from(e: RandomFailed) -> Self {
        Self::Internal(Box::new(e))
    }
}

impl From<SigningError> for ServiceError {
    fn from(e: SigningError) -> Self {
        match e {
            SigningError::InvalidCsr(_) | SigningError::InvalidRequest(_) => {
                Self::InvalidArgument(e.to_string())
            }
            SigningError::Ca(ca) => ca.into(),
        }
    }
}

impl From<CaError> for ServiceError {
    fn from(e: CaError) -> Self {
        match e {
            CaError::NoActiveCa => Self::Unavailable(Box::new(e)),
            other => Self::Internal(Box::new(other)),
        }
    }
}

pub type Result<T> = std::result::Result<T, ServiceError>;

/// Settings the service decides with (from `issuer.yaml`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub trust_domain: TrustDomain,
    /// Names this issuer instance in the CA journal and leases (HA).
    pub instance: String,
    pub default_x509_svid_ttl: Duration,
    pub default_jwt_svid_ttl: Duration,
    /// The `iss` of JWT-SVIDs (SPIRE's `jwt_issuer`); none by default.
    pub jwt_issuer: Option<String>,
    pub agent_svid_ttl: Duration,
    pub join_token_ttl: Duration,
    pub bundle_refresh_hint: Duration,
}

/// How long one instance holds the lease on pruning the CA journal.
const PRUNING_LEASE: Duration = Duration::from_secs(30);

/// The issuer: settings, the CA, the datastore.
pub struct Issuer<D> {
    settings: Settings,
    authority: RwLock<Authority>,
    /// The CA generations recorded in the datastore's journal (so in the bundle):
    /// only these sign. One prepared while the datastore failed waits for its
    /// record, and the generation before it signs meanwhile.
    published: RwLock<std::collections::HashSet<String>>,
    store: D,
    attestors: Attestors<D>,
}

pub(crate) fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl<D: Datastore> Issuer<D> {
    /// Publishes the CA generations in the journal, so the bundle has them.
    pub async fn new(settings: Settings, authority: Authority, store: D) -> Result<Self> {
        let issuer = Self {
            settings,
            authority: RwLock::new(authority),
            published: RwLock::default(),
            store,
            attestors: Attestors::join_token(),
        };
        issuer.publish_generations().await?;
        Ok(issuer)
    }

    /// Accepts attestation of `attestor`'s type (beside join tokens).
    pub fn with_attestor(mut self, attestor: impl NodeAttestor<D> + 'static) -> Self {
        self.attestors = self.attestors.with(attestor);
        self
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn store(&self) -> &D {
        &self.store
    }

    /// `spiffe://<td>/spire/server`: the issuer's own ID (its TLS certificate, and the
    /// parent of node alias entries).
    pub fn server_id(&self) -> Result<SpiffeId> {
        Ok(meshward_api::client::server_id(&self.settings.trust_domain))
    }

    fn read_authority(&self) -> Result<std::sync::RwLockReadGuard<'_, Authority>> {
        self.authority
            .read()
            .map_err(|_| ServiceError::Internal("CA state lock poisoned".into()))
    }

    /// The generation of `authority` that signs at `now`: the active one among
    /// those published in the bundle.
    pub(crate) fn signing_ca<'a>(
        &self,
        authority: &'a Authority,
        now: SystemTime,
    ) -> Result<&'a std::sync::Arc<crate::SigningCa>> {
        let published = self
            .published
            .read()
            .map_err(|_| ServiceError::Internal("CA journal lock poisoned".into()))?;
        Ok(authority.active_among(now, |g| published.contains(g.id()))?)
    }

    /// Signs with the active CA, on the blocking pool (a token's signature may
    /// wait for a network HSM); the lock is held only to pick the CA.
    pub(crate) async fn sign(&self, csr: &[u8], template: &SvidTemplate<'_>) -> Result<X509Svid> {
        let now = SystemTime::now();
        let ca = std::sync::Arc::clone(self.signing_ca(&*self.read_authority()?, now)?);
        let svid = crate::x509::sign_blocking(ca, csr, template, now).await?;
        metrics::counter!("meshward_issuer_svids_signed_total", "type" => "x509").increment(1);
        Ok(svid)
    }

    /// One rotation step of this replica's own CA (each replica has its own keys,
    /// so each rotates them), then publish; the journal's pruning, a cluster-wide
    /// duty, only under the lease. Returns whether this replica's CAs changed.
    pub async fn rotate(&self, now: SystemTime) -> Result<bool> {
        let rotation = self.rotate_authority(now).await?;
        self.publish_generations().await?;
        let leader = self
            .store
            .try_lease(
                "ca-journal-pruning",
                &self.settings.instance,
                unix(now + PRUNING_LEASE),
                unix(now),
            )
            .await?;
        if leader {
            self.store
                .prune_cas(&self.settings.trust_domain, unix(now))
                .await?;
        }
        Ok(rotation.changed())
    }

    async fn publish_generations(&self) -> Result<()> {
        let (ids, records): (Vec<String>, Vec<CaRecord>) = {
            let authority = self.read_authority()?;
            authority
                .generations()
                .iter()
                .map(|g| {
                    let (x, y) = g.jwt_key().coordinates();
                    let record = CaRecord {
                        // the generation's own ID (a time and random bits), the
                        // same across restarts: the instance name changes with
                        // the process, and a CA recorded again under a new ID
                        // would stand twice in the bundle
                        id: g.id().to_owned(),
                        instance: self.settings.instance.clone(),
                        certificate_pem: pem::certificate(g.certificate()),
                        jwt_kid: g.jwt_key().kid().to_owned(),
                        jwt_x: x,
                        jwt_y: y,
                        not_before: unix(g.not_before()),
                        not_after: unix(g.not_after()),
                    };
                    (g.id().to_owned(), record)
                })
                .unzip()
        };
        for record in &records {
            self.store
                .record_ca(&self.settings.trust_domain, record)
                .await?;
        }
        let mut published = self
            .published
            .write()
            .map_err(|_| ServiceError::Internal("CA journal lock poisoned".into()))?;
        published.extend(ids);
        Ok(())
    }

    /// The own bundle: every unexpired CA of every instance (or the upstream root),
    /// and every JWT key.
    pub async fn bundle(&self) -> Result<Bundle> {
        let now = unix(SystemTime::now());
        let records = self.store.list_cas(now).await?;
        let sequence = self
            .store
            .bundle_sequence(&self.settings.trust_domain)
            .await?;
        let upstream_roots = {
            let authority = self.read_authority()?;
            authority
                .is_upstream()
                .then(|| authority.x509_authorities())
        };
        // journals written before record IDs were the generation's alone hold
        // a CA once per restart: each certificate and key ID is listed once
        let mut x509_authorities: Vec<rustls_pki_types::CertificateDer<'static>> = Vec::new();
        let mut jwt_keys: Vec<JwtPublicKey> = Vec::new();
        for r in records {
            if upstream_roots.is_none() {
                for cert in pem::certificates(&r.certificate_pem)
                    .map_err(|e| ServiceError::Internal(Box::new(e)))?
                {
                    if !x509_authorities.contains(&cert) {
                        x509_authorities.push(cert);
                    }
                }
            }
            if !jwt_keys.iter().any(|k| k.kid == r.jwt_kid) {
                jwt_keys.push(JwtPublicKey::p256(r.jwt_kid, r.jwt_x, r.jwt_y));
            }
        }
        if let Some(roots) = upstream_roots {
            x509_authorities = roots;
        }
        Ok(Bundle {
            trust_domain: self.settings.trust_domain.clone(),
            x509_authorities,
            jwt_keys,
            sequence,
            refresh_hint: self.settings.bundle_refresh_hint,
        })
    }

    /// Ready: the datastore answers and a CA is active.
    pub async fn health(&self) -> (bool, bool) {
        let datastore = self.store.ping().await.is_ok();
        let ca = self
            .read_authority()
            .map(|a| self.signing_ca(&a, SystemTime::now()).is_ok())
            .unwrap_or(false);
        (datastore, ca)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_attest;
