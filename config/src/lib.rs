//! meshward-config: what every component's configuration shares.
//!
//! Each component owns its configuration types, beside the code that reads them
//! (`meshward_proxy::config::ProxyConfig`, `meshward_issuer::config::IssuerConfig`,
//! `meshward_extauthz::config::ExtensionProvider`, `meshward_kubernetes::ApiEndpoint`),
//! as linkerd's per-crate `Config`. This crate gives them one way to read a file
//! (errors that name the file, the field path and the reason), durations written as
//! people write them, and the log section the node daemon and the issuer share. It
//! depends on nothing of meshward's, so no component links another to be configured.

pub mod duration;
mod error;
mod observe;

pub use error::{ConfigError, parse_yaml, read_file};
pub use observe::{LogConfig, LogFormat};
