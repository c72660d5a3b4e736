//! meshward-api: the contract between the issuer and its callers, on a floor of
//! its own so the node daemon speaks to the issuer without depending on it.
//!
//! - [`proto`]: the agent API (node attestation, SVIDs, bundles) and the admin API
//!   (entries, tokens, agents, bundles, templates), generated from `proto/`.
//! - [`attestation`]: the payload of each node attestor type, for both sides.
//! - [`client`]: connecting to both: the agent API over SPIFFE-authenticated TLS,
//!   the admin API over its unix socket.
//! - [`template`]: identity templates (ClusterSPIFFEID's shape): the issuer stores
//!   and validates them, the agent renders them for its pods.

/// Generated gRPC types and services (proto/agent.proto, proto/admin.proto).
#[allow(unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("meshward.issuer.v1");
}

pub mod attestation;
pub mod client;
pub mod template;
