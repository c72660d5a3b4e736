use std::time::Duration;

/// What can go wrong while building or driving the environment.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
    #[error("the integration environment needs root (network namespaces, veth pairs): {0}")]
    NotRoot(String),
    #[error("{0}")]
    Invalid(String),
}

impl HarnessError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

pub type Result<T, E = HarnessError> = std::result::Result<T, E>;
