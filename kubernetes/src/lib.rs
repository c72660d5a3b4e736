//! meshward-kubernetes: one way to reach the Kubernetes API for every watcher of
//! meshward: an explicit server (with its CA and a token file), or the pod's
//! in-cluster service account; and one way to follow a kind of object
//! (`watched.rs`).

use std::path::PathBuf;

pub mod watched;

/// Where the API is, as configuration files write it (`kubernetes:` sections);
/// every field `None` (`{}`): in-cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiEndpoint {
    pub api_server: Option<String>,
    pub api_ca_path: Option<PathBuf>,
    pub api_token_path: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    #[error("api_server {url:?}: {source}")]
    ApiServer {
        url: String,
        source: http::uri::InvalidUri,
    },
    #[error("not in a cluster and no api_server given: {0}")]
    NotInCluster(#[from] kube::config::InClusterError),
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// A client for `endpoint`; the error says what is missing.
pub fn client(endpoint: &ApiEndpoint) -> Result<kube::Client, KubernetesError> {
    let config = match &endpoint.api_server {
        Some(url) => {
            let mut c =
                kube::Config::new(url.parse().map_err(|source| KubernetesError::ApiServer {
                    url: url.clone(),
                    source,
                })?);
            c.root_cert_file = endpoint.api_ca_path.clone();
            c.auth_info.token_file = endpoint
                .api_token_path
                .as_ref()
                .map(|p| p.display().to_string());
            c
        }
        None => kube::Config::incluster()?,
    };
    Ok(kube::Client::try_from(config)?)
}
