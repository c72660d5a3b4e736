//! `k8s_psat` node attestation (SPIRE's `k8s_psat`): the agent presents its
//! projected service-account token; the issuer asks the cluster's API server
//! (TokenReview) whether it is valid for the configured audience, checks the service
//! account against the allow-list, then reads the pod (its UID must match the
//! token's) and its node. The node's ID is
//! `spiffe://<td>/spire/agent/k8s_psat/<cluster>/<node UID>`.
//!
//! RBAC the issuer needs: `tokenreviews` create; `pods` and `nodes` get.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::config::K8sPsatConfig;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};

use meshward_api::attestation::{self, K8sPsatPayload};
use meshward_spiffe::Selector;
use meshward_spiffe::{SpiffeId, TrustDomain};

use super::{AttestError, AttestFuture, Attestation, NodeAttestor};
use crate::datastore::Datastore;

/// Every call to the API server is bounded.
const API_TIMEOUT: Duration = Duration::from_secs(10);
const POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const POD_UID: &str = "authentication.kubernetes.io/pod-uid";

struct Cluster {
    client: kube::Client,
    audience: Vec<String>,
    /// (namespace, service account)
    allowed: Vec<(String, String)>,
}

/// The configured clusters, each with its API client.
pub struct PsatAttestor {
    clusters: HashMap<String, Cluster>,
}

/// Why a projected service-account token did not attest a node.
#[derive(Debug, thiserror::Error)]
pub enum PsatError {
    /// The token, its pod or its node is not acceptable.
    #[error("k8s_psat: {0}")]
    Denied(String),
    #[error("k8s_psat: {0}")]
    InvalidArgument(String),
    /// The cluster's API could not answer: retry later.
    #[error("k8s_psat: {what}: {source}")]
    Kubernetes {
        what: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl PsatError {
    fn kubernetes(what: String) -> impl FnOnce(kube::Error) -> Self {
        move |e| Self::Kubernetes {
            what,
            source: Box::new(e),
        }
    }

    /// A lookup of the token's pod or node: an object that is gone refuses the
    /// token (the server's TokenReview may accept a deleted pod's token for a few
    /// seconds more); any other failure is the API's, to retry.
    fn lookup(what: String) -> impl FnOnce(kube::Error) -> Self {
        move |e| match e {
            kube::Error::Api(status) if status.is_not_found() => Self::Denied(format!(
                "{what}: not found (the token's pod or node is gone)"
            )),
            e => Self::kubernetes(what)(e),
        }
    }
}

/// What a successful attestation proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PsatNode {
    pub spiffe_id: SpiffeId,
    pub selectors: Vec<Selector>,
}

impl PsatAttestor {
    pub fn from_config(config: &K8sPsatConfig) -> Result<Self, String> {
        let mut clusters = HashMap::new();
        for c in &config.clusters {
            let url = c.api_server.parse().map_err(|e| {
                format!(
                    "k8s_psat cluster {}: api_server {:?}: {e}",
                    c.name, c.api_server
                )
            })?;
            let mut kube_config = kube::Config::new(url);
            kube_config.root_cert_file = c.api_ca_path.clone();
            // a file, re-read by kube when it rotates (projected tokens do)
            kube_config.auth_info.token_file =
                c.api_token_path.as_ref().map(|p| p.display().to_string());
            kube_config.connect_timeout = Some(API_TIMEOUT);
            kube_config.read_timeout = Some(API_TIMEOUT);
            kube_config.write_timeout = Some(API_TIMEOUT);
            let client = kube::Client::try_from(kube_config)
                .map_err(|e| format!("k8s_psat cluster {}: API client: {e}", c.name))?;
            let allowed = c
                .service_account_allow_list
                .iter()
                .filter_map(|s| {
                    s.split_once(':')
                        .map(|(ns, sa)| (ns.to_owned(), sa.to_owned()))
                })
                .collect();
            clusters.insert(
                c.name.clone(),
                Cluster {
                    client,
                    audience: c.audience.clone(),
                    allowed,
                },
            );
        }
        Ok(Self { clusters })
    }

    pub async fn attest(
        &self,
        trust_domain: &TrustDomain,
        cluster_name: &str,
        token: &str,
    ) -> Result<PsatNode, PsatError> {
        let denied = PsatError::Denied;
        let cluster = self
            .clusters
            .get(cluster_name)
            .ok_or_else(|| denied(format!("cluster {cluster_name:?} is not configured")))?;
        if token.is_empty() {
            return Err(PsatError::InvalidArgument("the token is empty".into()));
        }
        let agent = review(cluster, cluster_name, token).await?;
        let node = agent_node(cluster, &agent).await?;
        let ReviewedAgent {
            namespace,
            service_account,
            pod_name,
            pod_uid,
        } = agent;
        let spiffe_id = SpiffeId::from_segments(
            trust_domain,
            &["spire", "agent", "k8s_psat", cluster_name, &node.uid],
        )
        .map_err(|e| PsatError::InvalidArgument(e.to_string()))?;
        let mut selectors = vec![
            ("cluster", cluster_name.to_owned()),
            ("agent_ns", namespace),
            ("agent_sa", service_account),
            ("agent_pod_name", pod_name),
            ("agent_pod_uid", pod_uid),
            ("agent_node_name", node.name),
            ("agent_node_uid", node.uid.clone()),
        ];
        if let Some(ip) = node.ip {
            selectors.push(("agent_node_ip", ip));
        }
        Ok(PsatNode {
            spiffe_id,
            selectors: selectors
                .into_iter()
                .map(|(k, v)| Selector {
                    kind: "k8s_psat".into(),
                    value: format!("{k}:{v}"),
                })
                .collect(),
        })
    }
}

/// The cluster's TokenReview of `token` (for the configured audiences), read as
/// the agent it names; refused unless authenticated and allow-listed.
async fn review(
    cluster: &Cluster,
    cluster_name: &str,
    token: &str,
) -> Result<ReviewedAgent, PsatError> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_owned()),
            audiences: Some(cluster.audience.clone()),
        },
        ..TokenReview::default()
    };
    let reviews: Api<TokenReview> = Api::all(cluster.client.clone());
    let reviewed = reviews
        .create(&PostParams::default(), &review)
        .await
        .map_err(PsatError::kubernetes(format!(
            "TokenReview on cluster {cluster_name}"
        )))?;
    reviewed_agent(reviewed, &cluster.audience, &cluster.allowed, cluster_name)
}

/// The node the agent's pod runs on, as the API server knows it.
struct AgentNode {
    name: String,
    uid: String,
    /// Its `InternalIP`, if it has one.
    ip: Option<String>,
}

/// Looks the token's pod up (it must still be the same pod: same UID) and the node
/// it is scheduled on.
async fn agent_node(cluster: &Cluster, agent: &ReviewedAgent) -> Result<AgentNode, PsatError> {
    let denied = PsatError::Denied;
    let (namespace, pod_name) = (agent.namespace.as_str(), agent.pod_name.as_str());
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), namespace);
    let pod = pods
        .get(pod_name)
        .await
        .map_err(PsatError::lookup(format!("pod {namespace}/{pod_name}")))?;
    if pod.metadata.uid.as_deref() != Some(agent.pod_uid.as_str()) {
        return Err(denied(format!(
            "pod {namespace}/{pod_name} has another UID than the token's (replaced?)"
        )));
    }
    let name = pod.spec.and_then(|s| s.node_name).ok_or_else(|| {
        denied(format!(
            "pod {namespace}/{pod_name} is not scheduled on a node"
        ))
    })?;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let node = nodes
        .get(&name)
        .await
        .map_err(PsatError::lookup(format!("node {name}")))?;
    let uid = node.metadata.uid.ok_or_else(|| PsatError::Kubernetes {
        what: format!("get node {name}"),
        source: "the node has no UID".into(),
    })?;
    let ip = node
        .status
        .and_then(|s| s.addresses)
        .and_then(|a| a.into_iter().find(|a| a.type_ == "InternalIP"))
        .map(|a| a.address);
    Ok(AgentNode { name, uid, ip })
}

impl From<PsatError> for AttestError {
    fn from(e: PsatError) -> Self {
        match e {
            PsatError::Denied(_) => Self::Denied(e.to_string()),
            PsatError::InvalidArgument(_) => Self::InvalidArgument(e.to_string()),
            PsatError::Kubernetes { .. } => Self::Unavailable(Box::new(e)),
        }
    }
}

impl<D: Datastore> NodeAttestor<D> for PsatAttestor {
    fn kind(&self) -> &'static str {
        attestation::K8S_PSAT
    }

    /// A node may attest again with a fresh token of the same node.
    fn attest<'a>(
        &'a self,
        _store: &'a D,
        trust_domain: &'a TrustDomain,
        payload: &'a [u8],
    ) -> AttestFuture<'a> {
        Box::pin(async move {
            let payload = K8sPsatPayload::decode(payload)
                .map_err(|e| AttestError::InvalidArgument(e.to_string()))?;
            let node = self
                .attest(trust_domain, &payload.cluster, &payload.token)
                .await?;
            Ok(Attestation {
                spiffe_id: node.spiffe_id,
                selectors: node.selectors,
                can_reattest: true,
                first_only: false,
            })
        })
    }

    /// The cluster named; the token itself is a credential.
    fn claimed(&self, payload: &[u8]) -> String {
        K8sPsatPayload::decode(payload).map_or_else(
            |_| "an unreadable payload".into(),
            |p| format!("cluster={}", p.cluster.chars().take(64).collect::<String>()),
        )
    }
}

/// The agent a TokenReview answer vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReviewedAgent {
    pub(crate) namespace: String,
    pub(crate) service_account: String,
    pub(crate) pod_name: String,
    pub(crate) pod_uid: String,
}

/// Reads the API server's TokenReview answer: the token must be authenticated
/// for `audience`, belong to an allowed service account (`allowed`: namespace,
/// name) and be bound to a pod.
pub(crate) fn reviewed_agent(
    reviewed: TokenReview,
    audience: &[String],
    allowed: &[(String, String)],
    cluster_name: &str,
) -> Result<ReviewedAgent, PsatError> {
    let denied = PsatError::Denied;
    let status = reviewed.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        return Err(denied(format!(
            "the cluster's TokenReview (audience {:?}) did not authenticate the token: {}",
            audience,
            status.error.unwrap_or_else(|| "not authenticated".into())
        )));
    }
    let user = status.user.unwrap_or_default();
    let username = user.username.unwrap_or_default();
    let (namespace, service_account) = username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .ok_or_else(|| denied(format!("{username:?} is not a service account")))?;
    if !allowed
        .iter()
        .any(|(ns, sa)| ns == namespace && sa == service_account)
    {
        return Err(denied(format!(
            "service account {namespace}:{service_account} is not in the allow-list of cluster {cluster_name}"
        )));
    }
    let extra: BTreeMap<String, Vec<String>> = user.extra.unwrap_or_default();
    let first = |key: &str| extra.get(key).and_then(|v| v.first()).cloned();
    let pod_name = first(POD_NAME)
        .ok_or_else(|| denied("the token is not bound to a pod (not a projected token?)".into()))?;
    let pod_uid = first(POD_UID).ok_or_else(|| denied("the token carries no pod UID".into()))?;
    Ok(ReviewedAgent {
        namespace: namespace.to_owned(),
        service_account: service_account.to_owned(),
        pod_name,
        pod_uid,
    })
}
