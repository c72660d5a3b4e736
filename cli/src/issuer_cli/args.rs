//! The `meshward issuer` command line: verbs and flags as spire-server spells them.

use meshward_spiffe::SpiffeId;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::output::Output;

const DEFAULT_SOCKET: &str = "/run/meshward/issuer.sock";

#[derive(Subcommand)]
pub(crate) enum IssuerCommand {
    /// Run the issuance server.
    Run {
        /// issuer.yaml (every field has a default)
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Registration entries.
    #[command(subcommand)]
    Entry(EntryCommand),
    /// Attested nodes.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Join tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Identity templates (ClusterSPIFFEID-like): one gives every matching pod its ID.
    #[command(subcommand)]
    Template(TemplateCommand),
    /// Trust bundles: the own one and federated ones.
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Federation relationships: foreign trust domains whose bundles are kept fresh.
    #[command(subcommand)]
    Federation(FederationCommand),
    /// Whether the issuer is ready (datastore reachable, a CA active).
    Healthcheck {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Args)]
pub(crate) struct Common {
    /// The admin API socket.
    #[arg(long = "socketPath", default_value = DEFAULT_SOCKET)]
    pub(super) socket_path: PathBuf,
    /// pretty | json
    #[arg(long = "output", value_enum, default_value_t = Output::Pretty)]
    pub(super) output: Output,
}

#[derive(Args)]
pub(crate) struct EntryFields {
    #[arg(long = "spiffeID")]
    pub(super) spiffe_id: Option<String>,
    #[arg(long = "parentID")]
    pub(super) parent_id: Option<String>,
    /// type:value (repeatable); all must match
    #[arg(long = "selector")]
    pub(super) selectors: Vec<String>,
    /// seconds; 0 = the server default
    #[arg(long = "x509SVIDTTL", default_value_t = 0)]
    pub(super) x509_svid_ttl: i32,
    #[arg(long = "jwtSVIDTTL", default_value_t = 0)]
    pub(super) jwt_svid_ttl: i32,
    #[arg(long = "dns")]
    pub(super) dns_names: Vec<String>,
    #[arg(long = "federatesWith")]
    pub(super) federates_with: Vec<String>,
    #[arg(long)]
    pub(super) admin: bool,
    #[arg(long)]
    pub(super) downstream: bool,
    /// A node alias entry: the parent is the issuer itself (spiffe://<td>/spire/server).
    #[arg(long)]
    pub(super) node: bool,
    #[arg(long, default_value = "")]
    pub(super) hint: String,
}

#[derive(Subcommand)]
pub(crate) enum EntryCommand {
    Create {
        #[command(flatten)]
        fields: EntryFields,
        #[command(flatten)]
        common: Common,
    },
    Update {
        #[arg(long = "entryID")]
        entry_id: String,
        #[command(flatten)]
        fields: EntryFields,
        #[command(flatten)]
        common: Common,
    },
    Show {
        #[arg(long = "entryID")]
        entry_id: Option<String>,
        #[arg(long = "spiffeID")]
        spiffe_id: Option<String>,
        #[arg(long = "parentID")]
        parent_id: Option<String>,
        #[arg(long = "selector")]
        selectors: Vec<String>,
        #[command(flatten)]
        common: Common,
    },
    Delete {
        #[arg(long = "entryID")]
        entry_id: String,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
pub(crate) enum AgentCommand {
    List {
        #[command(flatten)]
        common: Common,
    },
    Show {
        #[arg(long = "spiffeID")]
        spiffe_id: SpiffeId,
        #[command(flatten)]
        common: Common,
    },
    /// A banned node cannot attest or renew.
    Ban {
        #[arg(long = "spiffeID")]
        spiffe_id: SpiffeId,
        #[command(flatten)]
        common: Common,
    },
    /// Forget the node: it must attest again.
    Evict {
        #[arg(long = "spiffeID")]
        spiffe_id: SpiffeId,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
pub(crate) enum TokenCommand {
    Generate {
        /// Node ID the token attests to [default: spiffe://<td>/spire/agent/join_token/<token>]
        #[arg(long = "spiffeID")]
        spiffe_id: Option<String>,
        /// seconds [default: the server's join_token_ttl, 600]
        #[arg(long, default_value_t = 0)]
        ttl: i64,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
pub(crate) enum TemplateCommand {
    /// Create or replace the templates of ClusterSPIFFEID YAML documents.
    Apply {
        /// The YAML file (`-` reads standard input).
        #[arg(long = "file", short = 'f')]
        file: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    List {
        #[command(flatten)]
        common: Common,
    },
    Delete {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum BundleFormat {
    Pem,
    Spiffe,
}

#[derive(Subcommand)]
pub(crate) enum BundleCommand {
    /// The own trust domain's bundle.
    Show {
        #[arg(long, value_enum, default_value_t = BundleFormat::Pem)]
        format: BundleFormat,
        #[command(flatten)]
        common: Common,
    },
    /// Federated bundles.
    List {
        /// Only this trust domain (spiffe://td)
        #[arg(long)]
        id: Option<String>,
        #[arg(long, value_enum, default_value_t = BundleFormat::Pem)]
        format: BundleFormat,
        #[command(flatten)]
        common: Common,
    },
    /// Store another trust domain's bundle.
    Set {
        /// spiffe://<trust domain>
        #[arg(long)]
        id: String,
        /// The bundle file; `-` or absent reads standard input.
        #[arg(long)]
        path: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = BundleFormat::Pem)]
        format: BundleFormat,
        #[command(flatten)]
        common: Common,
    },
    Delete {
        #[arg(long)]
        id: String,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
pub(crate) enum FederationCommand {
    /// Federate with a trust domain: fetch its bundle from its endpoint.
    Create {
        #[command(flatten)]
        fields: FederationFields,
        #[command(flatten)]
        common: Common,
    },
    /// Replace a relationship's endpoint or profile.
    Update {
        #[command(flatten)]
        fields: FederationFields,
        #[command(flatten)]
        common: Common,
    },
    /// End a relationship; the domain's bundle is forgotten with it.
    Delete {
        /// The trust domain (`td` or `spiffe://td`)
        #[arg(long)]
        id: String,
        #[command(flatten)]
        common: Common,
    },
    List {
        #[command(flatten)]
        common: Common,
    },
    Show {
        #[arg(long = "trustDomain")]
        trust_domain: String,
        #[command(flatten)]
        common: Common,
    },
    /// Fetch the domain's bundle now.
    Refresh {
        #[arg(long)]
        id: String,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Args)]
pub(crate) struct FederationFields {
    /// The foreign trust domain (`td` or `spiffe://td`); never inferred from the URL.
    #[arg(long = "trustDomain")]
    pub(super) trust_domain: String,
    #[arg(long = "bundleEndpointURL")]
    pub(super) bundle_endpoint_url: String,
    /// https_web | https_spiffe
    #[arg(long = "bundleEndpointProfile")]
    pub(super) bundle_endpoint_profile: String,
    /// https_spiffe: the SPIFFE ID the endpoint presents.
    #[arg(long = "endpointSpiffeID")]
    pub(super) endpoint_spiffe_id: Option<SpiffeId>,
    /// The domain's first bundle (needed by https_spiffe); `-` reads standard input.
    #[arg(long = "trustDomainBundlePath")]
    pub(super) trust_domain_bundle_path: Option<PathBuf>,
    #[arg(long = "trustDomainBundleFormat", value_enum, default_value_t = BundleFormat::Pem)]
    pub(super) trust_domain_bundle_format: BundleFormat,
}

/// spire-server and spire-agent write flags with one dash (`-spiffeID`): accept that by turning a
/// single-dash word into its double-dash form before clap sees it.
pub(crate) fn normalize_flags(args: impl Iterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_issuer = false;
    for arg in args {
        if arg == "issuer" || arg == "api" {
            in_issuer = true;
        }
        let word = arg.strip_prefix('-').filter(|rest| {
            !rest.starts_with('-') && rest.len() > 1 && rest.as_bytes()[0].is_ascii_alphabetic()
        });
        match word {
            Some(rest) if in_issuer => out.push(format!("--{rest}")),
            _ => out.push(arg),
        }
    }
    out
}
