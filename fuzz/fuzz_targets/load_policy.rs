//! Arbitrary bytes as a policy file: loading never panics, and whatever compiles
//! can be evaluated and explained.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_policy::{
    EngineOptions, HttpRequest, PathNormalization, Request, SpiffeId, Workload, load_str,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let options = EngineOptions::default();
    let Ok(set) = load_str(text, "fuzz", &options).into_policy_set(&options) else {
        return;
    };
    let workload = Workload {
        namespace: "default".into(),
        labels: [("app".to_owned(), "a".to_owned())].into(),
    };
    let http = HttpRequest::new(
        "GET",
        "/a/b",
        "a.default:80",
        Default::default(),
        PathNormalization::default(),
    )
    .expect("a fixed valid request");
    let request = Request {
        source: SpiffeId::parse_principal("cluster.local/ns/default/sa/a").ok(),
        source_namespace: None,
        source_ip: [10, 0, 0, 1].into(),
        remote_ip: [10, 0, 0, 1].into(),
        destination_ip: [10, 0, 0, 2].into(),
        destination_port: 80,
        sni: None,
        http: Some(Box::new(http)),
    };
    let decision = set.evaluate(&workload, &request);
    let explanation = set.explain(&workload, &request);
    assert_eq!(decision, explanation.decision);
    let _ = explanation.to_string();
});
