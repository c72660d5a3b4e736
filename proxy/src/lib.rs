//! meshward's node daemon: the agent (identities), the SPIFFE Workload API and the
//! node proxy (the data path). The binary's CLI lives in `main.rs`.

pub mod admin;
pub mod agent;
pub mod capture;
pub mod config;
pub mod datapath;
pub mod logging;
pub mod metrics;
pub mod workload_api;
pub mod xfcc;

/// Generated SPIFFE Workload API types (proto/workload.proto; no package, by the standard).
#[allow(unreachable_pub, clippy::all, clippy::pedantic)]
pub mod workload_proto {
    tonic::include_proto!("_");
}
pub mod readiness;
