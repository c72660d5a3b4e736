//! RequestAuthentication against hostile tokens and keys, end to end.

use super::*;

/// Issue 25: several tokens, token attempts in other forms, claims a header would
/// read otherwise, JWKS with keys we cannot use and key removal, a discovery
/// document of another issuer, JWT-SVIDs without an audience check. Each case is
/// reported on its own.
#[test]
fn hostile_tokens_and_keys_never_reach_the_pod_as_verified() {
    let Some(()) = available_or_skip("hostile_tokens_and_keys_never_reach_the_pod_as_verified")
    else {
        return;
    };
    let provider = Provider::new();
    let (mut mesh, _echo) = provider_mesh(&provider, "    refresh_interval: 10s\n");
    let (_server, jwks_uri) = provider.serve(&mut mesh);
    let base = jwks_uri.trim_end_matches("/jwks.json").to_owned();
    let www = provider.dir.path().join("www");
    // a discovery document at <base>/evil that names another issuer (<base>)
    std::fs::create_dir_all(www.join("evil/.well-known")).unwrap();
    std::fs::write(
        www.join("evil/.well-known/openid-configuration"),
        json!({"issuer": base, "jwks_uri": jwks_uri}).to_string(),
    )
    .unwrap();
    apply(
        &mesh,
        "idp",
        &format!(
            "  jwtRules:\n  - issuer: {IDP}\n    audiences: [shop]\n    jwksUri: {jwks_uri}\n    outputClaimToHeaders: [{{header: x-user, claim: sub}}, {{header: x-role, claim: role}}]\n  - issuer: {base}/evil\n    audiences: [shop]\n"
        ),
    );
    // /open for anyone; /admin when the header written from the role claim says admin
    apply(
        &mesh,
        "open-and-admin",
        "  rules:\n  - to:\n    - operation:\n        paths: [/open]\n  - to:\n    - operation:\n        paths: [/admin]\n    when:\n    - key: request.headers[x-role]\n      values: [admin]\n",
    );
    let alice = provider.token(&claims(json!({"role": "user"})));
    eventually(&mesh, "the provider's token is accepted", || {
        ok(&get(&mesh, "/open", &bearer(&alice))).map(|_| ())
    });
    let mallory = provider.token(&claims(json!({"sub": "mallory", "role": "admin"})));
    let forged = P256Signer::new("idp-1").sign(&claims(json!({"sub": "admin"})));
    let user = |r: &Value| r.get("x-user").and_then(Value::as_str).map(str::to_owned);

    let mut cases: Vec<(&str, Result<(), String>)> = Vec::new();
    // 2: policy would judge alice while the pod reads mallory in x-user
    let r = get(
        &mesh,
        &format!("/open?access_token={mallory}"),
        &bearer(&alice),
    );
    cases.push((
        "2 two tokens",
        unauthorized(&r, "Jwt is not unique: the request carries multiple tokens").map_err(|e| {
            format!(
                "{e}; the pod got x-user {:?}",
                r.json().map(|j| user(&j["request"]["headers"]))
            )
        }),
    ));
    let r = get(
        &mesh,
        &format!("/open?access_token={alice}"),
        &bearer(&alice),
    );
    cases.push((
        "2 one token at two locations",
        ok(&r).and_then(|h| match user(&h).as_deref() {
            Some("alice") => Ok(()),
            other => Err(format!("x-user {other:?}")),
        }),
    ));
    // 3: a value of the Bearer scheme the proxy does not read must not pass unverified
    for (case, value) in [
        ("3 Bearer:token", format!("authorization: Bearer:{forged}")),
        (
            "3 Bearer<TAB>token",
            format!("authorization: Bearer\t{forged}"),
        ),
        ("3 bearer,token", format!("authorization: bearer,{forged}")),
    ] {
        let r = get(&mesh, "/open", &[value]);
        cases.push((
            case,
            unauthorized(
                &r,
                "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
            )
            .map_err(|e| {
                format!(
                    "{e}; the pod got {:?}",
                    r.json()
                        .map(|j| j["request"]["headers"]["authorization"].clone())
                )
            }),
        ));
    }
    let r = get(
        &mesh,
        "/open",
        &[format!("authorization: bearer   {alice}")],
    );
    cases.push((
        "3 lower-case scheme, spaces",
        ok(&r).and_then(|h| match (user(&h).as_deref(), h.get("authorization")) {
            (Some("alice"), None) => Ok(()),
            other => Err(format!("{other:?}")),
        }),
    ));
    let basic = "Basic YWxpY2U6c2VjcmV0";
    let r = get(&mesh, "/open", &[format!("authorization: {basic}")]);
    cases.push((
        "3 another scheme passes",
        ok(&r).and_then(|h| {
            (h["authorization"] == basic)
                .then_some(())
                .ok_or(format!("{h}"))
        }),
    ));
    let r = get(&mesh, &format!("/open?ACCESS_TOKEN={forged}"), &[]);
    cases.push((
        "3 parameter name in another case",
        unauthorized(&r, "Jwt verification fails"),
    ));
    // 6: x-role written from "guest, admin" would read as `admin` to the header condition
    let guest_admin = provider.token(&claims(json!({"role": "guest, admin"})));
    let r = get(&mesh, "/admin", &bearer(&guest_admin));
    cases.push((
        "6 a claim with a comma is no admin header",
        (r.status == Some(403))
            .then_some(())
            .ok_or(format!("{:?} {}", r.status, r.body)),
    ));
    let r = get(&mesh, "/admin", &bearer(&mallory));
    cases.push((
        "6 a claim admin is the header admin",
        ok(&r).and_then(|h| (h["x-role"] == "admin").then_some(()).ok_or(format!("{h}"))),
    ));
    // 4: a discovery document naming another issuer gives no keys
    let evil = provider.token(&claims(json!({"iss": format!("{base}/evil")})));
    let r = get(&mesh, "/open", &bearer(&evil));
    cases.push((
        "4 discovery of another issuer",
        unauthorized(&r, "Jwks remote fetch is failed"),
    ));
    // 4: the provider drops idp-1, adds idp-2 and keys we cannot use (P-521, secp256k1)
    let next = P256Signer::new("idp-2");
    let mut jwks: Value = serde_json::from_str(&next.jwks()).unwrap();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    for unusable in [
        json!({"kty": "EC", "crv": "P-521", "kid": "idp-p521", "x": b64(&[1; 66]), "y": b64(&[2; 66])}),
        json!({"kty": "EC", "crv": "secp256k1", "kid": "idp-k1", "x": b64(&[1; 32]), "y": b64(&[2; 32])}),
    ] {
        jwks["keys"].as_array_mut().unwrap().push(unusable);
    }
    std::fs::write(www.join("jwks.json.tmp"), jwks.to_string()).unwrap();
    std::fs::rename(www.join("jwks.json.tmp"), www.join("jwks.json")).unwrap();
    let rotated = next.sign(&claims(json!({"role": "user"})));
    cases.push((
        "4 a removed key stops being trusted at the next refresh",
        within(40, || {
            unauthorized(
                &get(&mesh, "/open", &bearer(&alice)),
                "Jwt verification fails",
            )
            .or_else(|_| {
                unauthorized(
                    &get(&mesh, "/open", &bearer(&alice)),
                    "Jwks doesn't have key to match kid or alg from Jwt",
                )
            })
            .map_err(|e| format!("the removed key's token: {e}"))?;
            ok(&get(&mesh, "/open", &bearer(&rotated)))
                .map(|_| ())
                .map_err(|e| format!("the remaining key's token: {e}"))
        }),
    ));
    // 5: a JWT-SVID rule without audiences is refused at load (the last good set
    // stays), so a JWT-SVID minted for another service does not authenticate here
    mesh.apply_policy(
        "svids",
        &format!("apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: svids, namespace: echoserver}}\nspec:\n  jwtRules:\n  - issuer: spiffe://{TD}\n"),
    )
    .unwrap();
    let billing = mesh.fetch_jwt_svid("curl-spire", "billing").unwrap();
    cases.push((
        "5 a JWT-SVID rule without audiences",
        within(15, || {
            let log = mesh.daemon_log("node-2");
            if !log.contains("spec.jwtRules[0].audiences") {
                return Err("the load was not refused by name".into());
            }
            unauthorized(
                &get(&mesh, "/open", &bearer(&billing)),
                "Jwt issuer is not configured",
            )
        }),
    ));
    std::fs::remove_file(mesh.policy_dir().join("svids.yaml")).unwrap();

    let failed: Vec<String> = cases
        .iter()
        .filter_map(|(case, result)| result.as_ref().err().map(|e| format!("{case}: {e}")))
        .collect();
    for (case, result) in &cases {
        eprintln!("{case}: {}", if result.is_ok() { "ok" } else { "FAILED" });
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
