//! The node daemons against the real control plane (etcd + kube-apiserver from
//! `scripts/peers.sh`, `meshward_test_support::control_plane`): an
//! AuthorizationPolicy applied with kubectl takes effect, an edited one changes
//! what is allowed, a deleted one goes. The daemons authenticate as the
//! `meshward-node` ServiceAccount of `docker/k8s/base` (a token from the
//! TokenRequest API), under exactly the RBAC shipped there.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;

use meshward_integration::{LoopbackForward, available_or_skip};
use meshward_test_support::control_plane;
use support::{curl_spire, echo_mesh, eventually, example, status};

#[test]
fn authorization_policies_applied_with_kubectl_take_effect() {
    let test = "authorization_policies_applied_with_kubectl_take_effect";
    let Some(()) = available_or_skip(test) else {
        return;
    };
    let Some(plane) = control_plane::shared(test) else {
        return;
    };
    // the manifests as shipped (no controllers run here: the workloads stay objects)
    plane
        .kubectl(&[
            "apply",
            "-k",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../docker/k8s/base"),
        ])
        .unwrap();
    let token = plane
        .kubectl(&[
            "create",
            "token",
            "meshward-node",
            "-n",
            "meshward-system",
            "--duration=1h",
        ])
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("meshward-node.token");
    std::fs::write(&token_file, token.trim()).unwrap();
    let api_yaml = plane.api_yaml_with_token(&token_file);
    let (mesh, _echo) = echo_mesh(|spec| {
        spec.pod("node-1", curl_spire(), true)
            .authorization_yaml(&format!("  kubernetes: {api_yaml}\n"));
    });
    // the daemons dial the API server's 127.0.0.1:<port> in their node, forwarded here
    let api: SocketAddr = plane.url().trim_start_matches("https://").parse().unwrap();
    let _forwards: Vec<LoopbackForward> = ["node-1", "node-2"]
        .iter()
        .map(|node| {
            let ns = mesh.cluster.node(node).unwrap().netns();
            LoopbackForward::start(ns, api.port(), api).unwrap()
        })
        .collect();
    let ip = mesh.pod_ip("echoserver").unwrap();
    let url = |path: &str| format!("http://{ip}:8080{path}");

    // no policy anywhere: default deny
    eventually(&mesh, "default deny", || {
        status(&mesh, "curl-spire", &[&url("/")], 403)
    });
    // applied: the caller's principal is allowed
    plane
        .apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: echoserver}\n")
        .unwrap();
    plane.apply(&example("02-allow-curl-spire")).unwrap();
    eventually(&mesh, "allowed once applied", || {
        status(&mesh, "curl-spire", &[&url("/hello")], 200)
    });
    // edited (same object): only POST /api/payment now
    let edited = example("03-allow-payment-only")
        .replace("name: allow-payment-only", "name: allow-curl-spire");
    plane.apply(&edited).unwrap();
    eventually(&mesh, "GET forbidden once edited", || {
        status(&mesh, "curl-spire", &[&url("/hello")], 403)
    });
    status(
        &mesh,
        "curl-spire",
        &["-X", "POST", "-d", "amount=5", &url("/api/payment")],
        200,
    )
    .unwrap();
    // deleted: default deny again
    plane
        .kubectl(&[
            "delete",
            "authorizationpolicy",
            "allow-curl-spire",
            "-n",
            "echoserver",
        ])
        .unwrap();
    eventually(&mesh, "forbidden once deleted", || {
        status(
            &mesh,
            "curl-spire",
            &["-X", "POST", "-d", "amount=5", &url("/api/payment")],
            403,
        )
    });
}

#[test]
fn the_daemons_keep_their_policies_through_an_api_server_restart() {
    let test = "the_daemons_keep_their_policies_through_an_api_server_restart";
    let Some(()) = available_or_skip(test) else {
        return;
    };
    let Some(mut plane) = control_plane::own(test) else {
        return;
    };
    let api_yaml = plane.api_yaml();
    let (mesh, _echo) = echo_mesh(|spec| {
        spec.pod("node-1", curl_spire(), true)
            .authorization_yaml(&format!("  kubernetes: {api_yaml}\n"));
    });
    let api: SocketAddr = plane.url().trim_start_matches("https://").parse().unwrap();
    let _forwards: Vec<LoopbackForward> = ["node-1", "node-2"]
        .iter()
        .map(|node| {
            let ns = mesh.cluster.node(node).unwrap().netns();
            LoopbackForward::start(ns, api.port(), api).unwrap()
        })
        .collect();
    let ip = mesh.pod_ip("echoserver").unwrap();
    let url = |path: &str| format!("http://{ip}:8080{path}");
    plane
        .apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: echoserver}\n")
        .unwrap();
    plane.apply(&example("02-allow-curl-spire")).unwrap();
    eventually(&mesh, "allowed once applied", || {
        status(&mesh, "curl-spire", &[&url("/hello")], 200)
    });
    // the API server goes away: the daemons keep their last good set
    plane.stop_apiserver();
    std::thread::sleep(std::time::Duration::from_secs(3));
    status(&mesh, "curl-spire", &[&url("/hello")], 200).unwrap();
    // back: their watches resume, and a change made now takes effect
    plane.start_apiserver().unwrap();
    let edited = example("03-allow-payment-only")
        .replace("name: allow-payment-only", "name: allow-curl-spire");
    plane.apply(&edited).unwrap();
    eventually(&mesh, "GET forbidden once edited after the restart", || {
        status(&mesh, "curl-spire", &[&url("/hello")], 403)
    });
    status(
        &mesh,
        "curl-spire",
        &["-X", "POST", "-d", "amount=5", &url("/api/payment")],
        200,
    )
    .unwrap();
}

#[test]
fn changes_made_while_the_daemons_were_away_are_not_lost() {
    let test = "changes_made_while_the_daemons_were_away_are_not_lost";
    let Some(()) = available_or_skip(test) else {
        return;
    };
    let Some(mut plane) = control_plane::own(test) else {
        return;
    };
    let api_yaml = plane.api_yaml();
    let (mesh, _echo) = echo_mesh(|spec| {
        spec.pod("node-1", curl_spire(), true)
            .authorization_yaml(&format!("  kubernetes: {api_yaml}\n"));
    });
    let api: SocketAddr = plane.url().trim_start_matches("https://").parse().unwrap();
    let forward = || -> Vec<LoopbackForward> {
        ["node-1", "node-2"]
            .iter()
            .map(|node| {
                let ns = mesh.cluster.node(node).unwrap().netns();
                LoopbackForward::start(ns, api.port(), api).unwrap()
            })
            .collect()
    };
    let forwards = forward();
    let ip = mesh.pod_ip("echoserver").unwrap();
    let url = |path: &str| format!("http://{ip}:8080{path}");
    plane
        .apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: echoserver}\n")
        .unwrap();
    plane.apply(&example("02-allow-curl-spire")).unwrap();
    eventually(&mesh, "allowed once applied", || {
        status(&mesh, "curl-spire", &[&url("/hello")], 200)
    });
    // the daemons lose the API server (no way back in), and meanwhile the policy
    // they hold is deleted and another applied; etcd's history is compacted, and the
    // restarted server's watch cache starts from now: their resourceVersion is gone
    drop(forwards);
    std::thread::sleep(std::time::Duration::from_millis(200));
    plane.stop_apiserver();
    plane.start_apiserver().unwrap();
    plane
        .kubectl(&[
            "delete",
            "authorizationpolicy",
            "allow-curl-spire",
            "-n",
            "echoserver",
        ])
        .unwrap();
    plane.apply(&example("03-allow-payment-only")).unwrap();
    plane.compact_etcd().unwrap();
    plane.stop_apiserver();
    plane.start_apiserver().unwrap();
    // still the last good set while away
    status(&mesh, "curl-spire", &[&url("/hello")], 200).unwrap();
    // back: the daemons list again and see both changes
    let _forwards = forward();
    eventually(&mesh, "the deletion seen once back", || {
        status(&mesh, "curl-spire", &[&url("/hello")], 403)
    });
    status(
        &mesh,
        "curl-spire",
        &["-X", "POST", "-d", "amount=5", &url("/api/payment")],
        200,
    )
    .unwrap();
    // and it was the server's 410 that sent them back to a list
    let log = mesh.daemon_log("node-1");
    assert!(
        log.contains("AuthorizationPolicy watch: error returned by apiserver during watch: too old resource version"),
        "{log}"
    );
}
