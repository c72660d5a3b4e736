//! Federation between two real issuers: A keeps B's bundle fresh from B's bundle
//! endpoint, under both profiles, and authenticates that endpoint as the profile
//! says.

use meshward_spiffe::{Bundle, TrustDomain};

use super::*;

pub(super) const PARTNER: &str = "payments.example.org";

/// A's stored bundle of the partner, if any (`bundle list -format spiffe`).
pub(super) fn partner_bundle(issuer: &Issuer) -> Option<Bundle> {
    let id = format!("spiffe://{PARTNER}");
    let (code, out, _) = issuer.cli(&["bundle", "list", "-id", &id, "-format", "spiffe"]);
    let json: Vec<&str> = out.lines().filter(|l| !l.starts_with('*')).collect();
    let td = TrustDomain::parse(PARTNER).unwrap();
    (code == 0).then(|| Bundle::from_spiffe_json(&td, &json.join("\n")).ok())?
}

/// Polls `check` for at most 30 s; on failure, shows `issuer`'s log.
pub(super) async fn eventually<T>(
    issuer: &Issuer,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}\n{}",
            issuer.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The sum of an issuer's `name{...}` samples that carry `labels`.
fn metric(issuer: &Issuer, name: &str, labels: &[&str]) -> f64 {
    let (_, body) = http_get(issuer.health, "/metrics").unwrap();
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The partner's issuer, serving its bundle at an https_spiffe endpoint on
/// 127.0.0.1 (`extra`: more issuer.yaml lines, `endpoint`: more `bundle_endpoint`
/// lines); its directory, the issuer, and the endpoint's URL.
pub(super) fn partner_issuer(extra: &str, endpoint: &str) -> (tempfile::TempDir, Issuer, String) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let issuer = Issuer::with_extra(
        meshward(),
        PARTNER,
        dir.path(),
        &sqlite_url(dir.path()),
        &format!(
            "{extra}bundle_endpoint:\n  listen: 127.0.0.1:{port}\n  profile: https_spiffe\n{endpoint}"
        ),
    );
    (dir, issuer, format!("https://127.0.0.1:{port}"))
}

/// Issuer A, of `TD`, with the `issuer.yaml` lines `extra` writes for its
/// directory (bootstrap files go there).
fn local_issuer(extra: impl FnOnce(&Path) -> String) -> (tempfile::TempDir, Issuer) {
    let dir = tempfile::tempdir().unwrap();
    let extra = extra(dir.path());
    let issuer = Issuer::with_extra(meshward(), TD, dir.path(), &sqlite_url(dir.path()), &extra);
    (dir, issuer)
}

/// How many of the issuer's refreshes of the partner's bundle ended with `result`
/// (`ok` or `error`).
fn refreshes(issuer: &Issuer, result: &str) -> f64 {
    metric(
        issuer,
        "meshward_issuer_federation_refreshes_total",
        &[
            &format!("trust_domain=\"{PARTNER}\""),
            &format!("result=\"{result}\""),
        ],
    )
}

/// `issuer.yaml` lines federating with the partner.
fn federates_with(url: &str, profile: &str) -> String {
    format!(
        "federation:\n  federates_with:\n  - trust_domain: {PARTNER}\n    bundle_endpoint_url: {url}\n    bundle_endpoint_profile: {profile}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_spiffe_bundles_are_fetched_with_the_last_bundle_and_kept() {
    // B serves its bundle at an https_spiffe endpoint, hinting a 2 s refresh
    let (_dir_b, b, url) = partner_issuer("", "  refresh_hint: 2s\n");
    let spiffe = |endpoint_id: &str, dir: &Path| {
        // bootstrap: B's CA certificates only, as an operator copies them
        let bootstrap = dir.join("partner.pem");
        std::fs::write(&bootstrap, b.bundle_pem()).unwrap();
        format!(
            "{}    endpoint_spiffe_id: {endpoint_id}\n    trust_domain_bundle_path: {}\n    trust_domain_bundle_format: pem\n",
            federates_with(&url, "https_spiffe"),
            bootstrap.display()
        )
    };
    let (_dir_a, a) = local_issuer(|dir| spiffe(&format!("spiffe://{PARTNER}/spire/server"), dir));
    // the PEM bootstrap carries neither JWT keys nor a hint: the endpoint does
    let fetched = eventually(&a, "A fetched B's bundle", || {
        partner_bundle(&a).filter(|bundle| !bundle.jwt_keys.is_empty())
    })
    .await;
    let (_, served, _) = b.cli(&["bundle", "show", "-format", "spiffe"]);
    let served = Bundle::from_spiffe_json(&TrustDomain::parse(PARTNER).unwrap(), &served).unwrap();
    assert_eq!(fetched.x509_authorities, served.x509_authorities);
    assert_eq!(fetched.jwt_keys, served.jwt_keys);
    assert_eq!(fetched.refresh_hint, Duration::from_secs(2));
    // and again at the hint: a refresh every 2 s, each counted
    let td = format!("trust_domain=\"{PARTNER}\"");
    eventually(&a, "a second refresh", || {
        (refreshes(&a, "ok") >= 2.0).then_some(())
    })
    .await;
    assert!(
        metric(
            &a,
            "meshward_issuer_federation_last_success_timestamp_seconds",
            &[&td]
        ) > 0.0
    );

    // an endpoint that is not the configured SPIFFE ID is never believed
    let dir_c = tempfile::tempdir().unwrap();
    let c = Issuer::with_extra(
        meshward(),
        TD,
        dir_c.path(),
        &sqlite_url(dir_c.path()),
        &spiffe(&format!("spiffe://{PARTNER}/someone-else"), dir_c.path()),
    );
    eventually(&c, "C's fetch failed", || {
        (refreshes(&c, "error") >= 2.0).then_some(())
    })
    .await;
    assert_eq!(refreshes(&c, "ok"), 0.0);
    let kept = partner_bundle(&c).unwrap();
    assert!(
        kept.jwt_keys.is_empty(),
        "only the bootstrap bundle is kept"
    );
    assert_eq!(kept.x509_authorities, served.x509_authorities);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_web_bundles_are_fetched_with_the_configured_roots() {
    // B's endpoint has a Web PKI certificate for 127.0.0.1 from a private CA
    let dir_b = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::IpAddress([127, 0, 0, 1].into())];
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir_b.path().join("web.pem"), cert.pem()).unwrap();
    std::fs::write(dir_b.path().join("web.key"), key.serialize_pem()).unwrap();
    let port = free_port();
    let _b = Issuer::with_extra(
        meshward(),
        PARTNER,
        dir_b.path(),
        &sqlite_url(dir_b.path()),
        &format!(
            "bundle_endpoint:\n  listen: 127.0.0.1:{port}\n  refresh_hint: 2s\n  profile: https_web\n  cert_file: {0}/web.pem\n  key_file: {0}/web.key\n",
            dir_b.path().display()
        ),
    );
    let url = format!("https://127.0.0.1:{port}/");
    // A trusts that CA for https_web; no bootstrap bundle is needed
    let (_dir_a, a) = local_issuer(|_| {
        format!(
            "{}  https_web_ca_file: {}/web.pem\n",
            federates_with(&url, "https_web"),
            dir_b.path().display()
        )
    });
    let fetched = eventually(&a, "A fetched B's bundle", || partner_bundle(&a)).await;
    assert_eq!(
        (fetched.x509_authorities.len(), fetched.jwt_keys.len()),
        (1, 1)
    );
    // with only the system's roots, the private certificate is refused
    let dir_c = tempfile::tempdir().unwrap();
    let c = Issuer::with_extra(
        meshward(),
        TD,
        dir_c.path(),
        &sqlite_url(dir_c.path()),
        &federates_with(&url, "https_web"),
    );
    eventually(&c, "C's fetch failed", || {
        let failed = refreshes(&c, "error");
        (failed >= 1.0).then_some(())
    })
    .await;
    assert!(partner_bundle(&c).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relationships_are_managed_with_the_cli() {
    let (_dir_b, b, url) = partner_issuer("", "");
    let dir_a = tempfile::tempdir().unwrap();
    let a = Issuer::new(meshward(), TD, dir_a.path(), &sqlite_url(dir_a.path()));
    let bootstrap = dir_a.path().join("partner.pem");
    std::fs::write(&bootstrap, b.bundle_pem()).unwrap();
    let endpoint_id = format!("spiffe://{PARTNER}/spire/server");
    let create = |td: &str, with_bundle: bool| {
        let mut args = vec![
            "federation",
            "create",
            "-trustDomain",
            td,
            "-bundleEndpointURL",
            &url,
            "-bundleEndpointProfile",
            "https_spiffe",
            "-endpointSpiffeID",
            &endpoint_id,
        ];
        if with_bundle {
            args.extend(["-trustDomainBundlePath", bootstrap.to_str().unwrap()]);
        }
        a.cli(&args)
    };
    let (code, _, stderr) = create(PARTNER, true);
    assert_eq!(code, 0, "{stderr}");
    // once only; and https_spiffe cannot start without a bundle to check with
    let (code, _, stderr) = create(PARTNER, true);
    assert!(code != 0 && stderr.contains("already exists"), "{stderr}");
    let (code, _, stderr) = create("other.example", false);
    assert!(
        code != 0 && stderr.contains("trust_domain_bundle: https_spiffe"),
        "{stderr}"
    );
    let listed = a.cli_json(&["federation", "list"]);
    assert_eq!(
        listed["relationships"],
        serde_json::json!([{
            "trust_domain": PARTNER,
            "bundle_endpoint_url": url,
            "bundle_endpoint_profile": "https_spiffe",
            "endpoint_spiffe_id": endpoint_id,
            "managed_by": "",
        }])
    );
    // refresh: fetched now, the JWT keys (absent from the PEM bootstrap) included
    let (code, out, stderr) = a.cli(&["federation", "refresh", "-id", PARTNER]);
    assert_eq!(code, 0, "{stderr}");
    assert!(out.contains("refreshed"), "{out}");
    assert_eq!(partner_bundle(&a).unwrap().jwt_keys.len(), 1);
    // and kept fresh by the issuer itself, as a configured one is
    eventually(&a, "the issuer refreshes it", || {
        let ok = refreshes(&a, "ok");
        (ok >= 1.0).then_some(())
    })
    .await;
    // deleted: the relationship and the bundle are gone
    let (code, _, stderr) = a.cli(&["federation", "delete", "-id", PARTNER]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        a.cli_json(&["federation", "list"])["relationships"],
        serde_json::json!([])
    );
    assert!(partner_bundle(&a).is_none());
}

/// Polls A's partner bundle until `check` holds, at most until `deadline`.
async fn until(
    a: &Issuer,
    deadline: tokio::time::Instant,
    what: &str,
    check: impl Fn(&Bundle) -> bool,
) {
    loop {
        if partner_bundle(a).is_some_and(|bundle| check(&bundle)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// https_spiffe across a CA rotation in the partner: its new CA reaches us in a
/// refresh, and once its old CA is gone its endpoint, now signed by the new one,
/// is still believed (authenticated with the latest bundle, not the bootstrap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_ca_rotation_is_followed_across_refreshes() {
    // a one-minute CA: the next one is prepared at 30 s, active at 50 s, and the
    // first expires at 60 s
    let (_dir_b, b, url) = partner_issuer(
        "ca_ttl: 1m\ndefault_x509_svid_ttl: 20s\ndefault_jwt_svid_ttl: 20s\nagent_svid_ttl: 20s\njoin_token_ttl: 20s\n",
        "  refresh_hint: 2s\n",
    );
    let (_dir_a, a) = local_issuer(|dir| {
        let bootstrap = dir.join("partner.pem");
        std::fs::write(&bootstrap, b.bundle_pem()).unwrap();
        format!(
            "{}    endpoint_spiffe_id: spiffe://{PARTNER}/spire/server\n    trust_domain_bundle_path: {}\n    trust_domain_bundle_format: pem\n",
            federates_with(&url, "https_spiffe"),
            bootstrap.display()
        )
    });
    let first = partner_bundle(&a).unwrap().x509_authorities;
    assert_eq!(first.len(), 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    until(&a, deadline, "the partner's next CA arrived", |bundle| {
        bundle.x509_authorities.len() == 2 && bundle.x509_authorities.contains(&first[0])
    })
    .await;
    until(&a, deadline, "the partner's first CA is gone", |bundle| {
        !bundle.x509_authorities.is_empty() && !bundle.x509_authorities.contains(&first[0])
    })
    .await;
    // and the endpoint, signed by the new CA only, is still believed
    let before = refreshes(&a, "ok");
    eventually(&a, "refreshes after the rotation", || {
        (refreshes(&a, "ok") >= before + 2.0).then_some(())
    })
    .await;
}
