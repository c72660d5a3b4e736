//! X509-SVIDs from CSRs (X509-SVID.md): exactly one URI SAN (the SPIFFE ID),
//! CA=false, key usage critical with digitalSignature only, EKU serverAuth and
//! clientAuth, a random 128-bit serial, an empty subject (so the URI SAN is
//! critical, and XFCC shows `Subject=""` as with Istio), DNS SANs from the entry.
//!
//! The CSR contributes its public key only. It must be P-256, its signature must
//! verify, and it may not ask for anything the issuer would not grant on its own.

use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, CustomExtension, DistinguishedName,
    ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};

use crate::ca::{BACKDATE, SigningCa, to_offset};
use crate::error::{CaError, SigningError};
use crate::random::hex;
use meshward_spiffe::SpiffeId;

/// A signed X509-SVID.
#[derive(Debug, Clone)]
pub struct X509Svid {
    pub spiffe_id: SpiffeId,
    /// Leaf first, then intermediates (never the root).
    pub chain: Vec<CertificateDer<'static>>,
    pub expires_at: SystemTime,
    /// Lower-case hex.
    pub serial: String,
}

/// What to put in the SVID besides the key.
pub struct SvidTemplate<'a> {
    pub spiffe_id: &'a SpiffeId,
    pub dns_names: &'a [String],
    /// Where the workload answers (its pod's IP), as IP SANs.
    pub ip_addresses: &'a [std::net::IpAddr],
    /// Already min(entry TTL, default); capped here by the CA's remaining life.
    pub ttl: Duration,
}

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";

/// Signs `csr` with `ca`.
pub fn sign_x509_svid(
    ca: &SigningCa,
    csr: &[u8],
    template: &SvidTemplate<'_>,
    now: SystemTime,
) -> Result<X509Svid, SigningError> {
    if template.spiffe_id.path().is_empty() {
        return Err(SigningError::InvalidRequest(format!(
            "{} has no path: a leaf SVID needs one",
            template.spiffe_id
        )));
    }
    let request = parse_csr(csr)?;
    check_requested(&request.params, template)?;

    let expires_at = (now + template.ttl).min(ca.not_after());
    if expires_at <= now {
        return Err(SigningError::Ca(CaError::NoActiveCa));
    }
    let serial = crate::random::serial()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    // Basic constraints present (py-spiffe requires them) with cA left at its
    // DEFAULT false: DER forbids encoding a default, which rcgen's ExplicitNoCa
    // does (`cA FALSE`) and strict parsers (Python's cryptography) reject.
    params.is_ca = IsCa::NoCa;
    let mut basic_constraints =
        CustomExtension::from_oid_content(&[2, 5, 29, 19], vec![0x30, 0x00]);
    basic_constraints.set_criticality(true);
    params.custom_extensions = vec![basic_constraints];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let uri = template
        .spiffe_id
        .as_str()
        .try_into()
        .map_err(|_| SigningError::InvalidRequest("SPIFFE ID is not an IA5 string".into()))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    for dns in template.dns_names {
        let name = dns.as_str().try_into().map_err(|_| {
            SigningError::InvalidRequest(format!("DNS name {dns:?} is not an IA5 string"))
        })?;
        params.subject_alt_names.push(SanType::DnsName(name));
    }
    for ip in template.ip_addresses {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.not_before = to_offset(now - BACKDATE);
    params.not_after = to_offset(expires_at);
    params.use_authority_key_identifier_extension = true;
    let leaf = params
        .signed_by(&request.public_key, ca.issuer())
        .map_err(|e| SigningError::Ca(CaError::crypto("signing an X509-SVID")(e.into())))?;
    // what a relying party will check, checked before anyone sees it
    let signed = meshward_spiffe::validate_x509_svid(leaf.der()).map_err(|e| {
        SigningError::Ca(CaError::crypto(
            "the signed SVID breaks the X509-SVID rules",
        )(Box::new(e)))
    })?;
    if signed != *template.spiffe_id {
        return Err(SigningError::Ca(CaError::crypto("signing an X509-SVID")(
            format!("the leaf names {signed}, not {}", template.spiffe_id).into(),
        )));
    }
    let mut chain = vec![leaf.der().clone()];
    chain.extend(ca.chain_tail().iter().cloned());
    Ok(X509Svid {
        spiffe_id: template.spiffe_id.clone(),
        chain,
        expires_at,
        serial: hex(&serial),
    })
}

/// [`sign_x509_svid`] on tokio's blocking pool: the CA key may live in a token
/// whose every signature is a call that blocks (a network HSM's round trip).
pub(crate) async fn sign_blocking(
    ca: std::sync::Arc<SigningCa>,
    csr: &[u8],
    template: &SvidTemplate<'_>,
    now: SystemTime,
) -> Result<X509Svid, SigningError> {
    let csr = csr.to_vec();
    let (spiffe_id, dns_names, ip_addresses, ttl) = (
        template.spiffe_id.clone(),
        template.dns_names.to_vec(),
        template.ip_addresses.to_vec(),
        template.ttl,
    );
    tokio::task::spawn_blocking(move || {
        let template = SvidTemplate {
            spiffe_id: &spiffe_id,
            dns_names: &dns_names,
            ip_addresses: &ip_addresses,
            ttl,
        };
        sign_x509_svid(&ca, &csr, &template, now)
    })
    .await
    .map_err(|e| SigningError::Ca(CaError::crypto("the signing task")(Box::new(e))))?
}

fn parse_csr(csr: &[u8]) -> Result<CertificateSigningRequestParams, SigningError> {
    let invalid = |why: &str| SigningError::InvalidCsr(why.to_owned());
    use x509_parser::prelude::FromDer as _;
    let (_, parsed) = x509_parser::certification_request::X509CertificationRequest::from_der(csr)
        .map_err(|_| invalid("not a DER PKCS#10 certificate request"))?;
    let spki = &parsed.certification_request_info.subject_pki;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|oid| oid.to_id_string());
    if spki.algorithm.algorithm.to_id_string() != OID_EC_PUBLIC_KEY
        || curve.as_deref() != Some(OID_P256)
    {
        return Err(invalid("wrong key type: the key must be ECDSA P-256"));
    }
    if parsed
        .certification_request_info
        .subject
        .iter()
        .next()
        .is_some()
    {
        return Err(invalid(
            "the subject must be empty: the issuer sets every field of an SVID",
        ));
    }
    CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr)).map_err(
        |e| match e {
            rcgen::Error::InvalidCertificationRequestSignature => {
                invalid("its signature does not verify")
            }
            rcgen::Error::UnsupportedExtension => {
                invalid("it requests an extension the issuer does not grant")
            }
            other => SigningError::InvalidCsr(other.to_string()),
        },
    )
}

/// The CSR may ask for nothing beyond what the issuer grants anyway.
fn check_requested(
    requested: &CertificateParams,
    template: &SvidTemplate<'_>,
) -> Result<(), SigningError> {
    let refuse = |what: String| {
        Err(SigningError::InvalidCsr(format!(
            "it asks for {what}, which the issuer does not grant"
        )))
    };
    if matches!(requested.is_ca, IsCa::Ca(_)) {
        return refuse("a CA certificate".into());
    }
    for san in &requested.subject_alt_names {
        let granted = match san {
            SanType::URI(uri) => uri.as_str() == template.spiffe_id.as_str(),
            SanType::DnsName(name) => template.dns_names.iter().any(|d| d == name.as_str()),
            SanType::IpAddress(ip) => template.ip_addresses.contains(ip),
            _ => false,
        };
        if !granted {
            return refuse(format!("the subject alternative name {san:?}"));
        }
    }
    if requested
        .key_usages
        .iter()
        .any(|u| *u != KeyUsagePurpose::DigitalSignature)
    {
        return refuse(format!("key usages {:?}", requested.key_usages));
    }
    if requested.extended_key_usages.iter().any(|u| {
        !matches!(
            u,
            ExtendedKeyUsagePurpose::ServerAuth | ExtendedKeyUsagePurpose::ClientAuth
        )
    }) {
        return refuse(format!(
            "extended key usages {:?}",
            requested.extended_key_usages
        ));
    }
    Ok(())
}
