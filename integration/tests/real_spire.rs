//! Real SPIRE on the other side of federation (issue 27, item 8).
//!
//! A SPIRE server of its own trust domain (`spire.test`) and a spire-agent run on
//! a host of the test cluster (`test-support/src/spire.rs`, binaries from
//! `scripts/peers.sh`); the mesh's issuer and SPIRE federate both ways over
//! `https_spiffe`, each set up with its own CLI as an operator does it
//! (`meshward issuer federation create` towards SPIRE's bundle endpoint,
//! `spire-server federation create` towards the issuer's). Then:
//! - each side holds the other's bundle as the other serves it (X.509
//!   authorities and JWT keys, fetched: the bootstrap bundles were PEM only);
//! - a SPIRE workload (a Unix user registered with `unix:uid`, `-federatesWith`
//!   the mesh) receives the mesh's bundle from spire-agent's Workload API, X.509
//!   and JWT; a workload whose entry does not federate receives neither;
//! - its JWT-SVID authenticates a request to a meshward pod: RequestAuthentication
//!   (`issuer: spiffe://spire.test`) accepts it, an AuthorizationPolicy's
//!   `requestPrincipals` matches it; another audience is refused, so is the token
//!   once the pod's entry no longer federates with SPIRE;
//! - py-spiffe in a meshward pod validates the SPIRE workload's X509-SVID with the
//!   federated bundle from meshward's Workload API (an mTLS handshake, the SPIRE
//!   workload verifying the pod's SVID with the mesh's bundle from spire-agent);
//!   a certificate the bundle does not vouch for, and the same SVID once the pod
//!   no longer federates, are refused;
//! - SPIRE's authorities rotate (`spire-server localauthority x509|jwt prepare,
//!   activate, taint, revoke`): the mesh trusts the new ones before they sign,
//!   and stops trusting the revoked ones;
//! - the mesh's CA rotates (three-minute CAs): SPIRE's workload receives the new
//!   CA and JWT key.
//!
//! Network: the test cluster's own namespaces only. The SPIRE workload calls the
//! echoserver in plaintext (a SPIRE workload speaks no HBONE): node-2 runs with
//! `inbound.plaintext: PERMISSIVE`, where policy still judges every request.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use meshward_integration::{CurlResponse, Mesh, PodSpec, available_or_skip, wait_for_port};
use meshward_spiffe::{Bundle, PublicJwk, TrustDomain};
use meshward_test_support::peers;
use meshward_test_support::spire::{Spire, SpireBinaries, SpireOptions, X509Fetch};
use support::{TD, echo_mesh};

const SPIRE_TD: &str = "spire.test";
/// The SPIRE workload: the processes of this Unix user (`unix:uid:<uid>`),
/// federating with the mesh.
const WORKLOAD_UID: u32 = 64101;
const WORKLOAD_ID: &str = "spiffe://spire.test/billing/reporter";
/// Another SPIRE workload, whose entry does not federate with the mesh.
const LOCAL_UID: u32 = 64102;
const LOCAL_ID: &str = "spiffe://spire.test/billing/local";
/// The verifier pod's py-spiffe server: its own TLS, so capture leaves it alone.
const VERIFIER_PORT: u16 = 9443;
/// The bundle endpoint of SPIRE's server on its host.
const SPIRE_ENDPOINT_PORT: u16 = 8443;

fn td(name: &str) -> TrustDomain {
    TrustDomain::parse(name).unwrap()
}

/// A set of DER certificates from PEM.
fn certs(pem: &str) -> BTreeSet<Vec<u8>> {
    meshward_spiffe::pem::certificates(pem)
        .unwrap()
        .into_iter()
        .map(|c| c.as_ref().to_vec())
        .collect()
}

fn x509_set(bundle: &Bundle) -> BTreeSet<Vec<u8>> {
    bundle
        .x509_authorities
        .iter()
        .map(|c| c.as_ref().to_vec())
        .collect()
}

/// A bundle's JWT keys: (kid, the key's parameters).
fn jwt_set(bundle: &Bundle) -> BTreeSet<(String, String)> {
    bundle
        .jwt_keys
        .iter()
        .map(|k| {
            let params = match &k.key {
                PublicJwk::Ec { crv, x, y } => format!("EC {crv} {x} {y}"),
                PublicJwk::Rsa { n, e } => format!("RSA {n} {e}"),
                PublicJwk::Okp { crv, x } => format!("OKP {crv} {x}"),
            };
            (k.kid.clone(), params)
        })
        .collect()
}

/// Whether two bundles hold the same authorities (order aside).
fn same_authorities(a: &Bundle, b: &Bundle) -> Result<(), String> {
    if x509_set(a) != x509_set(b) {
        return Err(format!(
            "X.509 authorities differ: {} vs {}",
            a.x509_authorities.len(),
            b.x509_authorities.len()
        ));
    }
    if jwt_set(a) != jwt_set(b) {
        return Err(format!("JWT keys differ: {:?} vs {:?}", kids(a), kids(b)));
    }
    Ok(())
}

/// The keys of a JWKS as the Workload API carries it (a plain JWK Set), as
/// [`jwt_set`] writes them.
fn jwks_set(jwks: &str) -> BTreeSet<(String, String)> {
    let jwks: serde_json::Value = serde_json::from_str(jwks).unwrap();
    let keys = jwks["keys"].as_array().cloned().unwrap_or_default();
    keys.iter()
        .map(|key| {
            let text = |name: &str| key[name].as_str().unwrap_or_default().to_owned();
            let params = match text("kty").as_str() {
                "RSA" => format!("RSA {} {}", text("n"), text("e")),
                kty => format!("{kty} {} {} {}", text("crv"), text("x"), text("y")),
            };
            (text("kid"), params)
        })
        .collect()
}

fn kids(bundle: &Bundle) -> BTreeSet<String> {
    bundle.jwt_keys.iter().map(|k| k.kid.clone()).collect()
}

/// Lines of `bundle list` output that are not its `*` banners.
fn without_banners(out: &str) -> String {
    out.lines()
        .filter(|l| !l.starts_with('*'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The mesh's own bundle, as its issuer serves it.
fn mesh_bundle(mesh: &Mesh) -> Bundle {
    let json = mesh
        .issuer_cli(&["bundle", "show", "-format", "spiffe"])
        .unwrap();
    Bundle::from_spiffe_json(&td(TD), &json).unwrap()
}

/// SPIRE's bundle as the mesh's issuer holds it.
fn mesh_view_of_spire(mesh: &Mesh) -> Result<Bundle, String> {
    let id = format!("spiffe://{SPIRE_TD}");
    let out = mesh
        .issuer_cli(&["bundle", "list", "-id", &id, "-format", "spiffe"])
        .map_err(|e| e.to_string())?;
    Bundle::from_spiffe_json(&td(SPIRE_TD), &without_banners(&out)).map_err(|e| e.to_string())
}

/// SPIRE's own bundle (`spire-server bundle show -format spiffe`).
fn spire_bundle(spire: &Spire) -> Bundle {
    Bundle::from_spiffe_json(&td(SPIRE_TD), &spire.bundle("spiffe").unwrap()).unwrap()
}

/// The mesh's bundle as SPIRE's server holds it.
fn spire_view_of_mesh(spire: &Spire) -> Result<Bundle, String> {
    let id = format!("spiffe://{TD}");
    let out = spire
        .server_cli(&["bundle", "list", "-id", &id, "-format", "spiffe"])
        .map_err(|e| e.to_string())?;
    Bundle::from_spiffe_json(&td(TD), &without_banners(&out)).map_err(|e| e.to_string())
}

/// Polls `check` for at most `secs`; on failure, shows both sides' logs.
fn within<T>(
    secs: u64,
    what: &str,
    mesh: &Mesh,
    spire: &Spire,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match check() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => panic!(
                "{what} (after {secs} s): {e}\n--- issuer ---\n{}\n{}\n{}",
                mesh.issuer_log(),
                spire.logs(),
                mesh.logs()
            ),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// The `kid` of a JWT's header.
fn kid(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
    header["kid"].as_str().unwrap_or_default().to_owned()
}

/// `spire-server localauthority <kind> show`: the authority IDs by slot
/// (`Active`, `Prepared`, `Old`).
fn authorities(spire: &Spire, kind: &str) -> Vec<(String, String)> {
    let out = spire.server_cli(&["localauthority", kind, "show"]).unwrap();
    let mut slot = String::new();
    let mut found = Vec::new();
    for line in out.lines() {
        let trimmed = line.trim();
        if let Some(id) = trimmed.strip_prefix("Authority ID:") {
            found.push((slot.clone(), id.trim().to_owned()));
        } else if !line.starts_with(' ') && trimmed.ends_with(':') {
            slot = trimmed
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
        }
    }
    found
}

fn authority(spire: &Spire, kind: &str, slot: &str) -> String {
    authorities(spire, kind)
        .into_iter()
        .find(|(s, _)| s == slot)
        .map(|(_, id)| id)
        .unwrap_or_else(|| panic!("no {slot} {kind} authority: {:?}", authorities(spire, kind)))
}

/// The SPIRE workload's request to the echoserver, from SPIRE's host.
fn call_echo(mesh: &Mesh, token: Option<&str>) -> CurlResponse {
    let url = format!("http://{}:8080/report", mesh.pod_ip("echoserver").unwrap());
    let header = token.map(|t| format!("authorization: Bearer {t}"));
    let mut args = Vec::new();
    if let Some(h) = &header {
        args.extend(["-H", h.as_str()]);
    }
    args.push(&url);
    mesh.cluster.curl_from_host("spire", &args).unwrap()
}

fn expect(r: &CurlResponse, status: u16, body: Option<&str>) -> Result<(), String> {
    if r.status == Some(status) && body.is_none_or(|b| r.body == b) {
        Ok(())
    } else {
        Err(format!(
            "want {status} {body:?}, got {:?} {:?} (curl exit {:?}: {})",
            r.status, r.body, r.exit_code, r.stderr
        ))
    }
}

/// The SPIRE workload's mTLS request to the verifier pod's py-spiffe server, with
/// `svid` (its chain and key files in `dir`), trusting the mesh as `trust_pem`
/// says (the mesh's bundle from spire-agent).
fn call_verifier(mesh: &Mesh, dir: &Path, trust_pem: &str) -> CurlResponse {
    let ca = dir.join("trust-mesh.pem");
    std::fs::write(&ca, trust_pem).unwrap();
    let url = format!(
        "https://{}:{VERIFIER_PORT}/",
        mesh.pod_ip("verifier").unwrap()
    );
    let path = |p: PathBuf| p.display().to_string();
    let (cert, key, ca) = (
        path(dir.join("svid.0.pem")),
        path(dir.join("svid.0.key")),
        path(ca),
    );
    mesh.cluster
        .curl_from_host(
            "spire",
            &["--cert", &cert, "--key", &key, "--cacert", &ca, &url],
        )
        .unwrap()
}

/// The mesh's bundle in a SPIRE workload's X.509 answer.
fn federated_mesh(fetch: &X509Fetch) -> Option<&String> {
    fetch.federated.get(&format!("spiffe://{TD}"))
}

/// py-spiffe in `pod` asks its node's Workload API to validate `token` for
/// `audience` (meshward's ValidateJWTSVID): the validated ID, or the refusal.
fn validate_in_pod(mesh: &Mesh, pod: &str, audience: &str, token: &str) -> Result<String, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/py/spiffe_validate_jwt.py");
    let node = mesh.cluster.pod(pod).unwrap().node().to_owned();
    let socket = mesh.workload_api_socket(&node).display().to_string();
    let out = mesh
        .cluster
        .exec_in_pod(
            pod,
            "python3",
            &[script, &socket, audience, token],
            Duration::from_secs(30),
        )
        .unwrap();
    let answer: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {}{}", out.stdout, out.stderr));
    match answer["spiffe_id"].as_str() {
        Some(id) => Ok(id.to_owned()),
        None => Err(answer["error"].to_string()),
    }
}

fn python_has_spiffe() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import spiffe.workloadapi"])
        .current_dir("/")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A chain claiming the SPIRE workload's ID, from a CA of its own: what no bundle
/// vouches for. Its files in `dir` (`svid.0.pem`, `svid.0.key`).
fn forged_svid(dir: &Path) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::default();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.subject_alt_names = vec![rcgen::SanType::URI(
        format!("spiffe://{SPIRE_TD}").try_into().unwrap(),
    )];
    let ca = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::default();
    leaf.subject_alt_names = vec![rcgen::SanType::URI(WORKLOAD_ID.try_into().unwrap())];
    leaf.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    ];
    let cert = leaf.signed_by(&key, &ca).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("svid.0.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("svid.0.key"), key.serialize_pem()).unwrap();
}

/// A host `spire` in the mesh's cluster, running SPIRE of `spire.test` with its
/// bundle endpoint on the host's address (refresh hint 2 s); `configure` adds
/// options.
fn start_spire(
    mesh: &mut Mesh,
    binaries: SpireBinaries,
    configure: impl FnOnce(&mut SpireOptions),
) -> Spire {
    let ip = mesh.cluster.add_host("spire").unwrap().ip();
    let ns = mesh
        .cluster
        .host("spire")
        .unwrap()
        .netns()
        .name()
        .to_owned();
    let mut options = SpireOptions::new(SPIRE_TD, SocketAddr::new(ip.into(), SPIRE_ENDPOINT_PORT));
    options.netns = Some(ns);
    options.bundle_refresh_hint = Duration::from_secs(2);
    configure(&mut options);
    Spire::start(binaries, options).unwrap()
}

/// Federation both ways, each side with its own CLI, as an operator does it;
/// returns once each side holds the other's bundle as the other serves it.
fn federate_both_ways(mesh: &Mesh, spire: &Spire) {
    let dir = mesh.cluster.log_dir().to_owned();
    // the mesh federates with SPIRE: its endpoint, authenticated as SPIRE's
    // server ID with SPIRE's CAs (PEM, as `spire-server bundle show` gives them)
    let spire_bootstrap = dir.join("spire-bootstrap.pem");
    std::fs::write(&spire_bootstrap, spire.bundle("pem").unwrap()).unwrap();
    mesh.issuer_cli(&[
        "federation",
        "create",
        "-trustDomain",
        SPIRE_TD,
        "-bundleEndpointURL",
        &spire.bundle_endpoint_url(),
        "-bundleEndpointProfile",
        "https_spiffe",
        "-endpointSpiffeID",
        &spire.server_id(),
        "-trustDomainBundlePath",
        &spire_bootstrap.display().to_string(),
        "-trustDomainBundleFormat",
        "pem",
    ])
    .unwrap();
    // SPIRE federates with the mesh: the issuer's endpoint, its ID
    // spiffe://<td>/spire/server, the mesh's CAs (`meshward issuer bundle show`)
    let mesh_bootstrap = dir.join("mesh-bootstrap.pem");
    std::fs::write(
        &mesh_bootstrap,
        mesh.issuer_cli(&["bundle", "show"]).unwrap(),
    )
    .unwrap();
    spire
        .server_cli(&[
            "federation",
            "create",
            "-trustDomain",
            TD,
            "-bundleEndpointURL",
            &mesh.bundle_endpoint_url(TD).unwrap(),
            "-bundleEndpointProfile",
            "https_spiffe",
            "-endpointSpiffeID",
            &format!("spiffe://{TD}/spire/server"),
            "-trustDomainBundlePath",
            &mesh_bootstrap.display().to_string(),
            "-trustDomainBundleFormat",
            "pem",
        ])
        .unwrap();
    // each holds the other's bundle as the other serves it: JWT keys included,
    // which only the endpoints carry
    within(30, "the mesh fetched SPIRE's bundle", mesh, spire, || {
        let held = mesh_view_of_spire(mesh)?;
        same_authorities(&held, &spire_bundle(spire))?;
        (!held.jwt_keys.is_empty())
            .then_some(())
            .ok_or_else(|| "no JWT keys yet".to_owned())
    });
    within(60, "SPIRE fetched the mesh's bundle", mesh, spire, || {
        let held = spire_view_of_mesh(spire)?;
        same_authorities(&held, &mesh_bundle(mesh))?;
        (!held.jwt_keys.is_empty())
            .then_some(())
            .ok_or_else(|| "no JWT keys yet".to_owned())
    });
}

/// RequestAuthentication of SPIRE's JWT-SVIDs for audience `echoserver` on the
/// echoserver, and an AuthorizationPolicy allowing the SPIRE workload's request
/// principal only.
fn require_spire_reporter(mesh: &Mesh) {
    let apply = |name: &str, kind: &str, spec: &str| {
        mesh.apply_policy(
            name,
            &format!(
                "apiVersion: security.istio.io/v1\nkind: {kind}\nmetadata: {{name: {name}, namespace: echoserver}}\nspec:\n  selector: {{matchLabels: {{app: echoserver}}}}\n{spec}"
            ),
        )
        .unwrap();
    };
    apply(
        "spire-jwt",
        "RequestAuthentication",
        &format!("  jwtRules:\n  - issuer: spiffe://{SPIRE_TD}\n    audiences: [echoserver]\n"),
    );
    // Istio's request principal: iss/sub (SPIRE sets no iss: the trust domain's)
    apply(
        "spire-reporter",
        "AuthorizationPolicy",
        &format!(
            "  rules:\n  - from:\n    - source:\n        requestPrincipals: [\"spiffe://{SPIRE_TD}/{WORKLOAD_ID}\"]\n"
        ),
    );
}

/// What these tests need: root and namespaces, SPIRE's binaries, py-spiffe;
/// `None` after saying which is missing (a failure in CI).
fn prerequisites(test: &str) -> Option<SpireBinaries> {
    available_or_skip(test)?;
    let binaries = peers::or_skip(test, "real SPIRE", SpireBinaries::find())?;
    let py_spiffe = python_has_spiffe()
        .then_some(())
        .ok_or("py-spiffe is not installed (pip install spiffe)");
    peers::or_skip(test, "py-spiffe", py_spiffe)?;
    Some(binaries)
}

#[test]
fn spire_federates_with_the_mesh_both_ways_and_its_workloads_are_authenticated() {
    const NAME: &str =
        "spire_federates_with_the_mesh_both_ways_and_its_workloads_are_authenticated";
    let Some(binaries) = prerequisites(NAME) else {
        return;
    };
    let started = Instant::now();
    // three-minute CAs: the mesh's next CA is published at 90 s and signs from 150 s
    let (mut mesh, _echo) = echo_mesh(|spec| {
        spec.pod(
            "node-1",
            PodSpec::new("verifier")
                .namespace("verifier")
                .service_account("verifier"),
            true,
        )
        .issuer_yaml(
            "ca_ttl: 3m\ndefault_x509_svid_ttl: 30s\ndefault_jwt_svid_ttl: 30s\nagent_svid_ttl: 30s\njoin_token_ttl: 60s\n",
        )
        .bundle_refresh_hint(2)
        .svid_ttl(30)
        .proxy_yaml("inbound:\n  plaintext: PERMISSIVE\n")
        .exclude_ports(&[VERIFIER_PORT]);
    });
    let first_mesh_bundle = mesh_bundle(&mesh);
    let spire = start_spire(&mut mesh, binaries, |_| {});
    eprintln!(
        "mesh and SPIRE up in {:.1?} (SPIRE {:.1?})",
        started.elapsed(),
        spire.started_in
    );
    let dir = mesh.cluster.log_dir().to_owned();

    federate_both_ways(&mesh, &spire);

    // --- registrations: who receives the other side's bundle ---
    spire.register(WORKLOAD_ID, WORKLOAD_UID, &[TD]).unwrap();
    spire.register(LOCAL_ID, LOCAL_UID, &[]).unwrap();
    mesh.federate_pod("echoserver", &[SPIRE_TD]).unwrap();
    mesh.federate_pod("verifier", &[SPIRE_TD]).unwrap();

    // --- the SPIRE workload's Workload API gives it the mesh's bundle ---
    let svid = within(
        60,
        "spire-agent hands out the mesh's bundle",
        &mesh,
        &spire,
        || {
            let fetch = spire.fetch_x509(WORKLOAD_UID).map_err(|e| e.to_string())?;
            let held = federated_mesh(&fetch).ok_or("no bundle of the mesh")?;
            if certs(held) != x509_set(&mesh_bundle(&mesh)) {
                return Err("not the mesh's CAs".into());
            }
            Ok(fetch)
        },
    );
    assert_eq!(svid.spiffe_id, WORKLOAD_ID);
    let jwt = spire.fetch_jwt(WORKLOAD_UID, "echoserver").unwrap();
    assert_eq!(jwt.spiffe_id, WORKLOAD_ID);
    let jwks = jwt
        .bundles
        .get(&format!("spiffe://{TD}"))
        .unwrap_or_else(|| panic!("no JWT bundle of the mesh: {:?}", jwt.bundles.keys()));
    assert_eq!(jwks_set(jwks), jwt_set(&mesh_bundle(&mesh)));
    // an entry without -federatesWith: SPIRE's own bundle only
    let local = spire.fetch_x509(LOCAL_UID).unwrap();
    assert_eq!(local.spiffe_id, LOCAL_ID);
    assert!(
        federated_mesh(&local).is_none(),
        "{:?}",
        local.federated.keys()
    );

    // --- its JWT-SVID through RequestAuthentication and requestPrincipals ---
    require_spire_reporter(&mesh);
    let r = within(30, "SPIRE's JWT-SVID is accepted", &mesh, &spire, || {
        let r = call_echo(&mesh, Some(&jwt.token));
        expect(&r, 200, None).map(|()| r)
    });
    let received = &r.json().unwrap()["request"]["headers"];
    assert!(received.get("authorization").is_none(), "{received}");
    // no token: no request principal, so the policy does not match
    expect(&call_echo(&mesh, None), 403, Some("RBAC: access denied")).unwrap();
    // another SPIRE workload's valid token: authenticated, but not the principal
    let local_jwt = spire.fetch_jwt(LOCAL_UID, "echoserver").unwrap();
    expect(
        &call_echo(&mesh, Some(&local_jwt.token)),
        403,
        Some("RBAC: access denied"),
    )
    .unwrap();
    // another audience
    let other = spire.fetch_jwt(WORKLOAD_UID, "billing").unwrap();
    expect(
        &call_echo(&mesh, Some(&other.token)),
        401,
        Some("Audiences in Jwt are not allowed"),
    )
    .unwrap();
    // the echoserver's entry no longer federates with SPIRE: its node holds no
    // keys of spire.test for it, and the same token is refused
    mesh.federate_pod("echoserver", &[]).unwrap();
    within(
        30,
        "the token refused without federation",
        &mesh,
        &spire,
        || expect(&call_echo(&mesh, Some(&jwt.token)), 401, None),
    );
    mesh.federate_pod("echoserver", &[SPIRE_TD]).unwrap();
    within(30, "accepted again with federation", &mesh, &spire, || {
        expect(&call_echo(&mesh, Some(&jwt.token)), 200, None)
    });

    // --- py-spiffe in a meshward pod validates the SPIRE workload's X509-SVID ---
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/py/spiffe_mtls_server.py");
    let socket = mesh.workload_api_socket("node-1").display().to_string();
    let port = VERIFIER_PORT.to_string();
    let _verifier = mesh
        .cluster
        .spawn_in_pod("verifier", "python3", &[script, &socket, &port, SPIRE_TD])
        .unwrap();
    let verifier_ip = mesh.pod_ip("verifier").unwrap();
    let verifier_ns = mesh.cluster.pod("verifier").unwrap().netns();
    wait_for_port(
        verifier_ns,
        SocketAddr::new(verifier_ip, VERIFIER_PORT),
        Duration::from_secs(20),
    )
    .unwrap();
    let verified = |svid: &X509Fetch| -> Result<serde_json::Value, String> {
        let trust = federated_mesh(svid).ok_or("no bundle of the mesh")?;
        let r = call_verifier(&mesh, &svid.dir, trust);
        expect(&r, 200, None)?;
        r.json().ok_or_else(|| r.body.clone())
    };
    let answer = within(
        60,
        "py-spiffe accepts the SPIRE workload",
        &mesh,
        &spire,
        || {
            // fresh: the pod's SVID may have come from a CA SPIRE learnt since
            verified(&spire.fetch_x509(WORKLOAD_UID).map_err(|e| e.to_string())?)
        },
    );
    assert_eq!(answer["caller"], WORKLOAD_ID);
    assert_eq!(
        answer["server"],
        mesh.pod_spiffe_id("verifier").unwrap().as_str()
    );
    assert_eq!(answer["bundles"], serde_json::json!([TD, SPIRE_TD]));
    // py-spiffe in the same pod has its Workload API validate the SPIRE
    // workload's JWT-SVID with the federated keys; the audience must be the pod's
    let validated = within(
        30,
        "the JWT-SVID validated in the pod",
        &mesh,
        &spire,
        || validate_in_pod(&mesh, "verifier", "echoserver", &jwt.token),
    );
    assert_eq!(validated, WORKLOAD_ID);
    let refused = validate_in_pod(&mesh, "verifier", "billing", &jwt.token).unwrap_err();
    assert!(
        refused.contains("Audiences in Jwt are not allowed"),
        "{refused}"
    );
    // a chain no bundle vouches for, naming the same ID: refused in the handshake
    let forged = dir.join("forged");
    forged_svid(&forged);
    let trust = federated_mesh(&svid).unwrap().clone();
    let r = call_verifier(&mesh, &forged, &trust);
    assert!(r.status.is_none(), "a forged chain was accepted: {r:?}");
    // the verifier's entry no longer federates: py-spiffe has no bundle of
    // spire.test, and the real SVID is refused too
    mesh.federate_pod("verifier", &[]).unwrap();
    within(30, "refused without federation", &mesh, &spire, || {
        let fetch = spire.fetch_x509(WORKLOAD_UID).map_err(|e| e.to_string())?;
        match verified(&fetch) {
            Ok(v) => Err(format!("still accepted: {v}")),
            Err(_) => Ok(()),
        }
    });
    mesh.federate_pod("verifier", &[SPIRE_TD]).unwrap();
    within(30, "accepted again with federation", &mesh, &spire, || {
        verified(&spire.fetch_x509(WORKLOAD_UID).map_err(|e| e.to_string())?)
    });

    // --- SPIRE's X.509 authority rotates; the mesh follows ---
    let old_x509 = spire.fetch_x509(WORKLOAD_UID).unwrap();
    let old_ca = authority(&spire, "x509", "Active");
    spire
        .server_cli(&["localauthority", "x509", "prepare"])
        .unwrap();
    let new_ca = authority(&spire, "x509", "Prepared");
    within(
        30,
        "the mesh holds SPIRE's prepared CA",
        &mesh,
        &spire,
        || {
            let held = mesh_view_of_spire(&mesh)?;
            same_authorities(&held, &spire_bundle(&spire))?;
            (held.x509_authorities.len() == 2)
                .then_some(())
                .ok_or_else(|| format!("{} CAs", held.x509_authorities.len()))
        },
    );
    spire
        .server_cli(&[
            "localauthority",
            "x509",
            "activate",
            "-authorityID",
            &new_ca,
        ])
        .unwrap();
    spire
        .server_cli(&["localauthority", "x509", "taint", "-authorityID", &old_ca])
        .unwrap();
    // the agent replaces SVIDs of the tainted CA; the new one is accepted
    let new_x509 = within(60, "an SVID of SPIRE's new CA", &mesh, &spire, || {
        let fetch = spire.fetch_x509(WORKLOAD_UID).map_err(|e| e.to_string())?;
        if certs(&fetch.chain_pem) == certs(&old_x509.chain_pem) {
            return Err("the old SVID still".into());
        }
        verified(&fetch).map(|_| fetch)
    });
    spire
        .server_cli(&["localauthority", "x509", "revoke", "-authorityID", &old_ca])
        .unwrap();
    within(
        30,
        "the mesh dropped SPIRE's revoked CA",
        &mesh,
        &spire,
        || {
            let held = mesh_view_of_spire(&mesh)?;
            same_authorities(&held, &spire_bundle(&spire))?;
            (held.x509_authorities.len() == 1)
                .then_some(())
                .ok_or_else(|| format!("{} CAs", held.x509_authorities.len()))
        },
    );
    within(
        30,
        "the old CA's SVID refused",
        &mesh,
        &spire,
        || match verified(&old_x509) {
            Ok(v) => Err(format!("still accepted: {v}")),
            Err(_) => Ok(()),
        },
    );
    verified(&new_x509).unwrap();

    // --- SPIRE's JWT authority rotates; the mesh follows ---
    let old_key = authority(&spire, "jwt", "Active");
    assert_eq!(kid(&jwt.token), old_key);
    spire
        .server_cli(&["localauthority", "jwt", "prepare"])
        .unwrap();
    let new_key = authority(&spire, "jwt", "Prepared");
    within(
        30,
        "the mesh holds SPIRE's prepared JWT key",
        &mesh,
        &spire,
        || {
            let held = mesh_view_of_spire(&mesh)?;
            kids(&held)
                .contains(&new_key)
                .then_some(())
                .ok_or_else(|| format!("kids {:?}", kids(&held)))
        },
    );
    spire
        .server_cli(&[
            "localauthority",
            "jwt",
            "activate",
            "-authorityID",
            &new_key,
        ])
        .unwrap();
    spire
        .server_cli(&["localauthority", "jwt", "taint", "-authorityID", &old_key])
        .unwrap();
    let new_jwt = within(60, "a JWT-SVID of SPIRE's new key", &mesh, &spire, || {
        let fetched = spire
            .fetch_jwt(WORKLOAD_UID, "echoserver")
            .map_err(|e| e.to_string())?;
        (kid(&fetched.token) == new_key)
            .then_some(fetched)
            .ok_or_else(|| "signed by the old key still".to_owned())
    });
    within(30, "the new key's token accepted", &mesh, &spire, || {
        expect(&call_echo(&mesh, Some(&new_jwt.token)), 200, None)
    });
    spire
        .server_cli(&["localauthority", "jwt", "revoke", "-authorityID", &old_key])
        .unwrap();
    // (Envoy's words for a kid the keys no longer hold)
    within(30, "the revoked key's token refused", &mesh, &spire, || {
        expect(
            &call_echo(&mesh, Some(&jwt.token)),
            401,
            Some("Jwks doesn't have key to match kid or alg from Jwt"),
        )
    });
    expect(&call_echo(&mesh, Some(&new_jwt.token)), 200, None).unwrap();

    // --- the mesh's CA rotates; SPIRE's workload receives the new CA and key ---
    let rotated = within(150, "the mesh published its next CA", &mesh, &spire, || {
        let now = mesh_bundle(&mesh);
        (x509_set(&now) != x509_set(&first_mesh_bundle))
            .then_some(now)
            .ok_or_else(|| "the first CA alone".to_owned())
    });
    assert!(rotated.x509_authorities.len() >= 2);
    within(
        90,
        "spire-agent hands out the mesh's new CA",
        &mesh,
        &spire,
        || {
            let now = mesh_bundle(&mesh);
            let fetch = spire.fetch_x509(WORKLOAD_UID).map_err(|e| e.to_string())?;
            let held = federated_mesh(&fetch).ok_or("no bundle of the mesh")?;
            if certs(held) != x509_set(&now) {
                return Err(format!(
                    "{} CAs of the mesh, it has {}",
                    certs(held).len(),
                    now.x509_authorities.len()
                ));
            }
            let fetched = spire
                .fetch_jwt(WORKLOAD_UID, "echoserver")
                .map_err(|e| e.to_string())?;
            let jwks = fetched
                .bundles
                .get(&format!("spiffe://{TD}"))
                .ok_or("no JWT bundle of the mesh")?;
            let held = jwks_set(jwks);
            (held == jwt_set(&now))
                .then_some(())
                .ok_or_else(|| format!("keys {held:?}, the mesh has {:?}", kids(&now)))
        },
    );
    eprintln!("done in {:.1?}", started.elapsed());
}

/// An upstream CA for the mesh's issuer whose root is a P-384 key (PEM files
/// `upstream.pem`, `upstream.key` in `dir`): the bundle's authority is then not
/// a P-256 key.
fn p384_upstream(dir: &Path) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "upstream root (P-384)");
    let cert = params.self_signed(&key).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("upstream.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("upstream.key"), key.serialize_pem()).unwrap();
    format!(
        "upstream_ca:\n  cert_chain: {}\n  key: {}\n",
        dir.join("upstream.pem").display(),
        dir.join("upstream.key").display()
    )
}

/// Keys other than P-256 on both sides, as deployments have them: the mesh's
/// issuer under an upstream CA with a P-384 root, and SPIRE with RSA JWT keys
/// (what AWS's OIDC federation asks for) and a P-384 CA. Each side must still
/// read the other's bundle, and SPIRE's RS256 JWT-SVIDs must authenticate.
#[test]
fn keys_other_than_p256_cross_the_federation() {
    const NAME: &str = "keys_other_than_p256_cross_the_federation";
    let Some(binaries) = prerequisites(NAME) else {
        return;
    };
    let upstream = tempfile::tempdir().unwrap();
    let upstream_yaml = p384_upstream(upstream.path());
    let (mut mesh, _echo) = echo_mesh(|spec| {
        spec.issuer_yaml(&upstream_yaml)
            .bundle_refresh_hint(2)
            .proxy_yaml("inbound:\n  plaintext: PERMISSIVE\n");
    });
    let spire = start_spire(&mut mesh, binaries, |options| {
        options.ca_key_type = Some("ec-p384".into());
        options.jwt_key_type = Some("rsa-2048".into());
    });
    federate_both_ways(&mesh, &spire);
    spire.register(WORKLOAD_ID, WORKLOAD_UID, &[TD]).unwrap();
    mesh.federate_pod("echoserver", &[SPIRE_TD]).unwrap();
    require_spire_reporter(&mesh);
    let jwt = spire.fetch_jwt(WORKLOAD_UID, "echoserver").unwrap();
    within(
        30,
        "SPIRE's RS256 JWT-SVID is accepted",
        &mesh,
        &spire,
        || expect(&call_echo(&mesh, Some(&jwt.token)), 200, None),
    );
    // ... and by the Workload API's ValidateJWTSVID (py-spiffe in the pod)
    let validated = within(
        30,
        "the RS256 JWT-SVID validated in the pod",
        &mesh,
        &spire,
        || validate_in_pod(&mesh, "echoserver", "echoserver", &jwt.token),
    );
    assert_eq!(validated, WORKLOAD_ID);
    // and SPIRE's workload receives the mesh's P-384 root
    let svid = within(
        60,
        "spire-agent hands out the mesh's bundle",
        &mesh,
        &spire,
        || {
            let fetch = spire.fetch_x509(WORKLOAD_UID).map_err(|e| e.to_string())?;
            let held = federated_mesh(&fetch).ok_or("no bundle of the mesh")?;
            (certs(held) == x509_set(&mesh_bundle(&mesh)))
                .then_some(fetch)
                .ok_or_else(|| "not the mesh's CAs".to_owned())
        },
    );
    assert_eq!(
        certs(federated_mesh(&svid).unwrap()),
        certs(&std::fs::read_to_string(upstream.path().join("upstream.pem")).unwrap())
    );
}
