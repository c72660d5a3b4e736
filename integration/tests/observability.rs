//! Metrics, the access log and the admin endpoints of a running node daemon, after
//! known traffic: what an operator reads when asking "why was this refused?".
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use meshward_integration::{Mesh, available_or_skip, exec, meshward_binary};
use support::{TD, curl_spire, echo_mesh, eventually, example, sample, status};

/// A GET from inside a node's namespace: (curl exit code, body).
fn node_get(mesh: &Mesh, node: &str, url: &str) -> (Option<i32>, String) {
    let ns = mesh.cluster.node(node).unwrap().netns();
    let out = exec(
        ns,
        "curl",
        &["-sS", "--max-time", "5", url],
        Duration::from_secs(10),
    )
    .unwrap();
    (out.code, out.stdout)
}

#[test]
fn metrics_access_log_and_admin_explain_the_traffic() {
    let Some(()) = available_or_skip("metrics_access_log_and_admin_explain_the_traffic") else {
        return;
    };
    let (mesh, _echo) = echo_mesh(|spec| {
        spec.pod("node-1", curl_spire(), true);
    });
    let ip = mesh.pod_ip("echoserver").unwrap();
    let url = |path: &str| format!("http://{ip}:8080{path}");
    mesh.apply_policy("03-allow-payment-only", &example("03-allow-payment-only"))
        .unwrap();
    eventually(&mesh, "policy in force", || {
        status(
            &mesh,
            "curl-spire",
            &["-X", "POST", &url("/api/payment")],
            200,
        )
    });

    let metrics = |node| node_get(&mesh, node, "http://127.0.0.1:15020/stats/prometheus").1;
    let ok = format!("source_principal=\"spiffe://{TD}/ns/default/sa/curl-spire\"");
    let before = metrics("node-2");
    let allowed_before = sample(
        &before,
        "istio_requests_total",
        &[&ok, "response_code=\"200\""],
    );
    let denied_before = sample(
        &before,
        "istio_requests_total",
        &[&ok, "response_code=\"403\""],
    );
    let decisions = |metrics: &str, decision: &str| {
        let decision = format!("decision=\"{decision}\"");
        sample(
            metrics,
            "meshward_authz_decisions_total",
            &["layer=\"l7\"", &decision],
        )
    };
    let (allow_before, deny_before) = (decisions(&before, "allow"), decisions(&before, "deny"));
    let source_before = metrics("node-1");
    let tunnels_before = sample(
        &source_before,
        "meshward_hbone_connections_opened_total",
        &[],
    );
    let streams_before = sample(
        &source_before,
        "istio_tcp_connections_opened_total",
        &["reporter=\"source\"", &ok],
    );

    for _ in 0..3 {
        status(
            &mesh,
            "curl-spire",
            &["-X", "POST", &url("/api/payment")],
            200,
        )
        .unwrap();
    }
    status(&mesh, "curl-spire", &[&url("/list")], 403).unwrap();

    let after = metrics("node-2");
    assert_eq!(
        sample(
            &after,
            "istio_requests_total",
            &[&ok, "response_code=\"200\""]
        ) - allowed_before,
        3.0,
        "{after}"
    );
    assert_eq!(
        sample(
            &after,
            "istio_requests_total",
            &[&ok, "response_code=\"403\""]
        ) - denied_before,
        1.0
    );
    assert_eq!(decisions(&after, "allow") - allow_before, 3.0, "{after}");
    assert_eq!(decisions(&after, "deny") - deny_before, 1.0, "{after}");
    assert!(
        sample(
            &after,
            "meshward_authz_decisions_total",
            &[
                "decision=\"allow\"",
                "policy=\"echoserver/allow-payment-only\"",
                "action=\"ALLOW\""
            ]
        ) >= 3.0,
        "{after}"
    );
    assert!(sample(&after, "meshward_policy_reloads_total", &["result=\"ok\""]) >= 1.0);
    let left = sample(
        &after,
        "meshward_svid_seconds_to_expiry",
        &["/ns/echoserver/sa/default"],
    );
    assert!(left > 60.0 && left <= 3600.0, "seconds to expiry: {left}");
    // the allocator's figures: live objects within the pages it holds
    let allocated = sample(&after, "meshward_allocator_bytes", &["state=\"allocated\""]);
    let resident = sample(&after, "meshward_allocator_bytes", &["state=\"resident\""]);
    assert!(allocated > 0.0 && allocated < resident, "{after}");
    // four connections from curl-spire, four streams, all in the one pooled tunnel
    let source = metrics("node-1");
    let tunnels = sample(&source, "meshward_hbone_connections_opened_total", &[]);
    assert!(tunnels_before >= 1.0, "{source_before}");
    assert_eq!(tunnels - tunnels_before, 0.0, "{source}");
    let streams = sample(
        &source,
        "istio_tcp_connections_opened_total",
        &["reporter=\"source\"", &ok],
    );
    assert_eq!(streams - streams_before, 4.0, "{source}");
    // the tunnel agreed on the hybrid post-quantum key exchange (hbone.key_exchange's
    // default), on both ends
    let hybrid = "key_exchange=\"X25519MLKEM768\"";
    let handshakes = |m: &str, direction: &str| {
        sample(
            m,
            "meshward_tls_handshakes_total",
            &[&format!("direction=\"{direction}\""), hybrid],
        )
    };
    assert!(handshakes(&source, "outbound") >= 1.0, "{source}");
    assert!(handshakes(&after, "inbound") >= 1.0, "{after}");

    // the access log: one line per request, both identities, decision, policy
    let log = mesh.daemon_log_when("node-2", |log| {
        log.contains("path=\"/api/payment\"") && log.contains("path=\"/list\"")
    });
    let line = |path: &str, status: &str| {
        log.lines()
            .rfind(|l| {
                l.contains(" access: ")
                    && l.contains(&format!("path=\"{path}\""))
                    && l.contains(&format!("status={status}"))
            })
            .unwrap_or_else(|| panic!("no access line for {path} {status}:\n{log}"))
            .to_owned()
    };
    let allowed = line("/api/payment", "200");
    for want in [
        format!("src_principal=spiffe://{TD}/ns/default/sa/curl-spire "),
        format!("dst_principal=spiffe://{TD}/ns/echoserver/sa/default "),
        "decision=\"allow\"".to_owned(),
        "policy=echoserver/allow-payment-only".to_owned(),
    ] {
        assert!(allowed.contains(&want), "{want} missing in {allowed}");
    }
    let denied = line("/list", "403");
    for want in [
        format!("src_principal=spiffe://{TD}/ns/default/sa/curl-spire "),
        format!("dst_principal=spiffe://{TD}/ns/echoserver/sa/default "),
        "decision=\"deny\"".to_owned(),
        "no ALLOW policy matched".to_owned(),
    ] {
        assert!(denied.contains(&want), "{want} missing in {denied}");
    }

    // admin: on the node's loopback only
    let (code, workloads) = node_get(&mesh, "node-2", "http://127.0.0.1:15000/workloads");
    assert_eq!(code, Some(0));
    assert!(
        workloads.contains(&format!("spiffe://{TD}/ns/echoserver/sa/default")),
        "{workloads}"
    );
    let node_ip = mesh.cluster.node("node-2").unwrap().underlay_ip();
    let (code, _) = node_get(
        &mesh,
        "node-1",
        &format!("http://{node_ip}:15000/workloads"),
    );
    assert_eq!(
        code,
        Some(7),
        "admin must refuse connections from other hosts"
    );
    let (_, certs) = node_get(&mesh, "node-2", "http://127.0.0.1:15000/certs");
    assert!(
        certs.contains("BEGIN CERTIFICATE") && certs.contains("seconds_to_expiry"),
        "{certs}"
    );

    // /explain answers the operator's question with the same engine
    let (_, why) = node_get(
        &mesh,
        "node-2",
        &format!(
            "http://127.0.0.1:15000/explain?pod=echoserver&principal=spiffe://{TD}/ns/default/sa/curl-spire&method=GET&path=/list&port=8080"
        ),
    );
    assert!(why.contains("denied: no ALLOW policy matched"), "{why}");
    assert!(why.contains("echoserver/allow-payment-only"), "{why}");
    // and an allowed one: an explainer that always said "denied" would fail here
    let (_, why) = node_get(
        &mesh,
        "node-2",
        &format!(
            "http://127.0.0.1:15000/explain?pod=echoserver&principal=spiffe://{TD}/ns/default/sa/curl-spire&method=POST&path=/api/payment&port=8080"
        ),
    );
    assert!(why.contains("allowed") && !why.contains("denied"), "{why}");
    explain_agrees_with_eval(&mesh);

    // log levels change at runtime
    let ns = mesh.cluster.node("node-2").unwrap().netns();
    let out = exec(
        ns,
        "curl",
        &[
            "-sS",
            "-X",
            "POST",
            "http://127.0.0.1:15000/logging?level=info,access=off",
        ],
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(out.stdout.trim(), "info,access=off", "{}", out.stderr);
    let now = node_get(&mesh, "node-2", "http://127.0.0.1:15000/logging").1;
    assert!(now.contains("access=off") && now.contains("info"), "{now}");
    // and really: a refused request leaves no access line, until access is back on
    let access_lines = || {
        let log = mesh.daemon_log("node-2");
        log.lines()
            .filter(|l| l.contains(" access: ") && l.contains("path=\"/quiet\""))
            .count()
    };
    status(&mesh, "curl-spire", &[&url("/quiet")], 403).unwrap();
    assert_eq!(access_lines(), 0);
    let set = |level: &str| {
        let url = format!("http://127.0.0.1:15000/logging?level={level}");
        exec(
            ns,
            "curl",
            &["-sS", "-X", "POST", &url],
            Duration::from_secs(10),
        )
        .unwrap()
    };
    set("info,access=debug");
    status(&mesh, "curl-spire", &[&url("/quiet")], 403).unwrap();
    eventually(&mesh, "the access line is back", || {
        if access_lines() == 1 {
            Ok(())
        } else {
            Err(format!("{} lines", access_lines()))
        }
    });

    // `meshward proxy status` reads the same
    let bin = meshward_binary().unwrap();
    let out = exec(
        ns,
        bin.to_str().unwrap(),
        &["proxy", "status"],
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(
        out.stdout.contains("echoserver/echoserver")
            && out.stdout.contains("ALLOW  echoserver/allow-payment-only"),
        "{}{}",
        out.stdout,
        out.stderr
    );
}

/// The admin `/explain` and `meshward policy eval` judge every request of the talk
/// alike under the mesh's policies (they reach the engine through different code).
fn explain_agrees_with_eval(mesh: &Mesh) {
    let talk = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docker/examples/requests/talk.jsonl"
    ))
    .unwrap();
    let mut eval = std::process::Command::new(meshward_binary().unwrap())
        .args([
            "policy",
            "eval",
            "--trust-domain",
            TD,
            "--requests",
            "-",
            "--policies",
        ])
        .arg(mesh.policy_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut eval.stdin.take().unwrap(), talk.as_bytes()).unwrap();
    let decisions = String::from_utf8(eval.wait_with_output().unwrap().stdout).unwrap();
    let ns = mesh.cluster.node("node-2").unwrap().netns();
    let mut seen = Vec::new();
    for (line, decision) in talk.lines().zip(decisions.lines()) {
        let request = &serde_json::from_str::<serde_json::Value>(line).unwrap()["request"];
        let decision: serde_json::Value = serde_json::from_str(decision).unwrap();
        let mut query = vec![
            "pod=echoserver".to_owned(),
            format!("port={}", request["destination_port"]),
            format!("source_ip={}", request["source_ip"].as_str().unwrap()),
        ];
        if let Some(principal) = request["source_principal"].as_str() {
            query.push(format!("principal=spiffe://{principal}"));
        }
        if request["protocol"] == "http" {
            for field in ["method", "path", "host"] {
                query.push(format!("{field}={}", request[field].as_str().unwrap()));
            }
        }
        let mut args = vec!["-sS", "--max-time", "5", "-G"];
        for q in &query {
            args.extend(["--data-urlencode", q]);
        }
        args.push("http://127.0.0.1:15000/explain");
        let out = exec(ns, "curl", &args, Duration::from_secs(10)).unwrap();
        let want = match decision["decision"].as_str() {
            Some("allow") => "decision: allowed",
            Some("deny") => "decision: denied",
            other => panic!("{other:?}"),
        };
        assert!(
            out.stdout.contains(want),
            "{line}\neval: {decision}\n/explain: {}{}",
            out.stdout,
            out.stderr
        );
        seen.push(want);
    }
    assert_eq!(seen.len(), talk.lines().count(), "{decisions}");
    // the talk's requests are not all judged alike under this set
    assert!(seen.contains(&"decision: allowed") && seen.contains(&"decision: denied"));
}
