//! `meshward api fetch x509|jwt|bundle`, `meshward api validate jwt`: a Workload
//! API client, like `spire-agent api`.

use meshward_spiffe::SpiffeId;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Subcommand;
use meshward_proxy::workload_api::{client, with_security_header};
use meshward_proxy::workload_proto::{
    JwtsvidRequest, ValidateJwtsvidRequest, X509BundlesRequest, X509svidRequest,
};

const DEFAULT_SOCKET: &str = "/run/meshward/sockets/agent.sock";

#[derive(Subcommand)]
pub(crate) enum ApiCommand {
    #[command(subcommand)]
    Fetch(FetchCommand),
    #[command(subcommand)]
    Validate(ValidateCommand),
}

#[derive(clap::Args)]
pub(crate) struct Socket {
    /// The Workload API socket [default: $SPIFFE_ENDPOINT_SOCKET, else /run/meshward/sockets/agent.sock]
    #[arg(long = "socketPath")]
    socket_path: Option<PathBuf>,
}

impl Socket {
    fn path(&self) -> PathBuf {
        self.socket_path.clone().unwrap_or_else(|| {
            std::env::var("SPIFFE_ENDPOINT_SOCKET")
                .ok()
                .and_then(|s| s.strip_prefix("unix://").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
        })
    }
}

#[derive(Subcommand)]
pub(crate) enum FetchCommand {
    /// The caller's X509-SVIDs and bundle.
    X509 {
        #[command(flatten)]
        socket: Socket,
        /// Write svid.N.pem, svid.N.key and bundle.N.pem here.
        #[arg(long)]
        write: Option<PathBuf>,
        #[arg(long)]
        silent: bool,
    },
    /// JWT-SVIDs for an audience.
    Jwt {
        #[command(flatten)]
        socket: Socket,
        /// comma-separated
        #[arg(long, value_delimiter = ',', required = true)]
        audience: Vec<String>,
        /// Only this identity of the caller's (default: all of them).
        #[arg(long = "spiffeID")]
        spiffe_id: Option<SpiffeId>,
    },
    /// The X.509 bundles (PEM).
    Bundle {
        #[command(flatten)]
        socket: Socket,
    },
}

#[derive(Subcommand)]
pub(crate) enum ValidateCommand {
    Jwt {
        #[command(flatten)]
        socket: Socket,
        #[arg(long)]
        audience: String,
        #[arg(long)]
        svid: String,
    },
}

pub(crate) fn run(cmd: ApiCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime
        .block_on(dispatch(cmd))
        .map_err(|e| match e.downcast_ref::<tonic::Status>() {
            Some(status) => anyhow::anyhow!("{:?}: {}", status.code(), status.message()),
            None => e,
        })
}

async fn dispatch(cmd: ApiCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ApiCommand::Fetch(FetchCommand::X509 {
            socket,
            write,
            silent,
        }) => {
            let started = Instant::now();
            let mut api = client(&socket.path()).await.map_err(anyhow::Error::msg)?;
            let mut stream = api
                .fetch_x509svid(with_security_header(X509svidRequest {}))
                .await?
                .into_inner();
            let response = stream
                .message()
                .await?
                .context("the Workload API closed the stream")?;
            if !silent {
                println!(
                    "Received {} svid after {:?}\n",
                    response.svids.len(),
                    started.elapsed()
                );
            }
            for (i, svid) in response.svids.iter().enumerate() {
                let chain = split_der(&svid.x509_svid);
                let bundle = split_der(&svid.bundle);
                if !silent {
                    println!("SPIFFE ID:\t\t{}", svid.spiffe_id);
                    if let Some((nb, na)) = chain.first().and_then(|c| validity(c)) {
                        println!("SVID Valid After:\t{nb}\nSVID Valid Until:\t{na}");
                    }
                    for (n, ca) in bundle.iter().enumerate() {
                        if let Some((nb, na)) = validity(ca) {
                            println!(
                                "CA #{} Valid After:\t{nb}\nCA #{} Valid Until:\t{na}",
                                n + 1,
                                n + 1
                            );
                        }
                    }
                    println!();
                }
                if let Some(dir) = &write {
                    std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
                    let pems = |certs: &[Vec<u8>]| {
                        certs
                            .iter()
                            .map(|c| pem("CERTIFICATE", c))
                            .collect::<String>()
                    };
                    std::fs::write(dir.join(format!("svid.{i}.pem")), pems(&chain))?;
                    write_key(
                        &dir.join(format!("svid.{i}.key")),
                        &pem("PRIVATE KEY", &svid.x509_svid_key),
                    )?;
                    std::fs::write(dir.join(format!("bundle.{i}.pem")), pems(&bundle))?;
                    if !silent {
                        println!(
                            "Writing SVID #{i} to file {}",
                            dir.join(format!("svid.{i}.pem")).display()
                        );
                    }
                }
            }
        }
        ApiCommand::Fetch(FetchCommand::Jwt {
            socket,
            audience,
            spiffe_id,
        }) => {
            let mut api = client(&socket.path()).await.map_err(anyhow::Error::msg)?;
            let response = api
                .fetch_jwtsvid(with_security_header(JwtsvidRequest {
                    audience,
                    spiffe_id: spiffe_id.map(|id| id.to_string()).unwrap_or_default(),
                }))
                .await?
                .into_inner();
            for svid in response.svids {
                println!("token({}):\n\t{}", svid.spiffe_id, svid.svid);
            }
        }
        ApiCommand::Fetch(FetchCommand::Bundle { socket }) => {
            let mut api = client(&socket.path()).await.map_err(anyhow::Error::msg)?;
            let mut stream = api
                .fetch_x509_bundles(with_security_header(X509BundlesRequest {}))
                .await?
                .into_inner();
            let response = stream
                .message()
                .await?
                .context("the Workload API closed the stream")?;
            let mut bundles: Vec<_> = response.bundles.into_iter().collect();
            bundles.sort();
            for (td, der) in bundles {
                println!("# {td}");
                for cert in split_der(&der) {
                    print!("{}", pem("CERTIFICATE", &cert));
                }
            }
        }
        ApiCommand::Validate(ValidateCommand::Jwt {
            socket,
            audience,
            svid,
        }) => {
            let mut api = client(&socket.path()).await.map_err(anyhow::Error::msg)?;
            let response = api
                .validate_jwtsvid(with_security_header(ValidateJwtsvidRequest {
                    audience,
                    svid,
                }))
                .await?
                .into_inner();
            println!("SVID is valid.\nSPIFFE ID : {}", response.spiffe_id);
            if let Some(claims) = response.claims {
                let mut keys: Vec<_> = claims.fields.keys().collect();
                keys.sort();
                println!(
                    "Claims    : {}",
                    keys.iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Concatenated DER certificates -> one DER each.
fn split_der(mut der: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !der.is_empty() {
        let Ok((rest, _)) = x509_parser::parse_x509_certificate(der) else {
            break;
        };
        out.push(der[..der.len() - rest.len()].to_vec());
        der = rest;
    }
    out
}

fn validity(der: &[u8]) -> Option<(String, String)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some((
        cert.validity().not_before.to_string(),
        cert.validity().not_after.to_string(),
    ))
}

fn pem(label: &str, der: &[u8]) -> String {
    meshward_spiffe::pem::encode(label, der)
}

fn write_key(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}
