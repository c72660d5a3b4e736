//! The AuthorizationPolicy set in force: loaded from the configured files and
//! directories and, when configured, the AuthorizationPolicy objects of the
//! Kubernetes API (`security.istio.io/v1`, watched); rebuilt whenever either
//! changes. A load with any error is reported and discarded; the last good set
//! stays in force (fail safe: never a half-loaded set).
//!
//! Change detection polls a fingerprint (path, size, mtime of every file) each
//! second rather than using inotify: Kubernetes ConfigMap volumes update by swapping
//! a symlink, which directory watches see inconsistently, and the poll costs a few
//! `stat` calls.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshward_policy::{EngineOptions, PolicySet, load_objects, load_paths};
use tokio::sync::watch;

use super::policy_objects as objects;
use crate::metrics;

const POLL: Duration = Duration::from_secs(1);

/// The current policy set; read per decision, swapped whole on reload.
pub(crate) type Policies = watch::Receiver<Arc<PolicySet>>;

/// Loads the policies and keeps them current. An invalid first load starts with no
/// policy at all, which under the default mode denies everything (fail closed); so
/// does the time before the first list of the API's objects arrives.
pub(crate) fn watch_policies(
    paths: Vec<PathBuf>,
    kubernetes: Option<meshward_kubernetes::Connection>,
    options: EngineOptions,
) -> Policies {
    // taken before the load, so a change made during it is seen
    let mut seen = fingerprint(&paths);
    let initial = match load(&paths, &[], &options) {
        Ok(set) => set,
        Err(()) => PolicySet::empty(options.clone()),
    };
    let (tx, rx) = watch::channel(Arc::new(initial));
    let mut objects = kubernetes.as_ref().map(objects::watch);
    if paths.is_empty() && objects.is_none() {
        return rx;
    }
    tokio::spawn(async move {
        let mut documents: Arc<Vec<String>> = Arc::default();
        loop {
            let changed = tokio::select! {
                () = tokio::time::sleep(POLL) => {
                    let now = {
                        let paths = paths.clone();
                        tokio::task::spawn_blocking(move || fingerprint(&paths))
                            .await
                            .unwrap_or_default()
                    };
                    std::mem::replace(&mut seen, now) != seen
                }
                next = objects::next(&mut objects) => {
                    documents = next;
                    true
                }
            };
            if !changed {
                continue;
            }
            let loaded = {
                let (paths, documents, options) =
                    (paths.clone(), documents.clone(), options.clone());
                tokio::task::spawn_blocking(move || load(&paths, &documents, &options)).await
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

/// One load, reported: the files, then the API's objects (each bounded on its own,
/// numbered as documents of the source `kubernetes`). `Err` when anything had an error (logged).
fn load(paths: &[PathBuf], documents: &[String], options: &EngineOptions) -> Result<PolicySet, ()> {
    let mut report = load_paths(paths, options);
    if !documents.is_empty() {
        report.merge(load_objects(documents, "kubernetes", options));
    }
    for notice in &report.notices {
        tracing::info!("policy: {notice}");
    }
    let count = report.policy_count();
    let authentications = report.authentication_count();
    match report.into_policy_set(options) {
        Ok(set) => {
            tracing::info!(policies = count, authentications, "policies loaded");
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
        let mut policies =
            watch_policies(vec![dir.path().to_owned()], None, EngineOptions::default());
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

    /// Waits (bounded) until the set in force has `len` policies.
    async fn settles(policies: &mut Policies, len: usize) {
        let what = format!("{len} policies");
        crate::datapath::testing::settles(policies, &what, |set| set.len() == len).await;
    }

    /// Waits (bounded) until a set with `policies` AuthorizationPolicies and
    /// `rules` JWT rules for namespace echoserver is in force.
    async fn settles_with(policies: &mut Policies, len: usize, rules: usize) {
        let what = format!("{len} policies and {rules} JWT rules");
        crate::datapath::testing::settles(policies, &what, |set| {
            set.len() == len && jwt_rules(set) == rules
        })
        .await;
    }

    /// The JWT rules for a workload of namespace echoserver.
    fn jwt_rules(set: &PolicySet) -> usize {
        let echo = meshward_policy::Workload {
            namespace: "echoserver".into(),
            ..Default::default()
        };
        set.jwt_rules(&echo).len()
    }

    /// The set does not change for 3 s: the last good one stays in force.
    async fn stays(policies: &mut Policies, what: &str) {
        let changed = tokio::time::timeout(Duration::from_secs(3), policies.changed()).await;
        assert!(changed.is_err(), "{what} must not replace the set");
    }

    /// Both kinds of the real API server in one set with a file beside it, followed
    /// as they are applied and deleted; an object the server stores (its schema
    /// allows it) but the engine refuses leaves the last good set in force. One
    /// test: a refused object refuses every load after it, whichever test's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn policy_objects_from_the_kubernetes_api() {
        use crate::datapath::testing::{self, apply, delete};
        let Some((plane, client, dir)) =
            testing::real_api("policy_objects_from_the_kubernetes_api")
        else {
            return;
        };
        let policy = |name: &str, action: &str, ip_block: &str| {
            serde_json::json!({
                "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                "metadata": {"name": name, "namespace": "echoserver"},
                "spec": {"action": action, "rules": [{"from": [{"source": {"ipBlocks": [ip_block]}}]}]},
            })
        };
        let authentication = |name: &str, issuer: &str| {
            serde_json::json!({
                "apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
                "metadata": {"name": name, "namespace": "echoserver"},
                "spec": {"jwtRules": [{"issuer": issuer, "audiences": ["echoserver"]}]},
            })
        };
        let namespace = testing::namespace("echoserver");
        apply(
            plane,
            &[namespace, policy("allow-all", "ALLOW", "10.0.0.0/8")],
        );
        // a file beside the API: one set
        std::fs::write(dir.path().join("p.yaml"), ALLOW).unwrap();
        let mut policies = watch_policies(
            vec![dir.path().join("p.yaml")],
            Some(client),
            EngineOptions::default(),
        );
        settles(&mut policies, 2).await;
        apply(plane, &[policy("deny-all", "DENY", "10.0.0.0/8")]);
        settles(&mut policies, 3).await;
        delete(plane, "authorizationpolicy", "echoserver", "allow-all");
        settles(&mut policies, 2).await;
        // a RequestAuthentication beside them: one set of both kinds
        apply(
            plane,
            &[authentication("svids", "spiffe://math.example.com")],
        );
        settles_with(&mut policies, 2, 1).await;
        // an issuer a rule cannot be made of: refused, the set stays
        apply(plane, &[authentication("broken", "accounts")]);
        stays(&mut policies, "a broken RequestAuthentication").await;
        assert_eq!(jwt_rules(&policies.borrow()), 1);
        delete(plane, "requestauthentication", "echoserver", "broken");
        delete(plane, "requestauthentication", "echoserver", "svids");
        settles_with(&mut policies, 2, 0).await;
        // an ipBlock that is no address: refused, the set stays
        apply(plane, &[policy("broken", "ALLOW", "not-an-address")]);
        stays(&mut policies, "a broken AuthorizationPolicy").await;
        assert_eq!(policies.borrow().len(), 2);
    }
}
