//! `k8s_psat` node attestation (issuer/src/k8s_psat.rs): the API server's
//! TokenReview answer for an agent's projected service-account token, read by the
//! issuer (audience `meshward`, allow-list `spire:spire-agent`). The token itself
//! is opaque to meshward: only the cluster reads it.
//!
//! Asserts: an agent is accepted only when the review says authenticated, its
//! user is exactly `system:serviceaccount:<namespace>:<name>` of an allowed
//! service account, and the pod name and UID are the first values of the
//! review's `extra` entries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_issuer::fuzzing::psat_review;

fuzz_target!(|data: &[u8]| {
    let audience = ["meshward".to_owned()];
    let allowed = [("spire".to_owned(), "spire-agent".to_owned())];
    let Some(Ok([namespace, service_account, pod_name, pod_uid])) =
        psat_review(data, &audience, &allowed)
    else {
        return;
    };
    assert_eq!(
        (namespace.as_str(), service_account.as_str()),
        ("spire", "spire-agent")
    );
    // serde_json skips ignored fields without checking their strings (UTF-8,
    // escapes): an accepted review need not be a valid `Value`
    let Ok(review) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let status = &review["status"];
    assert_eq!(status["authenticated"], true);
    assert_eq!(
        status["user"]["username"],
        "system:serviceaccount:spire:spire-agent"
    );
    let extra = &status["user"]["extra"];
    assert_eq!(
        extra["authentication.kubernetes.io/pod-name"][0],
        pod_name.as_str()
    );
    assert_eq!(
        extra["authentication.kubernetes.io/pod-uid"][0],
        pod_uid.as_str()
    );
});
