//! Several attestors on one issuer, and evidence used twice: a join token, and
//! an EC2 instance's identity document, each attests once, even when both uses
//! arrive at the same moment.

use std::sync::Arc;
use std::time::Duration;

use meshward_api::attestation::AWS_IID;
use meshward_test_support::aws_iid::{Instance, Signer, payload};
use meshward_test_support::p256_csr;

use super::tests::{attest_join_token, entry, id, issuer};
use super::*;
use crate::attestor::aws_iid::{AwsIidAttestor, DEFAULT_AGENT_PATH_TEMPLATE};
use crate::config::AwsIidConfig;
use crate::datastore::SqlStore;
use crate::service::{Caller, SvidRequest, SvidTarget};

const ACCOUNT: &str = "123456789012";

/// An issuer accepting join tokens and `aws_iid` documents signed by `signer`.
async fn issuer_with_aws_iid(
    dir: &std::path::Path,
    signer: &Signer,
    allow_reattestation: bool,
) -> Issuer<SqlStore> {
    let certs = dir.join("aws-certs.yaml");
    std::fs::write(&certs, signer.region_certificates(&["us-east-1"])).unwrap();
    let attestor = AwsIidAttestor::from_config(&AwsIidConfig {
        account_ids: vec![ACCOUNT.into()],
        region_certificates_file: Some(certs),
        max_document_age: Duration::from_secs(3600),
        allow_reattestation,
        agent_path_template: DEFAULT_AGENT_PATH_TEMPLATE.into(),
    })
    .unwrap();
    issuer(dir).await.with_attestor(attestor)
}

fn signed_payload(signer: &Signer, instance_id: &str) -> Vec<u8> {
    let doc = Instance::new(ACCOUNT, "us-east-1", instance_id).document();
    payload(&doc, &signer.sign(doc.as_bytes()))
}

/// Runs two attestations of the same evidence at once; returns how many were
/// admitted and the refusal's message.
async fn twice_at_once(
    issuer: Issuer<SqlStore>,
    kind: &'static str,
    payload: Vec<u8>,
) -> (usize, Vec<String>) {
    let issuer = Arc::new(issuer);
    let attempt = |issuer: Arc<Issuer<SqlStore>>, payload: Vec<u8>| {
        tokio::spawn(async move { issuer.attest_agent(kind, &payload, &p256_csr().1).await })
    };
    let first = attempt(Arc::clone(&issuer), payload.clone());
    let second = attempt(issuer, payload);
    let results = [first.await.unwrap(), second.await.unwrap()];
    let admitted = results.iter().filter(|r| r.is_ok()).count();
    let refusals = results
        .into_iter()
        .filter_map(|r| match r {
            Err(ServiceError::PermissionDenied(m)) => Some(m),
            Err(e) => Some(format!("unexpected: {e}")),
            Ok(_) => None,
        })
        .collect();
    (admitted, refusals)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_token_used_twice_at_once_attests_one_node() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = issuer(dir.path()).await;
    let token = issuer.generate_join_token(None, 0).await.unwrap();
    let (admitted, refusals) = twice_at_once(
        issuer,
        meshward_api::attestation::JOIN_TOKEN,
        token.token.into_bytes(),
    )
    .await;
    assert_eq!(admitted, 1, "{refusals:?}");
    assert_eq!(refusals, ["join token is unknown or already used"]);
}

#[tokio::test]
async fn an_instance_attests_once_unless_reattestation_is_allowed() {
    let signer = Signer::new();
    let dir = tempfile::tempdir().unwrap();
    let issuer = issuer_with_aws_iid(dir.path(), &signer, false).await;
    let payload = signed_payload(&signer, "i-0123456789abcdef0");
    let svid = issuer
        .attest_agent(AWS_IID, &payload, &p256_csr().1)
        .await
        .unwrap();
    let node_id = "spiffe://td/spire/agent/aws_iid/123456789012/us-east-1/i-0123456789abcdef0";
    assert_eq!(svid.spiffe_id.as_str(), node_id);
    let record = issuer.show_agent(&svid.spiffe_id).await.unwrap();
    assert_eq!(record.attestation_type, "aws_iid");
    assert!(!record.can_reattest);

    // the same document again (a replay, or a second agent on a copy of it)
    let replayed = issuer.attest_agent(AWS_IID, &payload, &p256_csr().1).await;
    let Err(ServiceError::PermissionDenied(why)) = replayed else {
        panic!("{replayed:?}");
    };
    assert_eq!(
        why,
        format!(
            "aws_iid: instance i-0123456789abcdef0 has already attested as {node_id} \
             (evict it, or set allow_reattestation)"
        )
    );
    // evicted, it attests again
    issuer.evict_agent(&svid.spiffe_id).await.unwrap();
    issuer
        .attest_agent(AWS_IID, &payload, &p256_csr().1)
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let lenient = issuer_with_aws_iid(dir.path(), &signer, true).await;
    for _ in 0..2 {
        lenient
            .attest_agent(AWS_IID, &payload, &p256_csr().1)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_s_document_used_twice_at_once_attests_one_node() {
    let signer = Signer::new();
    let dir = tempfile::tempdir().unwrap();
    let issuer = issuer_with_aws_iid(dir.path(), &signer, false).await;
    let (admitted, refusals) = twice_at_once(
        issuer,
        AWS_IID,
        signed_payload(&signer, "i-0123456789abcdef0"),
    )
    .await;
    assert_eq!(admitted, 1, "{refusals:?}");
    assert_eq!(refusals.len(), 1);
    assert!(refusals[0].contains("already attested"), "{refusals:?}");
}

#[tokio::test]
async fn join_tokens_and_aws_iid_side_by_side_and_a_node_entry_by_account() {
    let signer = Signer::new();
    let dir = tempfile::tempdir().unwrap();
    let issuer = issuer_with_aws_iid(dir.path(), &signer, false).await;
    let token = issuer.generate_join_token(None, 0).await.unwrap();
    let joined = attest_join_token(&issuer, &token.token, &p256_csr().1)
        .await
        .unwrap();
    let ec2 = issuer
        .attest_agent(
            AWS_IID,
            &signed_payload(&signer, "i-0aaaaaaaaaaaaaaa0"),
            &p256_csr().1,
        )
        .await
        .unwrap();

    // `entry create -node -selector aws_iid:account:123456789012`
    let nodes = id("spiffe://td/nodes/aws-account");
    issuer
        .create_entry(entry(
            nodes.as_str(),
            &issuer.server_id().unwrap(),
            &["aws_iid:account:123456789012"],
        ))
        .await
        .unwrap();
    let workload = issuer
        .create_entry(entry("spiffe://td/ns/pay/sa/api", &nodes, &["k8s:ns:pay"]))
        .await
        .unwrap();
    let entries = |svid: &crate::X509Svid| {
        let caller = Caller {
            id: svid.spiffe_id.clone(),
            serial: svid.serial.clone(),
        };
        let issuer = &issuer;
        async move {
            let listed = issuer.authorized_entries(&caller).await.unwrap();
            listed.into_iter().map(|e| e.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(entries(&ec2).await, [workload.id]);
    assert!(entries(&joined).await.is_empty());
    let unknown = issuer.attest_agent("gcp_iit", b"{}", &p256_csr().1).await;
    assert!(
        matches!(&unknown, Err(ServiceError::PermissionDenied(m)) if m.contains("it accepts: join_token, aws_iid")),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn a_template_selects_nodes_by_any_attestor_s_selectors() {
    use meshward_api::template::{IdentityTemplate, PodAttributes, from_cluster_spiffe_id_yaml};
    let signer = Signer::new();
    let dir = tempfile::tempdir().unwrap();
    let issuer = issuer_with_aws_iid(dir.path(), &signer, false).await;
    let yaml = format!(
        "apiVersion: spire.spiffe.io/v1alpha1\nkind: ClusterSPIFFEID\nmetadata: {{name: ec2-only}}\n\
         spec:\n  spiffeIDTemplate: \"spiffe://{{{{ .TrustDomain }}}}/ns/{{{{ .PodMeta.Namespace }}}}/sa/{{{{ .PodSpec.ServiceAccountName }}}}\"\n  \
         nodeSelectors: [\"aws_iid:account:{ACCOUNT}\"]\n"
    );
    let templates: Vec<IdentityTemplate> = from_cluster_spiffe_id_yaml(&yaml).unwrap();
    issuer.put_templates(&templates).await.unwrap();
    let caller = |svid: crate::X509Svid| Caller {
        id: svid.spiffe_id,
        serial: svid.serial,
    };
    let ec2 = caller(
        issuer
            .attest_agent(
                AWS_IID,
                &signed_payload(&signer, "i-0bbbbbbbbbbbbbbb0"),
                &p256_csr().1,
            )
            .await
            .unwrap(),
    );
    let token = issuer.generate_join_token(None, 0).await.unwrap();
    let joined = caller(
        attest_join_token(&issuer, &token.token, &p256_csr().1)
            .await
            .unwrap(),
    );
    let names = |t: Vec<IdentityTemplate>| t.into_iter().map(|t| t.name).collect::<Vec<_>>();
    assert_eq!(
        names(issuer.identity_templates(&ec2).await.unwrap()),
        ["ec2-only"]
    );
    assert!(issuer.identity_templates(&joined).await.unwrap().is_empty());

    let pod = PodAttributes {
        namespace: "pay".into(),
        name: "api-0".into(),
        service_account: "api".into(),
        ..PodAttributes::default()
    };
    let request = || SvidRequest {
        target: SvidTarget::Template {
            name: "ec2-only".into(),
            pod: pod.clone(),
        },
        csr: p256_csr().1,
        addresses: vec![],
    };
    let signed = issuer
        .batch_new_x509_svid(&ec2, vec![request()])
        .await
        .unwrap();
    assert_eq!(
        signed[0].1.as_ref().unwrap().spiffe_id.as_str(),
        "spiffe://td/ns/pay/sa/api"
    );
    let refused = issuer
        .batch_new_x509_svid(&joined, vec![request()])
        .await
        .unwrap();
    assert!(
        matches!(&refused[0].1, Err(ServiceError::PermissionDenied(m)) if m.contains("does not select node")),
        "{:?}",
        refused[0].1
    );
}
