//! The AuthorizationPolicy set in force: loaded from the configured files and
//! directories, reloaded when they change. A load with any error is reported and
//! discarded; the last good set stays in force (fail safe: never a half-loaded set).
//!
//! Change detection polls a fingerprint (path, size, mtime of every file) each
//! second rather than using inotify: Kubernetes ConfigMap volumes update by swapping
//! a symlink, which directory watches see inconsistently, and the poll costs a few
//! `stat` calls.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshward_policy::{EngineOptions, PolicySet, load_paths};
use tokio::sync::watch;

use crate::metrics;

const POLL: Duration = Duration::from_secs(1);

/// The current policy set; read per decision, swapped whole on reload.
pub(crate) type Policies = watch::Receiver<Arc<PolicySet>>;

/// Loads the policies and keeps them current. An invalid first load starts with no
/// policy at all, which under the default mode denies everything (fail closed).
pub(crate) fn watch_policies(paths: Vec<PathBuf>, options: EngineOptions) -> Policies {
    // taken before the load, so a change made during it is seen
    let mut seen = fingerprint(&paths);
    let initial = match load(&paths, &options) {
        Ok(set) => set,
        Err(()) => PolicySet::empty(options.clone()),
    };
    let (tx, rx) = watch::channel(Arc::new(initial));
    if paths.is_empty() {
        return rx;
    }
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(POLL).await;
            let now = {
                let paths = paths.clone();
                tokio::task::spawn_blocking(move || fingerprint(&paths))
                    .await
                    .unwrap_or_default()
            };
            if now == seen {
                continue;
            }
            seen = now;
            let loaded = {
                let (paths, options) = (paths.clone(), options.clone());
                tokio::task::spawn_blocking(move || load(&paths, &options)).await
            };
            if let Ok(Ok(set)) = loaded {
                if tx.send(Arc::new(set)).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// One load, reported. `Err` when any file had an error (already logged).
fn load(paths: &[PathBuf], options: &EngineOptions) -> Result<PolicySet, ()> {
    let report = load_paths(paths, options);
    for notice in &report.notices {
        tracing::info!("policy: {notice}");
    }
    let count = report.policy_count();
    match report.into_policy_set(options) {
        Ok(set) => {
            tracing::info!(policies = count, "policies loaded");
            metrics::policy_reload(true, count);
            Ok(set)
        }
        Err(errors) => {
            for e in &errors {
                tracing::error!("policy rejected: {e}");
            }
            tracing::error!(
                errors = errors.len(),
                "policy change refused; the last good set stays in force"
            );
            metrics::policy_reload(false, 0);
            Err(())
        }
    }
}

type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    let mut out = Vec::new();
    for path in paths {
        stat_into(path, &mut out);
        if let Ok(entries) = std::fs::read_dir(path) {
            let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            files.sort();
            for file in files {
                stat_into(&file, &mut out);
            }
        }
    }
    out
}

fn stat_into(path: &Path, out: &mut Fingerprint) {
    let meta = std::fs::metadata(path).ok();
    out.push((
        path.to_owned(),
        meta.as_ref().map_or(0, std::fs::Metadata::len),
        meta.and_then(|m| m.modified().ok()),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOW: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-all, namespace: default}
spec:
  rules: [{}]
";

    #[tokio::test]
    async fn reloads_on_change_and_keeps_the_last_good_set() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.yaml");
        std::fs::write(&file, ALLOW).unwrap();
        let mut policies = watch_policies(vec![dir.path().to_owned()], EngineOptions::default());
        assert_eq!(policies.borrow_and_update().len(), 1);

        // a second policy appears
        std::fs::write(
            dir.path().join("q.yaml"),
            ALLOW.replace("allow-all", "second"),
        )
        .unwrap();
        tokio::time::timeout(Duration::from_secs(10), policies.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(policies.borrow_and_update().len(), 2);

        // a broken edit: refused, the two stay
        std::fs::write(
            &file,
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nspec: [",
        )
        .unwrap();
        let changed = tokio::time::timeout(Duration::from_secs(3), policies.changed()).await;
        assert!(changed.is_err(), "a broken file must not replace the set");
        assert_eq!(policies.borrow().len(), 2);
    }
}
