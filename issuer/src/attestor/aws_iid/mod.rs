//! `aws_iid` node attestation (SPIRE's `aws_iid`): the agent sends its EC2
//! instance identity document and AWS's RSA-2048 PKCS#7 signature of it, as IMDS
//! gave them. The issuer verifies the signature with AWS's certificate for the
//! document's region and parses exactly the content that signature covers (the
//! `document` the agent sent must be those bytes: SPIRE's 2026 advisory was a
//! check over one and a parse of the other). Then: the account allow-list, the
//! document's age, and one attestation per instance unless re-attestation is
//! allowed. The node's ID is `spiffe://<td>/spire/agent/aws_iid/<account>/<region>/<instance>`
//! (the path is configurable as SPIRE's `agent_path_template`).
//!
//! Tags, security groups and IAM roles come from the EC2 and IAM APIs, not the
//! document: an [`InstanceDescriber`] provides them when one is given. None is by
//! default, so nothing here reaches AWS.

mod ber;
mod certs;
mod document;
mod pkcs7;
mod template;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use meshward_api::attestation::{self, AwsIidPayload};
use meshward_spiffe::{Selector, SpiffeId, TrustDomain};
use time::OffsetDateTime;

pub use certs::RegionCerts;
pub use document::IdentityDocument;
pub use template::{DEFAULT_AGENT_PATH_TEMPLATE, PathTemplate};

use super::{AttestError, AttestFuture, Attestation, NodeAttestor};
use crate::config::AwsIidConfig;
use crate::datastore::{Datastore, DatastoreError};

/// An IMDS answer is a few kilobytes; anything much larger is not one.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// A clock ahead of the issuer's by more than this makes a document "from the future".
const CLOCK_SKEW: time::Duration = time::Duration::minutes(5);

/// Why an instance identity document did not attest a node. Each has a reason
/// label for `meshward_issuer_aws_iid_refusals_total`.
#[derive(Debug, thiserror::Error)]
pub enum IidError {
    #[error("aws_iid: payload of {0} bytes is larger than {MAX_PAYLOAD}")]
    TooLarge(usize),
    #[error("aws_iid: {0}")]
    Malformed(String),
    #[error("aws_iid: the document sent is not the content the rsa2048 signature covers")]
    DocumentMismatch,
    #[error("aws_iid: no AWS certificate for region {0:?} (region_certificates_file?)")]
    UnknownRegion(String),
    #[error("aws_iid: {0}")]
    BadSignature(String),
    #[error("aws_iid: account {0} is not in account_ids")]
    AccountNotAllowed(String),
    #[error(
        "aws_iid: the document is stale: the instance started {age}s ago, max_document_age is {max}s"
    )]
    Stale { age: i64, max: u64 },
    #[error("aws_iid: the document's pendingTime is in the future")]
    FromTheFuture,
    #[error(
        "aws_iid: instance {instance} has already attested as {id} (evict it, or set allow_reattestation)"
    )]
    AlreadyAttested { instance: String, id: SpiffeId },
    #[error("aws_iid: describing the instance: {0}")]
    Describe(String),
    #[error(transparent)]
    Store(#[from] DatastoreError),
}

impl IidError {
    /// The metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge(_) => "too_large",
            Self::Malformed(_) => "malformed",
            Self::DocumentMismatch => "document_mismatch",
            Self::UnknownRegion(_) => "unknown_region",
            Self::BadSignature(_) => "bad_signature",
            Self::AccountNotAllowed(_) => "account_not_allowed",
            Self::Stale { .. } | Self::FromTheFuture => "stale",
            Self::AlreadyAttested { .. } => "already_attested",
            Self::Describe(_) => "describe_failed",
            Self::Store(_) => "datastore",
        }
    }
}

impl From<IidError> for AttestError {
    fn from(e: IidError) -> Self {
        match e {
            IidError::TooLarge(_) | IidError::Malformed(_) => Self::InvalidArgument(e.to_string()),
            IidError::Describe(_) => Self::Unavailable(Box::new(e)),
            IidError::Store(e) => Self::Store(e),
            _ => Self::Denied(e.to_string()),
        }
    }
}

/// What the EC2/IAM APIs say about an instance: selectors beyond the document's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceFacts {
    pub tags: Vec<(String, String)>,
    /// (group ID, group name)
    pub security_groups: Vec<(String, String)>,
    /// Role ARNs of the instance profile.
    pub iam_roles: Vec<String>,
}

pub type DescribeFuture<'a> =
    Pin<Box<dyn Future<Output = Result<InstanceFacts, String>> + Send + 'a>>;

/// The AWS API call behind `tag:`, `sg:` and `iamrole:` selectors (SPIRE calls
/// DescribeInstances and GetInstanceProfile).
pub trait InstanceDescriber: Send + Sync {
    fn describe<'a>(&'a self, doc: &'a IdentityDocument) -> DescribeFuture<'a>;
}

pub struct AwsIidAttestor {
    certs: RegionCerts,
    accounts: Vec<String>,
    max_age: Duration,
    allow_reattestation: bool,
    template: PathTemplate,
    describer: Option<Box<dyn InstanceDescriber>>,
}

impl AwsIidAttestor {
    pub fn from_config(config: &AwsIidConfig) -> Result<Self, String> {
        let certs = match &config.region_certificates_file {
            Some(path) => RegionCerts::from_file(path)?,
            None => RegionCerts::shipped()?,
        };
        Ok(Self {
            certs,
            accounts: config.account_ids.clone(),
            max_age: config.max_document_age,
            allow_reattestation: config.allow_reattestation,
            template: PathTemplate::parse(&config.agent_path_template)?,
            describer: None,
        })
    }

    /// How many regions have a certificate.
    pub fn regions(&self) -> usize {
        self.certs.regions()
    }

    /// Adds the AWS API call that provides tag, security group and IAM role selectors.
    pub fn with_describer(mut self, describer: impl InstanceDescriber + 'static) -> Self {
        self.describer = Some(Box::new(describer));
        self
    }

    /// The document `payload` proves, verified, at time `now`.
    pub fn verify(&self, payload: &[u8], now: SystemTime) -> Result<IdentityDocument, IidError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(IidError::TooLarge(payload.len()));
        }
        let payload =
            AwsIidPayload::decode(payload).map_err(|e| IidError::Malformed(e.to_string()))?;
        let envelope = pkcs7::open(&payload.rsa2048)?;
        if envelope.content != payload.document.as_bytes() {
            return Err(IidError::DocumentMismatch);
        }
        // the signed bytes, parsed; the region only picks the key that must verify them
        let doc = IdentityDocument::parse(&envelope.content)?;
        let key = self
            .certs
            .key(&doc.region)
            .ok_or_else(|| IidError::UnknownRegion(doc.region.clone()))?;
        envelope.verify(key)?;
        if !self.accounts.contains(&doc.account_id) {
            return Err(IidError::AccountNotAllowed(doc.account_id.clone()));
        }
        self.check_age(&doc, now)?;
        Ok(doc)
    }

    fn check_age(&self, doc: &IdentityDocument, now: SystemTime) -> Result<(), IidError> {
        let now = OffsetDateTime::from(now);
        let age = now - doc.pending_time;
        if age < -CLOCK_SKEW {
            return Err(IidError::FromTheFuture);
        }
        if age > self.max_age {
            return Err(IidError::Stale {
                age: age.whole_seconds(),
                max: self.max_age.as_secs(),
            });
        }
        Ok(())
    }

    /// The node's SPIFFE ID in `trust_domain`.
    pub fn node_id(
        &self,
        trust_domain: &TrustDomain,
        doc: &IdentityDocument,
    ) -> Result<SpiffeId, IidError> {
        let path = self.template.render(doc);
        format!("spiffe://{trust_domain}/spire/agent/{path}")
            .parse()
            .map_err(|e| IidError::Malformed(format!("node ID from agent_path_template: {e}")))
    }

    /// SPIRE's selectors (`account_id`, `region`, `az`, `instance:id`,
    /// `image:id`), `account` as meshward's guides write it, and, with a
    /// describer, `tag:<k>:<v>`, `sg:id:`, `sg:name:` and `iamrole:<arn>`.
    async fn selectors(&self, doc: &IdentityDocument) -> Result<Vec<Selector>, IidError> {
        let mut values = vec![
            format!("account:{}", doc.account_id),
            format!("account_id:{}", doc.account_id),
            format!("region:{}", doc.region),
            format!("az:{}", doc.availability_zone),
            format!("instance:id:{}", doc.instance_id),
            format!("image:id:{}", doc.image_id),
        ];
        if let Some(describer) = &self.describer {
            let facts = describer.describe(doc).await.map_err(IidError::Describe)?;
            values.extend(facts.tags.iter().map(|(k, v)| format!("tag:{k}:{v}")));
            for (id, name) in &facts.security_groups {
                values.push(format!("sg:id:{id}"));
                values.push(format!("sg:name:{name}"));
            }
            values.extend(facts.iam_roles.iter().map(|arn| format!("iamrole:{arn}")));
        }
        values.sort();
        values.dedup();
        Ok(values
            .into_iter()
            .map(|value| Selector {
                kind: attestation::AWS_IID.into(),
                value,
            })
            .collect())
    }

    async fn attest<D: Datastore>(
        &self,
        store: &D,
        trust_domain: &TrustDomain,
        payload: &[u8],
    ) -> Result<Attestation, IidError> {
        let doc = self.verify(payload, SystemTime::now())?;
        let id = self.node_id(trust_domain, &doc)?;
        if !self.allow_reattestation {
            match store.get_node(&id).await {
                Ok(_) => {
                    return Err(IidError::AlreadyAttested {
                        instance: doc.instance_id,
                        id,
                    });
                }
                Err(DatastoreError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Attestation {
            spiffe_id: id,
            selectors: self.selectors(&doc).await?,
            can_reattest: self.allow_reattestation,
            // two attestations of one instance at once: only one creates the node
            first_only: !self.allow_reattestation,
        })
    }
}

/// The identity a refused payload claimed, for the log: its document's
/// account, region and instance as sent (unverified), when readable.
fn claimed(payload: &[u8]) -> String {
    let doc = AwsIidPayload::decode(payload)
        .ok()
        .and_then(|p| serde_json::from_str::<serde_json::Value>(&p.document).ok());
    let field = |name: &str| {
        doc.as_ref()
            .and_then(|d| d.get(name))
            .and_then(serde_json::Value::as_str)
            .map(|s| s.chars().take(64).collect::<String>())
            .unwrap_or_else(|| "?".into())
    };
    format!(
        "account={} region={} instance={}",
        field("accountId"),
        field("region"),
        field("instanceId")
    )
}

impl<D: Datastore> NodeAttestor<D> for AwsIidAttestor {
    fn kind(&self) -> &'static str {
        attestation::AWS_IID
    }

    fn attest<'a>(
        &'a self,
        store: &'a D,
        trust_domain: &'a TrustDomain,
        payload: &'a [u8],
    ) -> AttestFuture<'a> {
        Box::pin(async move {
            let attested = self.attest(store, trust_domain, payload).await;
            if let Err(e) = &attested {
                // logged by the issuer with `claimed`; counted here by reason
                metrics::counter!("meshward_issuer_aws_iid_refusals_total", "reason" => e.reason())
                    .increment(1);
            }
            Ok(attested?)
        })
    }

    fn claimed(&self, payload: &[u8]) -> String {
        claimed(payload)
    }
}
