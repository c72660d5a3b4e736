//! Where the real systems built by `scripts/peers.sh` are, and what a test does
//! when they are not there.
//!
//! A binary is named by a variable (`MESHWARD_ETCD`, `MESHWARD_SPIRE_SERVER`, ...):
//! from the environment, or else from the `env` file `scripts/peers.sh` writes in
//! its cache (`$MESHWARD_PEERS_CACHE`, `/var/cache/meshward-peers` or
//! `~/.cache/meshward-peers`). A test whose peers are missing prints `SKIPPED`
//! and passes, except in CI (`CI=true`), where it fails: CI must run them.

use std::path::PathBuf;

/// Where `scripts/peers.sh` keeps its builds and `env` file (default below).
pub const PEERS_CACHE_VAR: &str = "MESHWARD_PEERS_CACHE";
const DEFAULT_PEERS_CACHE: &str = "/var/cache/meshward-peers";

/// A peer binary that is not there.
#[derive(Debug, thiserror::Error)]
#[error("{var} names no file and {env_file} has no such line (run scripts/peers.sh)")]
pub struct MissingPeer {
    pub var: &'static str,
    pub env_file: String,
}

/// The file `var` names, from the environment or the peers cache's `env` file.
pub fn find(var: &'static str) -> Result<PathBuf, MissingPeer> {
    let user_cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    let candidates: Vec<PathBuf> = match std::env::var_os(PEERS_CACHE_VAR).filter(|v| !v.is_empty())
    {
        Some(cache) => vec![PathBuf::from(cache)],
        None => std::iter::once(PathBuf::from(DEFAULT_PEERS_CACHE))
            .chain(user_cache.map(|c| c.join("meshward-peers")))
            .collect(),
    };
    let env_file = candidates
        .iter()
        .map(|c| c.join("env"))
        .find(|f| f.is_file())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PEERS_CACHE).join("env"));
    let from_env = std::env::var_os(var).filter(|v| !v.is_empty());
    let path = from_env.map(PathBuf::from).or_else(|| {
        let file = std::fs::read_to_string(&env_file).unwrap_or_default();
        file.lines().find_map(|line| {
            let line = line.trim().trim_start_matches("export ");
            let (name, value) = line.split_once('=')?;
            (name == var).then(|| PathBuf::from(value.trim_matches('"')))
        })
    });
    match path {
        Some(p) if p.is_file() => Ok(p),
        _ => Err(MissingPeer {
            var,
            env_file: env_file.display().to_string(),
        }),
    }
}

/// `found`, or `None` after printing `SKIPPED <test>: <what> ...`; in CI
/// (`CI=true`) a panic instead.
pub fn or_skip<T>(test: &str, what: &str, found: Result<T, impl std::fmt::Display>) -> Option<T> {
    match found {
        Ok(found) => Some(found),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: {e}; CI must run the tests against {what} (scripts/test.sh builds it)")
        }
        Err(e) => {
            eprintln!("SKIPPED {test}: no {what}: {e}");
            None
        }
    }
}
