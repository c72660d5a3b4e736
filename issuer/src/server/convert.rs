//! Proto <-> domain, and ServiceError -> gRPC status.

use std::time::SystemTime;

use tonic::Status;

use crate::datastore::{AttestedNode, EndpointProfile, Entry, FederationRelationship};
use crate::service::ServiceError;
use crate::x509::X509Svid;
use meshward_api::proto;
use meshward_spiffe::Bundle;
use meshward_spiffe::SpiffeId;
use meshward_spiffe::{Selector, TrustDomain};

/// The gRPC status of an error: its code, and its message with every cause.
pub(crate) fn status(e: ServiceError) -> Status {
    let mut message = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        // causes whose text the message already shows are not repeated
        let text = c.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        cause = c.source();
    }
    Status::new(code(&e), message)
}

pub(crate) fn code(e: &ServiceError) -> tonic::Code {
    match e {
        ServiceError::InvalidArgument(_) => tonic::Code::InvalidArgument,
        ServiceError::PermissionDenied(_) => tonic::Code::PermissionDenied,
        ServiceError::NotFound(_) => tonic::Code::NotFound,
        ServiceError::AlreadyExists(_) => tonic::Code::AlreadyExists,
        ServiceError::Unavailable(_) => tonic::Code::Unavailable,
        ServiceError::Internal(_) => tonic::Code::Internal,
    }
}

pub(crate) fn code_of(e: &ServiceError) -> i32 {
    code(e) as i32
}

fn unix(t: SystemTime) -> i64 {
    crate::service::unix(t)
}

pub(crate) fn svid(s: &X509Svid) -> proto::X509Svid {
    proto::X509Svid {
        spiffe_id: s.spiffe_id.to_string(),
        cert_chain: s.chain.iter().map(|c| c.to_vec()).collect(),
        expires_at: unix(s.expires_at),
    }
}

pub(crate) fn bundle(b: &Bundle) -> proto::Bundle {
    proto::Bundle {
        trust_domain: b.trust_domain.to_string(),
        x509_authorities: b.x509_authorities.iter().map(|c| c.to_vec()).collect(),
        jwks: b.to_spiffe_json(),
        sequence: b.sequence,
        refresh_hint_seconds: b.refresh_hint.as_secs() as i64,
    }
}

/// A bundle from the admin API: the JWKS (SPIFFE format) when given, else the DER
/// authorities.
pub(crate) fn bundle_from(b: proto::Bundle) -> Result<Bundle, Status> {
    let td = trust_domain(&b.trust_domain)?;
    if !b.jwks.is_empty() {
        return Bundle::from_spiffe_json(&td, &b.jwks)
            .map_err(|e| Status::invalid_argument(e.to_string()));
    }
    let pem: String = b
        .x509_authorities
        .iter()
        .map(|der| meshward_spiffe::pem::certificate(&der.clone().into()))
        .collect();
    Bundle::from_pem(&td, &pem).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// A trust domain named in a request: invalid is the caller's error.
pub(crate) fn trust_domain(name: &str) -> Result<TrustDomain, Status> {
    TrustDomain::parse(name).map_err(|e| Status::invalid_argument(e.to_string()))
}

pub(crate) fn entry(e: &Entry) -> proto::Entry {
    proto::Entry {
        id: e.id.clone(),
        spiffe_id: e.spiffe_id.to_string(),
        parent_id: e.parent_id.to_string(),
        selectors: e.selectors.iter().map(ToString::to_string).collect(),
        x509_svid_ttl: e.x509_svid_ttl as i32,
        jwt_svid_ttl: e.jwt_svid_ttl as i32,
        dns_names: e.dns_names.clone(),
        federates_with: e.federates_with.iter().map(ToString::to_string).collect(),
        admin: e.admin,
        downstream: e.downstream,
        hint: e.hint.clone(),
        created_at: e.created_at,
        revision: e.revision,
    }
}

pub(crate) fn spiffe_id(field: &str, value: &str) -> Result<SpiffeId, Status> {
    SpiffeId::parse(value).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

pub(crate) fn selectors(values: &[String]) -> Result<Vec<Selector>, Status> {
    values
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse()
                .map_err(|e| Status::invalid_argument(format!("selectors[{i}]: {e}")))
        })
        .collect()
}

/// Trust domains as names or `spiffe://` IDs, as SPIRE's `federatesWith` takes them.
pub(crate) fn trust_domains(field: &str, values: &[String]) -> Result<Vec<TrustDomain>, Status> {
    values
        .iter()
        .enumerate()
        .map(|(i, td)| {
            TrustDomain::parse_name_or_id(td)
                .map_err(|e| Status::invalid_argument(format!("{field}[{i}]: {e}")))
        })
        .collect()
}

pub(crate) fn entry_from(e: proto::Entry) -> Result<Entry, Status> {
    let ttl = |field: &str, v: i32| {
        u32::try_from(v)
            .map_err(|_| Status::invalid_argument(format!("{field}: must not be negative")))
    };
    Ok(Entry {
        id: e.id,
        spiffe_id: spiffe_id("spiffe_id", &e.spiffe_id)?,
        parent_id: spiffe_id("parent_id", &e.parent_id)?,
        selectors: selectors(&e.selectors)?,
        x509_svid_ttl: ttl("x509_svid_ttl", e.x509_svid_ttl)?,
        jwt_svid_ttl: ttl("jwt_svid_ttl", e.jwt_svid_ttl)?,
        dns_names: e.dns_names,
        federates_with: trust_domains("federates_with", &e.federates_with)?,
        admin: e.admin,
        downstream: e.downstream,
        hint: e.hint,
        created_at: 0,
        revision: e.revision,
    })
}

pub(crate) fn agent(n: &AttestedNode) -> proto::Agent {
    proto::Agent {
        spiffe_id: n.spiffe_id.to_string(),
        attestation_type: n.attestation_type.clone(),
        selectors: n.selectors.iter().map(ToString::to_string).collect(),
        serial: n.serial.clone(),
        expires_at: n.expires_at,
        banned: n.banned,
        can_reattest: n.can_reattest,
        created_at: n.created_at,
    }
}

pub(crate) fn template(t: &meshward_api::template::IdentityTemplate) -> proto::IdentityTemplate {
    t.into()
}

pub(crate) fn template_from(
    t: proto::IdentityTemplate,
) -> Result<meshward_api::template::IdentityTemplate, Status> {
    t.try_into().map_err(Status::invalid_argument)
}

/// An entry ID, or a template with the pod it is rendered for.
pub(crate) fn target(
    entry_id: String,
    template: String,
    pod: Option<proto::PodAttributes>,
) -> Result<crate::service::SvidTarget, Status> {
    match (entry_id.is_empty(), template.is_empty(), pod) {
        (false, true, None) => Ok(crate::service::SvidTarget::Entry(entry_id)),
        (true, false, Some(p)) => Ok(crate::service::SvidTarget::Template {
            name: template,
            pod: meshward_api::template::PodAttributes {
                namespace: p.namespace,
                name: p.name,
                uid: p.uid,
                service_account: p.service_account,
                node_name: p.node_name,
                labels: p.labels.into_iter().collect(),
                namespace_labels: p.namespace_labels.into_iter().collect(),
            },
        }),
        _ => Err(Status::invalid_argument(
            "give entry_id, or template with pod: exactly one of the two",
        )),
    }
}

pub(crate) fn relationship(r: &FederationRelationship) -> proto::FederationRelationship {
    proto::FederationRelationship {
        trust_domain: r.trust_domain.to_string(),
        bundle_endpoint_url: r.bundle_endpoint_url.clone(),
        bundle_endpoint_profile: r.profile.name().to_owned(),
        endpoint_spiffe_id: match &r.profile {
            EndpointProfile::HttpsSpiffe { endpoint_id } => endpoint_id.to_string(),
            EndpointProfile::HttpsWeb => String::new(),
        },
        trust_domain_bundle: None,
        managed_by: r.managed_by.clone().unwrap_or_default(),
    }
}

/// A relationship from the admin API, with its bootstrap bundle if given.
pub(crate) fn relationship_from(
    r: proto::FederationRelationship,
) -> Result<(FederationRelationship, Option<Bundle>), Status> {
    let endpoint_id = match r.endpoint_spiffe_id.as_str() {
        "" => None,
        id => Some(spiffe_id("endpoint_spiffe_id", id)?),
    };
    let profile = EndpointProfile::parse(&r.bundle_endpoint_profile, endpoint_id)
        .map_err(Status::invalid_argument)?;
    let bootstrap = r.trust_domain_bundle.map(bundle_from).transpose()?;
    Ok((
        FederationRelationship {
            trust_domain: trust_domain(&r.trust_domain)?,
            bundle_endpoint_url: r.bundle_endpoint_url,
            profile,
            managed_by: None,
        },
        bootstrap,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn federates_with_takes_names_and_ids_and_names_a_bad_one() {
        let given = [
            "partner.example".to_owned(),
            "spiffe://other.example".to_owned(),
        ];
        let parsed = trust_domains("federates_with", &given).unwrap();
        assert_eq!(parsed[0], "partner.example");
        assert_eq!(parsed[1], "other.example");
        let bad = ["ok.example".to_owned(), "spiffe://UPPER.example".to_owned()];
        let e = trust_domains("federates_with", &bad).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message().starts_with("federates_with[1]: "),
            "{}",
            e.message()
        );
    }
}
