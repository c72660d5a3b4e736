//! A stand-in for AWS's instance identity signer: an RSA-2048 key and its
//! certificate (which the issuer is configured to trust as a region's), EC2-shaped
//! identity documents, and their `rsa2048` PKCS#7 signatures in AWS's encoding
//! (BER with indefinite lengths, the content in segments). Ways to get one wrong
//! on purpose are here too, for the advisory tests.

use std::time::SystemTime;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::RSA_PKCS1_SHA256;
use base64::Engine as _;
use cms::cert::IssuerAndSerialNumber;
use cms::cert::x509::Certificate;
use cms::cert::x509::attr::Attribute;
use cms::cert::x509::der::asn1::{OctetString, SetOfVec};
use cms::cert::x509::der::oid::db::rfc5911::{
    ID_CONTENT_TYPE, ID_DATA, ID_MESSAGE_DIGEST, ID_SIGNED_DATA,
};
use cms::cert::x509::der::oid::db::rfc5912::{ID_SHA_256, RSA_ENCRYPTION};
use cms::cert::x509::der::{Any, Decode, Encode};
use cms::cert::x509::spki::AlgorithmIdentifierOwned;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};

/// What an instance's identity document says.
#[derive(Debug, Clone)]
pub struct Instance {
    pub account_id: String,
    pub region: String,
    pub instance_id: String,
    /// `pendingTime`: when the instance last started.
    pub started: SystemTime,
}

impl Instance {
    pub fn new(account_id: &str, region: &str, instance_id: &str) -> Self {
        Self {
            account_id: account_id.into(),
            region: region.into(),
            instance_id: instance_id.into(),
            started: SystemTime::now(),
        }
    }

    /// The document as IMDS serves it (AWS's layout: pretty-printed, ` : `).
    pub fn document(&self) -> String {
        let pending = time::OffsetDateTime::from(self.started)
            .replace_nanosecond(0)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let pending = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            pending.year(),
            u8::from(pending.month()),
            pending.day(),
            pending.hour(),
            pending.minute(),
            pending.second()
        );
        format!(
            "{{\n  \"accountId\" : \"{}\",\n  \"architecture\" : \"x86_64\",\n  \"availabilityZone\" : \"{}a\",\n  \"billingProducts\" : null,\n  \"devpayProductCodes\" : null,\n  \"marketplaceProductCodes\" : null,\n  \"imageId\" : \"ami-0abcdef1234567890\",\n  \"instanceId\" : \"{}\",\n  \"instanceType\" : \"t3.medium\",\n  \"kernelId\" : null,\n  \"pendingTime\" : \"{pending}\",\n  \"privateIp\" : \"10.0.0.10\",\n  \"ramdiskId\" : null,\n  \"region\" : \"{}\",\n  \"version\" : \"2017-09-30\"\n}}",
            self.account_id, self.region, self.instance_id, self.region
        )
    }
}

/// An `aws_iid` payload (SPIRE's JSON) of `document` and its `rsa2048` signature.
pub fn payload(document: &str, rsa2048: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "document": document,
        "signature": "",
        "rsa2048": rsa2048,
    }))
    .unwrap_or_default()
}

/// A signing key with its self-signed certificate, standing in for AWS's.
pub struct Signer {
    key: KeyPair,
    cert_der: Vec<u8>,
    pub cert_pem: String,
}

/// How to sign, correct by default.
#[derive(Debug, Clone, Default)]
pub struct SignOptions {
    /// Put these bytes in the envelope instead of those signed.
    pub swap_content: Option<Vec<u8>>,
    /// Flip a bit of the RSA signature.
    pub corrupt_signature: bool,
    /// Put the signer's certificate in the envelope (AWS does not).
    pub embed_certificate: bool,
}

impl Signer {
    #[allow(clippy::new_without_default)] // a fresh key each time, not a default
    pub fn new() -> Self {
        let key = KeyPair::generate(KeySize::Rsa2048).expect("RSA key");
        let pkcs8 = key.as_der().expect("PKCS#8");
        let rcgen_key = rcgen::KeyPair::try_from(pkcs8.as_ref()).expect("rcgen key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(
            rcgen::DnType::OrganizationName,
            "meshward test IMDS, not AWS",
        );
        let cert = params.self_signed(&rcgen_key).expect("certificate");
        Self {
            key,
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
        }
    }

    /// A `region_certificates_file` trusting this signer for `regions`.
    pub fn region_certificates(&self, regions: &[&str]) -> String {
        let indented: String = self.cert_pem.lines().map(|l| format!("  {l}\n")).collect();
        regions
            .iter()
            .map(|r| format!("{r}: |\n{indented}"))
            .collect()
    }

    /// AWS's `rsa2048` for `content`.
    pub fn sign(&self, content: &[u8]) -> String {
        self.sign_with(content, &SignOptions::default())
    }

    pub fn sign_with(&self, content: &[u8], options: &SignOptions) -> String {
        let der = self.signed_data(content, options);
        base64::engine::general_purpose::STANDARD.encode(ber_streamed(&der))
    }

    fn signed_data(&self, content: &[u8], options: &SignOptions) -> Vec<u8> {
        let cert = Certificate::from_der(&self.cert_der).expect("own certificate");
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, content);
        let attribute = |oid, value: Any| Attribute {
            oid,
            values: SetOfVec::try_from(vec![value]).expect("one value"),
        };
        let attrs = SetOfVec::try_from(vec![
            attribute(ID_CONTENT_TYPE, Any::encode_from(&ID_DATA).expect("oid")),
            attribute(
                ID_MESSAGE_DIGEST,
                Any::encode_from(&OctetString::new(digest.as_ref()).expect("digest"))
                    .expect("digest"),
            ),
        ])
        .expect("attributes");
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                &attrs.to_der().expect("attributes"),
                &mut signature,
            )
            .expect("sign");
        if options.corrupt_signature {
            signature[10] ^= 1;
        }
        let algorithm = |oid| AlgorithmIdentifierOwned {
            oid,
            parameters: None,
        };
        let signer = SignerInfo {
            version: CmsVersion::V1,
            sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: cert.tbs_certificate.issuer.clone(),
                serial_number: cert.tbs_certificate.serial_number.clone(),
            }),
            digest_alg: algorithm(ID_SHA_256),
            signed_attrs: Some(attrs),
            signature_algorithm: algorithm(RSA_ENCRYPTION),
            signature: OctetString::new(signature).expect("signature"),
            unsigned_attrs: None,
        };
        let carried = options.swap_content.as_deref().unwrap_or(content);
        let certificates = options.embed_certificate.then(|| {
            cms::signed_data::CertificateSet(
                SetOfVec::try_from(vec![cms::cert::CertificateChoices::Certificate(cert)])
                    .expect("one certificate"),
            )
        });
        let signed = SignedData {
            version: CmsVersion::V1,
            digest_algorithms: SetOfVec::try_from(vec![algorithm(ID_SHA_256)]).expect("digest"),
            encap_content_info: EncapsulatedContentInfo {
                econtent_type: ID_DATA,
                econtent: Some(
                    Any::encode_from(&OctetString::new(carried).expect("content"))
                        .expect("content"),
                ),
            },
            certificates,
            crls: None,
            signer_infos: SignerInfos(SetOfVec::try_from(vec![signer]).expect("one signer")),
        };
        ContentInfo {
            content_type: ID_SIGNED_DATA,
            content: Any::encode_from(&signed).expect("signed data"),
        }
        .to_der()
        .expect("content info")
    }
}

/// `der` re-encoded as OpenSSL's streaming signer (and so AWS) writes it:
/// every constructed value with an indefinite length, OCTET STRINGs longer than
/// 64 bytes in segments. Signed attributes keep their DER (they are signed so).
fn ber_streamed(der: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = der;
    while let Some((tag, body, next)) = tlv(rest) {
        match tag {
            // [0] IMPLICIT signed attributes of SignerInfo: kept as signed
            0xa0 if is_attrs(body) => {
                out.extend_from_slice(&rest[..rest.len() - next.len()]);
            }
            0x04 if body.len() > 64 => {
                out.extend_from_slice(&[0x24, 0x80]);
                for chunk in body.chunks(64) {
                    out.push(0x04);
                    out.extend_from_slice(&der_length(chunk.len()));
                    out.extend_from_slice(chunk);
                }
                out.extend_from_slice(&[0, 0]);
            }
            t if t & 0x20 != 0 => {
                out.extend_from_slice(&[t, 0x80]);
                out.extend_from_slice(&ber_streamed(body));
                out.extend_from_slice(&[0, 0]);
            }
            _ => out.extend_from_slice(&rest[..rest.len() - next.len()]),
        }
        rest = next;
    }
    out
}

/// Whether a [0] body is a list of attributes (contentType first): signed
/// attributes, not the [0] of ContentInfo or of the encapsulated content.
fn is_attrs(body: &[u8]) -> bool {
    tlv(body)
        .and_then(|(_, attr, _)| tlv(attr))
        .is_some_and(|(tag, oid, _)| tag == 0x06 && oid == ID_CONTENT_TYPE.as_bytes())
}

/// (tag, body, rest) of the DER value at the start of `input`.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        let (bytes, rest) = rest.split_at_checked(n)?;
        (
            bytes.iter().fold(0, |a, &b| (a << 8) | usize::from(b)),
            rest,
        )
    };
    let (body, rest) = rest.split_at_checked(len)?;
    Some((tag, body, rest))
}

fn der_length(n: usize) -> Vec<u8> {
    match n {
        0..0x80 => vec![n as u8],
        0x80..0x100 => vec![0x81, n as u8],
        _ => vec![0x82, (n >> 8) as u8, n as u8],
    }
}
