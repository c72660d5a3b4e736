//! One way to reach the Kubernetes API for every watcher of the daemon: an explicit
//! server (with its CA and a token file), or the pod's in-cluster service account.

use std::path::PathBuf;

/// Where the API is; every field `None`: in-cluster.
#[derive(Debug, Clone, Default)]
pub struct ApiEndpoint {
    pub api_server: Option<String>,
    pub api_ca_path: Option<PathBuf>,
    pub api_token_path: Option<PathBuf>,
}

impl From<&meshward_config::KubernetesApi> for ApiEndpoint {
    fn from(api: &meshward_config::KubernetesApi) -> Self {
        Self {
            api_server: api.api_server.clone(),
            api_ca_path: api.api_ca_path.clone(),
            api_token_path: api.api_token_path.clone(),
        }
    }
}

/// A client for `endpoint`; the error says what is missing.
pub fn client(endpoint: &ApiEndpoint) -> Result<kube::Client, String> {
    let config = match &endpoint.api_server {
        Some(url) => {
            let mut c = kube::Config::new(
                url.parse()
                    .map_err(|e| format!("api_server {url:?}: {e}"))?,
            );
            c.root_cert_file = endpoint.api_ca_path.clone();
            c.auth_info.token_file = endpoint
                .api_token_path
                .as_ref()
                .map(|p| p.display().to_string());
            c
        }
        None => kube::Config::incluster()
            .map_err(|e| format!("not in a cluster and no api_server given: {e}"))?,
    };
    kube::Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))
}
