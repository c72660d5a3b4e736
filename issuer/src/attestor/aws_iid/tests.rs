//! The verification of instance identity documents, SPIRE's 2026 advisories
//! first: each forged or misused document is refused, with the reason counted.

use std::time::{Duration, SystemTime};

use meshward_test_support::aws_iid::{Instance, SignOptions, Signer, payload};

use super::*;

const ACCOUNT: &str = "123456789012";
const DAY: Duration = Duration::from_secs(86_400);

fn config(certs_file: &std::path::Path) -> AwsIidConfig {
    AwsIidConfig {
        account_ids: vec![ACCOUNT.into()],
        region_certificates_file: Some(certs_file.to_owned()),
        max_document_age: DAY,
        allow_reattestation: false,
        agent_path_template: DEFAULT_AGENT_PATH_TEMPLATE.into(),
    }
}

/// An attestor trusting `signer` for us-east-1 and eu-west-1.
fn attestor(signer: &Signer) -> AwsIidAttestor {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("certs.yaml");
    std::fs::write(
        &file,
        signer.region_certificates(&["us-east-1", "eu-west-1"]),
    )
    .unwrap();
    AwsIidAttestor::from_config(&config(&file)).unwrap()
}

fn instance() -> Instance {
    Instance::new(ACCOUNT, "us-east-1", "i-0123456789abcdef0")
}

/// What `verify` says now about a payload of `document` signed over `signed`.
fn verdict(
    attestor: &AwsIidAttestor,
    document: &str,
    rsa2048: &str,
) -> Result<IdentityDocument, IidError> {
    attestor.verify(&payload(document, rsa2048), SystemTime::now())
}

#[test]
fn a_document_aws_signed_attests_with_spire_s_id_and_selectors() {
    let signer = Signer::new();
    let attestor = attestor(&signer);
    let doc = instance().document();
    let rsa2048 = signer.sign(doc.as_bytes());
    assert!(
        rsa2048.starts_with("MIAG"),
        "BER, indefinite lengths, as AWS's"
    );
    let verified = verdict(&attestor, &doc, &rsa2048).unwrap();
    assert_eq!(verified.instance_id, "i-0123456789abcdef0");
    let td = TrustDomain::parse("td").unwrap();
    assert_eq!(
        attestor.node_id(&td, &verified).unwrap().as_str(),
        "spiffe://td/spire/agent/aws_iid/123456789012/us-east-1/i-0123456789abcdef0"
    );
    let selectors: Vec<String> = tokio_test_block(attestor.selectors(&verified))
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        selectors,
        [
            "aws_iid:account:123456789012",
            "aws_iid:account_id:123456789012",
            "aws_iid:az:us-east-1a",
            "aws_iid:image:id:ami-0abcdef1234567890",
            "aws_iid:instance:id:i-0123456789abcdef0",
            "aws_iid:region:us-east-1",
        ]
    );
}

fn tokio_test_block<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn openssl_s_streaming_pkcs7_as_aws_writes_it_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("certs.yaml");
    let pem = include_str!("testdata/openssl-cert.pem");
    let indented: String = pem.lines().map(|l| format!("  {l}\n")).collect();
    std::fs::write(&file, format!("us-east-1: |\n{indented}")).unwrap();
    let attestor = AwsIidAttestor::from_config(&AwsIidConfig {
        max_document_age: DAY * 365 * 100,
        ..config(&file)
    })
    .unwrap();
    let document = include_str!("testdata/openssl-document.json");
    let rsa2048 = include_str!("testdata/openssl-rsa2048");
    let doc = verdict(&attestor, document, rsa2048).unwrap();
    assert_eq!(doc.region, "us-east-1");
    let tampered = document.replace("i-1234567890abcdef0", "i-1234567890abcdef1");
    assert!(matches!(
        verdict(&attestor, &tampered, rsa2048),
        Err(IidError::DocumentMismatch)
    ));
}

/// Advisory: the signature checked over other bytes than those parsed. The
/// document sent must be exactly the signed content: not reformatted, not with
/// a key repeated (a second reader may keep the other value), not followed by
/// a second object.
#[test]
fn a_document_other_than_the_signed_bytes_is_refused() {
    let signer = Signer::new();
    let attestor = attestor(&signer);
    let genuine = instance().document();
    let rsa2048 = signer.sign(genuine.as_bytes());
    let forged_account = genuine.replace(
        "\"accountId\" : \"123456789012\",",
        "\"accountId\" : \"123456789012\",\"accountId\" : \"999999999999\",",
    );
    for forged in [
        format!(" {genuine}"),
        format!("{genuine}\n"),
        genuine.replace(" : ", ":"),
        forged_account,
        format!("{genuine}{{\"instanceId\":\"i-0000000000000000f\"}}"),
    ] {
        let refused = verdict(&attestor, &forged, &rsa2048).unwrap_err();
        assert!(
            matches!(refused, IidError::DocumentMismatch),
            "{forged}: {refused}"
        );
        assert_eq!(refused.reason(), "document_mismatch");
    }
}

/// Even signed, content that two JSON readers could read differently is refused:
/// a key twice, or a second object after the first.
#[test]
fn signed_content_that_is_not_one_plain_object_is_refused() {
    let signer = Signer::new();
    let attestor = attestor(&signer);
    let genuine = instance().document();
    let twice = genuine.replace(
        "\"region\" : \"us-east-1\",",
        "\"region\" : \"us-east-1\",\n  \"region\" : \"eu-west-1\",",
    );
    let second = format!("{genuine}\n{genuine}");
    for content in [twice, second] {
        let refused = verdict(&attestor, &content, &signer.sign(content.as_bytes())).unwrap_err();
        assert!(matches!(refused, IidError::Malformed(_)), "{refused}");
        let message = refused.to_string();
        assert!(
            message.contains("appears twice") || message.contains("trailing characters"),
            "{message}"
        );
    }
}

/// Advisory: forged signatures. Content swapped after signing (the message
/// digest no longer matches), a corrupted RSA signature, and a signature by a
/// key whose certificate (carried in the envelope) is not AWS's.
#[test]
fn forged_signatures_are_refused() {
    let signer = Signer::new();
    let attestor = attestor(&signer);
    let genuine = instance().document();
    let other = Instance::new(ACCOUNT, "us-east-1", "i-0fffffffffffffff0").document();
    let swapped = signer.sign_with(
        genuine.as_bytes(),
        &SignOptions {
            swap_content: Some(other.clone().into_bytes()),
            ..SignOptions::default()
        },
    );
    let refused = verdict(&attestor, &other, &swapped).unwrap_err();
    assert!(
        refused.to_string().contains("message digest differs"),
        "{refused}"
    );

    let corrupt = signer.sign_with(
        genuine.as_bytes(),
        &SignOptions {
            corrupt_signature: true,
            ..SignOptions::default()
        },
    );
    let refused = verdict(&attestor, &genuine, &corrupt).unwrap_err();
    assert!(matches!(refused, IidError::BadSignature(_)), "{refused}");

    let impostor = Signer::new();
    let theirs = impostor.sign_with(
        genuine.as_bytes(),
        &SignOptions {
            embed_certificate: true,
            ..SignOptions::default()
        },
    );
    let refused = verdict(&attestor, &genuine, &theirs).unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("does not verify with AWS's certificate"),
        "{refused}"
    );
    assert_eq!(refused.reason(), "bad_signature");
    assert!(matches!(
        verdict(&attestor, &genuine, "bm90IHBrY3M3"),
        Err(IidError::Malformed(_))
    ));
}

#[test]
fn a_region_without_a_certificate_an_unlisted_account_and_a_stale_document_are_refused() {
    let signer = Signer::new();
    let attestor = attestor(&signer);
    let sign = |i: &Instance| {
        let doc = i.document();
        let sig = signer.sign(doc.as_bytes());
        verdict(&attestor, &doc, &sig)
    };
    let elsewhere = Instance::new(ACCOUNT, "ap-south-1", "i-0123456789abcdef0");
    assert!(matches!(sign(&elsewhere), Err(IidError::UnknownRegion(r)) if r == "ap-south-1"));

    let stranger = Instance::new("999999999999", "us-east-1", "i-0123456789abcdef0");
    let refused = sign(&stranger).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "aws_iid: account 999999999999 is not in account_ids"
    );

    let old = Instance {
        started: SystemTime::now() - DAY - Duration::from_secs(60),
        ..instance()
    };
    let refused = sign(&old).unwrap_err();
    assert!(matches!(refused, IidError::Stale { .. }), "{refused}");
    assert_eq!(refused.reason(), "stale");

    let future = Instance {
        started: SystemTime::now() + Duration::from_secs(3600),
        ..instance()
    };
    assert!(matches!(sign(&future), Err(IidError::FromTheFuture)));
    assert!(sign(&instance()).is_ok());
}

#[test]
fn an_oversized_payload_is_refused_before_it_is_read() {
    let signer = Signer::new();
    let attestor = attestor(&signer);
    let huge = vec![b' '; MAX_PAYLOAD + 1];
    assert!(matches!(
        attestor.verify(&huge, SystemTime::now()),
        Err(IidError::TooLarge(_))
    ));
}

#[test]
fn the_path_template_is_spire_s_and_checked() {
    assert!(PathTemplate::parse(DEFAULT_AGENT_PATH_TEMPLATE).is_ok());
    let custom = PathTemplate::parse("eks/{{ .Region }}/{{.InstanceID}}").unwrap();
    let doc = IdentityDocument::parse(instance().document().as_bytes()).unwrap();
    assert_eq!(custom.render(&doc), "eks/us-east-1/i-0123456789abcdef0");
    for bad in [
        "{{ .Tags.name }}/{{ .InstanceID }}",
        "{{ .Region }}",
        "/{{ .InstanceID }}",
        "a b/{{ .InstanceID }}",
        "{{ .InstanceID ",
    ] {
        assert!(PathTemplate::parse(bad).is_err(), "{bad}");
    }
}

struct Described;

impl InstanceDescriber for Described {
    fn describe<'a>(&'a self, _doc: &'a IdentityDocument) -> DescribeFuture<'a> {
        Box::pin(async {
            Ok(InstanceFacts {
                tags: vec![("team".into(), "payments".into())],
                security_groups: vec![("sg-01".into(), "nodes".into())],
                iam_roles: vec!["arn:aws:iam::123456789012:role/eks-node".into()],
            })
        })
    }
}

#[test]
fn a_describer_adds_tag_security_group_and_role_selectors() {
    let signer = Signer::new();
    let attestor = attestor(&signer).with_describer(Described);
    let doc = IdentityDocument::parse(instance().document().as_bytes()).unwrap();
    let selectors: Vec<String> = tokio_test_block(attestor.selectors(&doc))
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    for want in [
        "aws_iid:tag:team:payments",
        "aws_iid:sg:id:sg-01",
        "aws_iid:sg:name:nodes",
        "aws_iid:iamrole:arn:aws:iam::123456789012:role/eks-node",
    ] {
        assert!(
            selectors.iter().any(|s| s == want),
            "{want} in {selectors:?}"
        );
    }
}

#[test]
fn a_refusal_names_the_identity_the_document_claimed() {
    let doc = Instance::new("999999999999", "eu-west-1", "i-0bad0bad0bad0bad0").document();
    assert_eq!(
        claimed(&payload(&doc, "not a signature")),
        "account=999999999999 region=eu-west-1 instance=i-0bad0bad0bad0bad0"
    );
    assert_eq!(claimed(b"{"), "account=? region=? instance=?");
}

/// Hostile envelopes: every truncation of a genuine signature is refused, and no
/// flipped byte makes one attest another identity (a flip in a field nothing
/// relies on, such as the signer's serial, may still verify the same document).
#[test]
fn every_truncated_or_flipped_signature_is_refused() {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::STANDARD;
    let signer = Signer::new();
    let attestor = attestor(&signer);
    let doc = instance().document();
    let ber = engine.decode(signer.sign(doc.as_bytes())).unwrap();
    let refused = |bytes: &[u8]| verdict(&attestor, &doc, &engine.encode(bytes)).is_err();
    for cut in 0..ber.len() {
        assert!(refused(&ber[..cut]), "cut at {cut}");
    }
    let genuine = verdict(&attestor, &doc, &engine.encode(&ber)).unwrap();
    let mut still_verified = 0;
    for at in 0..ber.len() {
        let mut flipped = ber.clone();
        flipped[at] ^= 0x41;
        if let Ok(verified) = verdict(&attestor, &doc, &engine.encode(&flipped)) {
            assert_eq!(verified, genuine, "flip at {at}");
            still_verified += 1;
        }
    }
    // the content, the signed attributes and the signature are most of the bytes
    assert!(
        still_verified < ber.len() / 4,
        "{still_verified} of {}",
        ber.len()
    );
}
