//! The real issuer process, driven as an operator and an agent would: the CLI
//! over the admin socket, the agent API over SPIFFE-authenticated TLS. The same
//! scenario runs on SQLite and on PostgreSQL.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshward_api::client::{Code, agent_client};
use meshward_api::proto;
use meshward_test_support::daemon::{free_port, http_get};
use meshward_test_support::issuer::{IssuerProcess, sqlite_url};
use meshward_test_support::postgres::TestDatabase;
use meshward_test_support::verify_jwt_svid;
use meshward_test_support::{check_x509_svid, p256_csr};
use meshward_tls::CertStore;

const TD: &str = "math.example.com";

type Issuer = IssuerProcess;

fn meshward() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_meshward"))
}

/// An agent's view: its identity store and an API client.
async fn connect(
    issuer: &Issuer,
    identity: &Arc<CertStore>,
) -> meshward_api::proto::agent_api_client::AgentApiClient<tonic::transport::Channel> {
    agent_client(
        &issuer.agent.to_string(),
        &meshward_spiffe::TrustDomain::parse(TD).unwrap(),
        issuer.bundle(),
        identity.clone(),
    )
    .await
    .unwrap()
}

/// What an attestation answered: the node SVID's ID and chain, and the trust
/// bundle's X.509 authorities.
struct Attested {
    spiffe_id: String,
    chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    roots: Vec<rustls_pki_types::CertificateDer<'static>>,
}

impl From<proto::AttestResponse> for Attested {
    fn from(response: proto::AttestResponse) -> Self {
        let svid = response.svid.unwrap();
        let der = |certs: Vec<Vec<u8>>| certs.into_iter().map(Into::into).collect();
        Self {
            spiffe_id: svid.spiffe_id,
            chain: der(svid.cert_chain),
            roots: der(response.bundle.unwrap().x509_authorities),
        }
    }
}

mod bundle;
mod federation;
mod kubernetes;
mod pkcs11;
mod real_kubernetes;
mod scenario;
