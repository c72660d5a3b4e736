//! `meshward issuer federation create|update|delete|list|show|refresh`, as
//! spire-server spells them.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use meshward_api::client::admin_client;
use meshward_api::proto;
use meshward_spiffe::{Bundle, TrustDomain};

use super::args::{BundleFormat, FederationCommand, FederationFields};

pub(super) async fn run(cmd: FederationCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        FederationCommand::Create { fields, common } => {
            let message = relationship(fields)?;
            let created = admin_client(common.socket_path.clone())
                .await?
                .create_federation_relationship(message)
                .await?
                .into_inner();
            common.output.relationships(&[created]);
        }
        FederationCommand::Update { fields, common } => {
            let message = relationship(fields)?;
            let updated = admin_client(common.socket_path.clone())
                .await?
                .update_federation_relationship(message)
                .await?
                .into_inner();
            common.output.relationships(&[updated]);
        }
        FederationCommand::Delete { id, common } => {
            let td = trust_domain(&id)?;
            admin_client(common.socket_path.clone())
                .await?
                .delete_federation_relationship(proto::TrustDomainRef {
                    trust_domain: td.to_string(),
                })
                .await?;
            common
                .output
                .done(&format!("Federation relationship with {td} deleted"));
        }
        FederationCommand::List { common } => {
            let all = list(&common.socket_path).await?;
            common.output.relationships(&all);
        }
        FederationCommand::Show {
            trust_domain: td,
            common,
        } => {
            let td = trust_domain(&td)?;
            let found: Vec<_> = list(&common.socket_path)
                .await?
                .into_iter()
                .filter(|r| r.trust_domain == td.as_str())
                .collect();
            anyhow::ensure!(!found.is_empty(), "no federation relationship with {td}");
            common.output.relationships(&found);
        }
        FederationCommand::Refresh { id, common } => {
            let td = trust_domain(&id)?;
            let fetched = admin_client(common.socket_path.clone())
                .await?
                .refresh_federated_bundle(proto::TrustDomainRef {
                    trust_domain: td.to_string(),
                })
                .await?
                .into_inner();
            common.output.done(&format!(
                "Bundle of {td} refreshed (sequence {})",
                fetched.sequence
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(socket: &Path) -> anyhow::Result<Vec<proto::FederationRelationship>> {
    Ok(admin_client(socket.to_owned())
        .await?
        .list_federation_relationships(proto::Empty {})
        .await?
        .into_inner()
        .relationships)
}

fn relationship(fields: FederationFields) -> anyhow::Result<proto::FederationRelationship> {
    let td = trust_domain(&fields.trust_domain)?;
    let trust_domain_bundle = fields
        .trust_domain_bundle_path
        .as_deref()
        .map(|path| bundle_message(&td, Some(path), fields.trust_domain_bundle_format))
        .transpose()?;
    Ok(proto::FederationRelationship {
        trust_domain: td.to_string(),
        bundle_endpoint_url: fields.bundle_endpoint_url,
        bundle_endpoint_profile: fields.bundle_endpoint_profile,
        endpoint_spiffe_id: fields
            .endpoint_spiffe_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        trust_domain_bundle,
        managed_by: String::new(),
    })
}

/// A trust domain as `td` or `spiffe://td`.
pub(super) fn trust_domain(text: &str) -> anyhow::Result<TrustDomain> {
    Ok(TrustDomain::parse_name_or_id(text)?)
}

/// A bundle file (`-` or none: standard input) as the admin API takes it.
pub(super) fn bundle_message(
    trust_domain: &TrustDomain,
    path: Option<&Path>,
    format: BundleFormat,
) -> anyhow::Result<proto::Bundle> {
    let text = match path {
        Some(p) if p.as_os_str() != "-" => {
            std::fs::read_to_string(p).with_context(|| format!("{}: cannot read", p.display()))?
        }
        _ => std::io::read_to_string(std::io::stdin())?,
    };
    Ok(match format {
        BundleFormat::Spiffe => proto::Bundle {
            trust_domain: trust_domain.to_string(),
            jwks: text,
            ..Default::default()
        },
        BundleFormat::Pem => {
            let parsed = Bundle::from_pem(trust_domain, &text)?;
            proto::Bundle {
                trust_domain: trust_domain.to_string(),
                x509_authorities: parsed.x509_authorities.iter().map(|c| c.to_vec()).collect(),
                ..Default::default()
            }
        }
    })
}
