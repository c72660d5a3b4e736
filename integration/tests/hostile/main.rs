//! Hostile input against the running mesh (issue 14, docs/security.md): raw bytes,
//! slow and oversized request lines, hand-written HTTP/2 frames, hand-minted
//! certificates, forged addresses. Each test names the classes it holds, and
//! reports every case that fails at once; each case failed against the mesh before
//! its fix. Policies are files the daemons reload.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

#[path = "../support/mod.rs"]
mod support;

mod federation;
mod identity;
mod requests;
mod transport;

use support::TD;

pub(crate) const NONE: Duration = Duration::ZERO;

/// Every hostile case is checked and every failure reported at once, so one run
/// shows which classes hold (and, before a fix, which ones fell).
#[derive(Default)]
pub(crate) struct Findings(std::cell::RefCell<Vec<String>>);

impl Findings {
    pub(crate) fn check(&self, class: &str, holds: bool, detail: impl std::fmt::Debug) {
        if !holds {
            self.0.borrow_mut().push(format!("{class}: {detail:?}"));
        }
    }

    pub(crate) fn assert_none(self, mesh: &meshward_integration::Mesh) {
        let failed = self.0.into_inner();
        assert!(failed.is_empty(), "{}\n{}", failed.join("\n"), mesh.logs());
    }
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
pub(crate) const PAUSE: Duration = Duration::from_millis(1200);

pub(crate) fn allow_curl_spire(extra: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: allow-curl-spire, namespace: echoserver}}\nspec:\n  action: ALLOW\n  rules:\n  - from:\n    - source:\n        principals: [\"{TD}/ns/default/sa/curl-spire\"]\n{extra}"
    )
}

pub(crate) fn deny(name: &str, rules: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: echoserver}}\nspec:\n  action: DENY\n  rules:\n{rules}"
    )
}
