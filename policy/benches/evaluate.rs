//! Policy evaluation cost with 1, 100 and 10,000 policies over up to 1,000
//! namespaces. Target (issue 2, a benchmark, never a test): p50 under 300 ns at
//! 10,000 policies, and flat in the number of unrelated policies.
//!
//! Run: `cargo bench -p meshward-policy --bench evaluate`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use meshward_policy::{
    EngineOptions, HttpRequest, PathNormalization, PolicySet, Request, SpiffeId, Workload,
    load_str, normalize_target,
};

/// `count` policies spread over `min(count, 1000)` namespaces; every namespace has a
/// DENY, ALLOWs by principal and path for several apps, so the workload under test
/// (in `ns0`, `app=svc0`) sees about as many policies as a real one would.
fn policies(count: usize) -> PolicySet {
    let namespaces = count.clamp(1, 1000);
    let mut yaml = String::new();
    for i in 0..count {
        let ns = i % namespaces;
        let app = (i / namespaces) % 10;
        let (action, rule) = if i / namespaces == 1 {
            (
                "DENY",
                "  - to:\n    - operation:\n        paths: [\"/admin*\"]\n".to_owned(),
            )
        } else {
            (
                "ALLOW",
                format!(
                    "  - from:\n    - source:\n        principals: [\"cluster.local/ns/ns{}/sa/client{app}\"]\n    to:\n    - operation:\n        methods: [\"GET\", \"POST\"]\n        paths: [\"/api/v{app}/*\"]\n",
                    (ns + 1) % namespaces
                ),
            )
        };
        yaml += &format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p{i}\n  namespace: ns{ns}\nspec:\n  selector:\n    matchLabels:\n      app: svc{app}\n  action: {action}\n  rules:\n{rule}---\n"
        );
    }
    let options = EngineOptions::default();
    let report = load_str(&yaml, "bench", &options);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    report
        .into_policy_set(&options)
        .expect("bench policies compile")
}

fn request(path: &str) -> Request {
    let http = HttpRequest::new(
        "GET",
        path,
        "svc0.ns0:8080",
        HeaderMap::new(),
        PathNormalization::default(),
    )
    .expect("valid request");
    Request {
        source: Some(
            SpiffeId::parse_principal("cluster.local/ns/ns1/sa/client0").expect("valid identity"),
        ),
        source_namespace: None,
        source_ip: [10, 0, 0, 5].into(),
        remote_ip: [10, 0, 0, 5].into(),
        destination_ip: [10, 0, 1, 7].into(),
        destination_port: 8080,
        sni: None,
        http: Some(Box::new(http)),
    }
}

fn evaluate(c: &mut Criterion) {
    let workload = Workload {
        namespace: "ns0".into(),
        labels: [("app", "svc0"), ("version", "v1"), ("team", "payments")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    };
    let allowed = request("/api/v0/items");
    let denied = request("/list");
    let mut group = c.benchmark_group("evaluate");
    for count in [1, 100, 10_000] {
        let set = policies(count);
        if count > 1 {
            assert!(
                set.evaluate(&workload, &allowed).is_allowed(),
                "bench request must be allowed"
            );
        }
        assert!(!set.evaluate(&workload, &denied).is_allowed());
        group.bench_with_input(BenchmarkId::new("allowed", count), &set, |b, set| {
            b.iter(|| {
                black_box(
                    set.evaluate(black_box(&workload), black_box(&allowed))
                        .is_allowed(),
                )
            })
        });
        group.bench_with_input(BenchmarkId::new("denied", count), &set, |b, set| {
            b.iter(|| {
                black_box(
                    set.evaluate(black_box(&workload), black_box(&denied))
                        .is_allowed(),
                )
            })
        });
    }
    group.finish();
}

fn normalize(c: &mut Criterion) {
    let mut group = c.benchmark_group("normalize");
    for (name, target) in [
        ("clean", "/api/v1/items/42?expand=true"),
        ("dirty", "//api/./v1/%2e%2e/v2/items%2F42/../43?x=%2F"),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| normalize_target(black_box(target), PathNormalization::DecodeAndMergeSlashes))
        });
    }
    group.finish();
}

criterion_group!(benches, evaluate, normalize);
criterion_main!(benches);
