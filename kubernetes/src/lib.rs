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
    /// How long the API server keeps each watch open before ending it (the
    /// watch's `timeoutSeconds`); then the watch resumes from the last object
    /// seen. Default 290 (kube's): lower it when something between here and the
    /// API server cuts requests sooner.
    pub watch_timeout_seconds: Option<u32>,
}

impl ApiEndpoint {
    /// How to follow objects through this endpoint ([`watched::follow`]).
    pub fn watcher(&self) -> kube::runtime::watcher::Config {
        let config = kube::runtime::watcher::Config::default();
        match self.watch_timeout_seconds {
            Some(seconds) => config.timeout(seconds),
            None => config,
        }
    }
}

/// A client of one endpoint, with how that endpoint says to follow objects.
#[derive(Clone)]
pub struct Connection {
    pub client: kube::Client,
    pub watcher: kube::runtime::watcher::Config,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("watcher", &self.watcher)
            .finish_non_exhaustive()
    }
}

/// A [`Connection`] for `endpoint`; the error says what is missing.
pub fn connect(endpoint: &ApiEndpoint) -> Result<Connection, KubernetesError> {
    Ok(Connection {
        client: client(endpoint)?,
        watcher: endpoint.watcher(),
    })
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

#[cfg(test)]
mod tests {
    use super::ApiEndpoint;

    #[test]
    fn the_watch_timeout_is_asked_of_the_server_only_when_set() {
        // absent: kube's watcher sends its own default (290 s)
        assert_eq!(ApiEndpoint::default().watcher().timeout, None);
        let set = ApiEndpoint {
            watch_timeout_seconds: Some(30),
            ..ApiEndpoint::default()
        };
        assert_eq!(set.watcher().timeout, Some(30));
    }
}
