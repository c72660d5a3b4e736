//! The node daemons against the real control plane (etcd + kube-apiserver from
//! `scripts/peers.sh`, `meshward_test_support::control_plane`): an
//! AuthorizationPolicy applied with kubectl takes effect, an edited one changes
//! what is allowed, a deleted one goes. The daemons authenticate as the
//! `meshward-node` ServiceAccount of `docker/k8s/base` (a token from the
//! TokenRequest API), under exactly the RBAC shipped there (its objects taken
//! from the rendered base), in every test here. (Services and EndpointSlices:
//! `services.rs`, `detection.rs`.)
#![allow(clippy::unwrap_used)]

mod support;

use meshward_integration::{Mesh, available_or_skip};
use meshward_test_support::control_plane;
use support::{
    TD, as_meshward_node, bearer, call, curl_spire, echo_mesh, eventually, example, forward_api,
    status, unauthorized,
};

/// For a test that changes what others would see: a control plane of its own, and
/// the daemons' `kubernetes:` block as `meshward-node` (its token in `dir`).
/// `None`: the test is skipped.
fn own_plane_as_node(
    test: &str,
    dir: &std::path::Path,
) -> Option<(control_plane::ControlPlane, String)> {
    available_or_skip(test)?;
    let plane = control_plane::own(test)?;
    let api_yaml = as_meshward_node(&plane, dir);
    Some((plane, api_yaml))
}

#[test]
fn authorization_policies_applied_with_kubectl_take_effect() {
    let test = "authorization_policies_applied_with_kubectl_take_effect";
    let Some(()) = available_or_skip(test) else {
        return;
    };
    let Some(plane) = control_plane::shared(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let api_yaml = as_meshward_node(plane, dir.path());
    let (mesh, _echo) = echo_mesh(|spec| {
        spec.pod("node-1", curl_spire(), true)
            .authorization_yaml(&format!("  kubernetes: {api_yaml}\n"));
    });
    let _forwards = forward_api(&mesh, plane.url());
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
    let dir = tempfile::tempdir().unwrap();
    let api_yaml = as_meshward_node(&plane, dir.path());
    let (mesh, _echo) = echo_mesh(|spec| {
        spec.pod("node-1", curl_spire(), true)
            .authorization_yaml(&format!("  kubernetes: {api_yaml}\n"));
    });
    let _forwards = forward_api(&mesh, plane.url());
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
    let dir = tempfile::tempdir().unwrap();
    let api_yaml = as_meshward_node(&plane, dir.path());
    let (mesh, _echo) = echo_mesh(|spec| {
        spec.pod("node-1", curl_spire(), true)
            .authorization_yaml(&format!("  kubernetes: {api_yaml}\n"));
    });
    let api_url = plane.url().to_owned();
    let forward = || forward_api(&mesh, &api_url);
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
    // both daemons watching (not only the one enforcing: the other may still be
    // in its first list's backoff, begun before the forwards were up)
    eventually(&mesh, "the policy listed by both daemons", || {
        ["node-1", "node-2"].iter().try_for_each(|n| {
            let now = policies_in_force(&mesh, n)?;
            (now == ["allow-curl-spire"])
                .then_some(())
                .ok_or(format!("{n} holds {now:?}"))
        })
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
    for node in ["node-1", "node-2"] {
        let log = mesh.daemon_log(node);
        assert!(
            log.contains("AuthorizationPolicy watch: error returned by apiserver during watch: too old resource version"),
            "{node}: {log}"
        );
    }
}

#[test]
fn request_authentications_applied_with_kubectl_take_effect() {
    let dir = tempfile::tempdir().unwrap();
    // a plane of its own: the shared one's tests change the policies of namespace echoserver
    let Some((plane, api_yaml)) = own_plane_as_node(
        "request_authentications_applied_with_kubectl_take_effect",
        dir.path(),
    ) else {
        return;
    };
    let (mesh, _echo) = echo_mesh(|spec| {
        spec.pod("node-1", curl_spire(), true)
            .authorization_yaml(&format!("  kubernetes: {api_yaml}\n"));
    });
    let _forwards = forward_api(&mesh, plane.url());
    plane
        .apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: echoserver}\n")
        .unwrap();
    // JWT-SVIDs of the trust domain for audience `audience`, and a policy that
    // wants the caller's request principal (Istio's iss/sub)
    let authentication = |audience: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: jwt-svids, namespace: echoserver}}\nspec:\n  selector: {{matchLabels: {{app: echoserver}}}}\n  jwtRules:\n  - issuer: spiffe://{TD}\n    audiences: [{audience}]\n"
        )
    };
    let caller = format!("spiffe://{TD}/ns/default/sa/curl-spire");
    plane
        .apply(&format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: require-jwt, namespace: echoserver}}\nspec:\n  selector: {{matchLabels: {{app: echoserver}}}}\n  rules:\n  - from:\n    - source:\n        requestPrincipals: [\"spiffe://{TD}/{caller}\"]\n"
        ))
        .unwrap();
    plane.apply(&authentication("echoserver")).unwrap();
    let fetch = |audience: &str| mesh.fetch_jwt_svid("curl-spire", audience).unwrap();
    let token = fetch("echoserver");
    let answered = |r: &meshward_integration::CurlResponse, want: u16, body: &str| {
        (r.status == Some(want) && (body.is_empty() || r.body == body))
            .then_some(())
            .ok_or(format!("want {want} {body:?}: {:?} {:?}", r.status, r.body))
    };

    // applied: the good token passes, a tampered one is refused as jwt_authn does
    eventually(&mesh, "the JWT-SVID accepted once applied", || {
        answered(&call(&mesh, &bearer(&token)), 200, "")
    });
    let mut tampered = token.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    unauthorized(&call(&mesh, &bearer(&tampered)), "Jwt verification fails").unwrap();
    // no token: no request principal, and the policy requires one
    answered(&call(&mesh, &[]), 403, "RBAC: access denied").unwrap();

    // edited (same object): another audience; the old token is refused, a token
    // for the new one passes
    plane.apply(&authentication("billing")).unwrap();
    eventually(&mesh, "the old audience refused once edited", || {
        unauthorized(
            &call(&mesh, &bearer(&token)),
            "Audiences in Jwt are not allowed",
        )
    });
    let billing = fetch("billing");
    answered(&call(&mesh, &bearer(&billing)), 200, "").unwrap();

    // deleted: no rule verifies a token any more, so none is refused as invalid
    // and none gives a request principal: the policy refuses both alike
    plane
        .kubectl(&[
            "delete",
            "requestauthentication",
            "jwt-svids",
            "-n",
            "echoserver",
        ])
        .unwrap();
    eventually(&mesh, "no request principal once deleted", || {
        answered(&call(&mesh, &bearer(&billing)), 403, "RBAC: access denied")
    });
    answered(&call(&mesh, &bearer(&tampered)), 403, "RBAC: access denied").unwrap();
}

/// The names of the policies `node`'s daemon holds (its admin `/policies`).
fn policies_in_force(mesh: &Mesh, node: &str) -> Result<Vec<String>, String> {
    let (_, body) = mesh
        .admin_get(node, "/policies")
        .map_err(|e| e.to_string())?;
    let listed: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    let mut names: Vec<String> = listed["policies"]
        .as_array()
        .ok_or(body)?
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

#[test]
fn policy_changes_across_watches_the_server_ends_are_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    // a plane of its own: its watches of AuthorizationPolicies are the daemons' only
    let Some((plane, api_yaml)) = own_plane_as_node(
        "policy_changes_across_watches_the_server_ends_are_not_lost",
        dir.path(),
    ) else {
        return;
    };
    // the server ends each of the daemons' watches after 2 s (the timeoutSeconds
    // they ask for; kube's default is 290 s, and kube-apiserver's
    // --min-request-timeout applies only to watches that ask for none)
    let api_yaml = api_yaml.replace('}', ", watch_timeout_seconds: 2}");
    let (mesh, _echo) = echo_mesh(|spec| {
        spec.pod("node-1", curl_spire(), true)
            .authorization_yaml(&format!("  kubernetes: {api_yaml}\n"));
    });
    let _forwards = forward_api(&mesh, plane.url());
    plane
        .apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: echoserver}\n")
        .unwrap();
    let policy = |name: &str, path: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: echoserver}}\nspec:\n  selector: {{matchLabels: {{app: echoserver}}}}\n  rules:\n  - to:\n    - operation: {{paths: [\"{path}\"]}}\n"
        )
    };
    let nodes = ["node-1", "node-2"];
    eventually(&mesh, "the daemons listed the (empty) set", || {
        nodes.iter().try_for_each(|n| {
            policies_in_force(&mesh, n)?
                .is_empty()
                .then_some(())
                .ok_or("not empty".to_owned())
        })
    });
    let watches = || plane.watches_served("authorizationpolicies").unwrap();
    let before = watches();
    // a change every 0.7 s for 7 s: creations, edits and deletions on both sides
    // of several watch ends
    let mut want = std::collections::BTreeSet::new();
    for i in 0..10 {
        let name = format!("p{i}");
        plane.apply(&policy(&name, "/first")).unwrap();
        want.insert(name);
        if i % 3 == 2 {
            let gone = format!("p{}", i - 2);
            plane
                .kubectl(&["delete", "authorizationpolicy", &gone, "-n", "echoserver"])
                .unwrap();
            want.remove(&gone);
        }
        std::thread::sleep(std::time::Duration::from_millis(700));
    }
    // the last one edited to allow the caller: the data path follows it
    plane
        .apply(&policy("p9", "/hello").replace(
            "  - to:",
            "  - from:\n    - source: {principals: [\"*\"]}\n    to:",
        ))
        .unwrap();
    let want: Vec<String> = want.into_iter().collect();
    eventually(&mesh, "every change in force on both daemons", || {
        nodes.iter().try_for_each(|n| {
            let now = policies_in_force(&mesh, n)?;
            (now == want)
                .then_some(())
                .ok_or(format!("{n} holds {now:?}, want {want:?}"))
        })
    });
    let ip = mesh.pod_ip("echoserver").unwrap();
    eventually(&mesh, "the edit in force", || {
        status(
            &mesh,
            "curl-spire",
            &[&format!("http://{ip}:8080/hello")],
            200,
        )
    });
    // the server ended each daemon's watch at least three times meanwhile
    let ended = watches() - before;
    assert!(
        ended >= 6,
        "the server ended {ended} watches of AuthorizationPolicies"
    );
    eprintln!("the server ended {ended} watches of AuthorizationPolicies meanwhile");
}
