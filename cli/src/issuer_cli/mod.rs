//! `meshward issuer ...`: run the issuance server, and administer it with
//! spire-server's verbs and flags (`-spiffeID`, `-parentID`, `-selector`, ...).

mod args;
mod federation;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use meshward_api::client::admin_client;
use meshward_api::proto;
use meshward_issuer::config::IssuerConfig;

use args::{
    AgentCommand, BundleCommand, BundleFormat, EntryCommand, EntryFields, TemplateCommand,
    TokenCommand,
};
pub(crate) use args::{IssuerCommand, normalize_flags};

pub(crate) fn run(cmd: IssuerCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(dispatch(cmd)).map_err(|e| {
        match e.downcast_ref::<meshward_api::client::Status>() {
            // "PermissionDenied: node ... is banned" rather than tonic's debug form
            Some(status) => anyhow::anyhow!("{:?}: {}", status.code(), status.message()),
            None => e,
        }
    })
}

async fn dispatch(cmd: IssuerCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        IssuerCommand::Run { config } => run_server(config).await,
        IssuerCommand::Entry(cmd) => entry(cmd).await,
        IssuerCommand::Agent(cmd) => agent(cmd).await,
        IssuerCommand::Token(TokenCommand::Generate {
            spiffe_id,
            ttl,
            common,
        }) => {
            let mut client = admin_client(common.socket_path.clone()).await?;
            let token = client
                .generate_join_token(proto::GenerateJoinTokenRequest {
                    spiffe_id: spiffe_id.unwrap_or_default(),
                    ttl_seconds: ttl,
                })
                .await?
                .into_inner();
            common.output.token(&token);
            Ok(ExitCode::SUCCESS)
        }
        IssuerCommand::Bundle(cmd) => bundle(cmd).await,
        IssuerCommand::Federation(cmd) => federation::run(cmd).await,
        IssuerCommand::Template(cmd) => template(cmd).await,
        IssuerCommand::Healthcheck { common } => {
            let mut client = admin_client(common.socket_path.clone()).await?;
            let health = client.health(proto::Empty {}).await?.into_inner();
            println!(
                "{}",
                if health.datastore_ok && health.ca_active {
                    "Server is healthy."
                } else {
                    &health.message
                }
            );
            Ok(if health.datastore_ok && health.ca_active {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

async fn run_server(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let mut config = match config {
        Some(path) => IssuerConfig::from_file(&path)?,
        None => IssuerConfig::default(),
    };
    // a datastore URL carries a password: from a Secret through the environment,
    // never in the ConfigMap
    if let Ok(url) = std::env::var("MESHWARD_DATASTORE_URL") {
        if !url.is_empty() {
            config.datastore_url = Some(url);
        }
    }
    // one logging path for every component: the daemon's subscriber and format
    let _logs = meshward_proxy::logging::init(&config.log);
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
    };
    let prometheus =
        meshward_proxy::metrics::install().map_err(|e| anyhow::anyhow!("metrics: {e}"))?;
    let render: meshward_issuer::server::MetricsRender =
        std::sync::Arc::new(move || prometheus.render());
    meshward_issuer::server::run(config, render, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

fn entry_message(fields: EntryFields, id: String) -> anyhow::Result<proto::Entry> {
    let spiffe_id = fields.spiffe_id.context("-spiffeID is required")?;
    let parent_id = match (fields.parent_id, fields.node) {
        (Some(_), true) => bail!("-parentID and -node are exclusive"),
        (Some(parent), false) => parent,
        (None, true) => {
            let id = meshward_spiffe::SpiffeId::parse(&spiffe_id)
                .context("-spiffeID must be a SPIFFE ID")?;
            format!("spiffe://{}/spire/server", id.trust_domain())
        }
        (None, false) => bail!("-parentID or -node is required"),
    };
    Ok(proto::Entry {
        id,
        spiffe_id,
        parent_id,
        selectors: fields.selectors,
        x509_svid_ttl: fields.x509_svid_ttl,
        jwt_svid_ttl: fields.jwt_svid_ttl,
        dns_names: fields.dns_names,
        federates_with: fields.federates_with,
        admin: fields.admin,
        downstream: fields.downstream,
        hint: fields.hint,
        created_at: 0,
        revision: 0,
    })
}

async fn entry(cmd: EntryCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        EntryCommand::Create { fields, common } => {
            let message = entry_message(fields, String::new())?;
            let created = admin_client(common.socket_path.clone())
                .await?
                .create_entry(message)
                .await?
                .into_inner();
            common.output.entries(&[created]);
        }
        EntryCommand::Update {
            entry_id,
            fields,
            common,
        } => {
            let message = entry_message(fields, entry_id)?;
            let updated = admin_client(common.socket_path.clone())
                .await?
                .update_entry(message)
                .await?
                .into_inner();
            common.output.entries(&[updated]);
        }
        EntryCommand::Show {
            entry_id,
            spiffe_id,
            parent_id,
            selectors,
            common,
        } => {
            let mut client = admin_client(common.socket_path.clone()).await?;
            let entries = client
                .list_entries(proto::ListEntriesRequest {
                    spiffe_id: spiffe_id.unwrap_or_default(),
                    parent_id: parent_id.unwrap_or_default(),
                    selectors,
                })
                .await?
                .into_inner()
                .entries;
            let entries: Vec<_> = entries
                .into_iter()
                .filter(|e| entry_id.as_ref().is_none_or(|id| &e.id == id))
                .collect();
            common.output.entries(&entries);
        }
        EntryCommand::Delete { entry_id, common } => {
            let deleted = admin_client(common.socket_path.clone())
                .await?
                .delete_entry(proto::EntryRef { id: entry_id })
                .await?
                .into_inner();
            common.output.deleted(&deleted.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn agent(cmd: AgentCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AgentCommand::List { common } => {
            let agents = admin_client(common.socket_path.clone())
                .await?
                .list_agents(proto::Empty {})
                .await?
                .into_inner()
                .agents;
            common.output.agents(&agents);
        }
        AgentCommand::Show { spiffe_id, common } => {
            let agent = admin_client(common.socket_path.clone())
                .await?
                .show_agent(proto::AgentRef {
                    spiffe_id: spiffe_id.to_string(),
                })
                .await?
                .into_inner();
            common.output.agents(&[agent]);
        }
        AgentCommand::Ban { spiffe_id, common } => {
            admin_client(common.socket_path.clone())
                .await?
                .ban_agent(proto::AgentRef {
                    spiffe_id: spiffe_id.to_string(),
                })
                .await?;
            common.output.done(&format!("Agent {spiffe_id} banned"));
        }
        AgentCommand::Evict { spiffe_id, common } => {
            admin_client(common.socket_path.clone())
                .await?
                .evict_agent(proto::AgentRef {
                    spiffe_id: spiffe_id.to_string(),
                })
                .await?;
            common.output.done(&format!("Agent {spiffe_id} evicted"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn bundle(cmd: BundleCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BundleCommand::Show { format, common } => {
            let bundle = admin_client(common.socket_path.clone())
                .await?
                .show_bundle(proto::Empty {})
                .await?
                .into_inner();
            output::bundle(&bundle, format, false);
        }
        BundleCommand::List { id, format, common } => {
            let bundles = admin_client(common.socket_path.clone())
                .await?
                .list_federated_bundles(proto::Empty {})
                .await?
                .into_inner()
                .bundles;
            let want = id
                .as_deref()
                .map(federation::trust_domain)
                .transpose()?
                .map(|td| td.as_str().to_owned());
            for b in bundles
                .iter()
                .filter(|b| want.as_ref().is_none_or(|td| &b.trust_domain == td))
            {
                output::bundle(b, format, true);
            }
        }
        BundleCommand::Set {
            id,
            path,
            format,
            common,
        } => {
            let trust_domain = federation::trust_domain(&id)?;
            let message = federation::bundle_message(&trust_domain, path.as_deref(), format)?;
            admin_client(common.socket_path.clone())
                .await?
                .set_federated_bundle(message)
                .await?;
            common
                .output
                .done(&format!("Bundle set for spiffe://{trust_domain}"));
        }
        BundleCommand::Delete { id, common } => {
            let trust_domain = federation::trust_domain(&id)?.as_str().to_owned();
            admin_client(common.socket_path.clone())
                .await?
                .delete_federated_bundle(proto::TrustDomainRef {
                    trust_domain: trust_domain.clone(),
                })
                .await?;
            common
                .output
                .done(&format!("Bundle deleted for spiffe://{trust_domain}"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn template(cmd: TemplateCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TemplateCommand::Apply { file, common } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("{}: cannot read", file.display()))?
            };
            let templates = meshward_api::template::from_cluster_spiffe_id_yaml(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let names: Vec<String> = templates.iter().map(|t| t.name.clone()).collect();
            let message = proto::ListIdentityTemplatesResponse {
                templates: templates.iter().map(Into::into).collect(),
            };
            admin_client(common.socket_path.clone())
                .await?
                .put_templates(message)
                .await?;
            common
                .output
                .done(&format!("Applied templates: {}", names.join(", ")));
        }
        TemplateCommand::List { common } => {
            let templates = admin_client(common.socket_path.clone())
                .await?
                .list_templates(proto::Empty {})
                .await?
                .into_inner()
                .templates;
            common.output.templates(&templates);
        }
        TemplateCommand::Delete { name, common } => {
            admin_client(common.socket_path.clone())
                .await?
                .delete_template(proto::TemplateRef { name: name.clone() })
                .await?;
            common.output.done(&format!("Deleted template {name}"));
        }
    }
    Ok(ExitCode::SUCCESS)
}
