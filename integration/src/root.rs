//! The environment needs root. In CI (`CI=true`) its absence is a failure; locally
//! the tests say plainly that they skip and why.

use crate::error::{HarnessError, Result};

pub(crate) fn check() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(HarnessError::NotRoot(
            "run the tests as root (sudo -E cargo test)".into(),
        ));
    }
    if std::process::Command::new("ip").arg("-V").output().is_err() {
        return Err(HarnessError::NotRoot(
            "`ip` is missing: install iproute2".into(),
        ));
    }
    Ok(())
}

/// For tests: `Some(())` when the environment can be built; `None` (with a line on
/// stderr saying why) when it cannot and this is not CI; a panic in CI.
pub fn available_or_skip(test: &str) -> Option<()> {
    match check() {
        Ok(()) => Some(()),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: {e}; CI must run the integration tests as root")
        }
        Err(e) => {
            eprintln!("SKIPPED {test}: {e}");
            None
        }
    }
}
