//! `join_token` attestation: a token the admin API generated, used up by its
//! first attestation whatever happens next, within its TTL. The node's ID is the
//! one recorded with the token (`spiffe://<td>/spire/agent/join_token/<token>`).

use std::time::SystemTime;

use meshward_api::attestation;
use meshward_spiffe::TrustDomain;

use super::{AttestError, AttestFuture, Attestation, NodeAttestor};
use crate::datastore::Datastore;

pub struct JoinTokenAttestor;

impl<D: Datastore> NodeAttestor<D> for JoinTokenAttestor {
    fn kind(&self) -> &'static str {
        attestation::JOIN_TOKEN
    }

    fn attest<'a>(
        &'a self,
        store: &'a D,
        _trust_domain: &'a TrustDomain,
        payload: &'a [u8],
    ) -> AttestFuture<'a> {
        Box::pin(async move {
            let token = attestation::join_token(payload)
                .map_err(|e| AttestError::InvalidArgument(e.to_string()))?;
            if token.is_empty() {
                return Err(AttestError::InvalidArgument("join token is empty".into()));
            }
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            let token = store.consume_join_token(token, now).await?;
            Ok(Attestation {
                spiffe_id: token.spiffe_id,
                selectors: Vec::new(),
                can_reattest: false,
                first_only: false,
            })
        })
    }

    /// A token is a secret until used: its digest's first bytes name it.
    fn claimed(&self, payload: &[u8]) -> String {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, payload);
        let hex: String = digest.as_ref()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("join token sha256:{hex}")
    }
}
