//! The SPIFFE Workload API as local processes use it.

use super::*;
use meshward_proxy::workload_proto::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use meshward_proxy::workload_proto::{
    JwtBundlesRequest, JwtsvidRequest, ValidateJwtsvidRequest, X509BundlesRequest, X509svidRequest,
};
use tonic::transport::Channel;

async fn client(socket: &Path) -> SpiffeWorkloadApiClient<Channel> {
    meshward_proxy::workload_api::client(socket).await.unwrap()
}

fn with_header<T>(message: T) -> tonic::Request<T> {
    meshward_proxy::workload_api::with_security_header(message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_gets_exactly_its_pods_identity() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = start_issuer(dir.path());
    let token = node_token(&issuer);
    curl_spire_entry(&issuer);
    // this test process is "the pod": it lives in the network namespace named here
    let mut me = pod("curl", "default", "curl-spire", "10.40.1.2", &[]);
    me.netns = Some(format!("/proc/{}/ns/net", std::process::id()).into());
    let workloads = dir.path().join("workloads.yaml");
    write_workloads(&workloads, vec![me.clone()]);
    let config = config(dir.path(), &issuer, &token);
    let mut handle = meshward_proxy::agent::start(&config).unwrap();
    wait_for(&mut handle, "the SVID", |s| !ids(s, "10.40.1.2").is_empty()).await;
    let (socket, server) = serve_workload_api(dir.path(), &handle).await;
    let mut api = client(&socket).await;

    // the security header is required
    let missing = api.fetch_x509svid(X509svidRequest {}).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::InvalidArgument);
    assert_eq!(missing.message(), "security header missing from request");

    let mut stream = api
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.svids.len(), 1);
    let svid = &first.svids[0];
    assert_eq!(
        svid.spiffe_id,
        format!("spiffe://{TD}/ns/default/sa/curl-spire")
    );
    let chain: Vec<rustls_pki_types::CertificateDer<'static>> =
        x509_parser::parse_x509_certificate(&svid.x509_svid)
            .map(|(rest, _)| {
                let leaf_len = svid.x509_svid.len() - rest.len();
                vec![svid.x509_svid[..leaf_len].to_vec().into()]
            })
            .unwrap();
    let (bundle_rest, _) = x509_parser::parse_x509_certificate(&svid.bundle).unwrap();
    assert!(bundle_rest.is_empty(), "one CA in the bundle, as DER");
    let roots = vec![rustls_pki_types::CertificateDer::from(svid.bundle.clone())];
    check_x509_svid(&chain, &roots, &svid.spiffe_id, SystemTime::now()).unwrap();
    let key = rcgen::KeyPair::try_from(svid.x509_svid_key.as_slice()).unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    assert_eq!(
        leaf.public_key().raw,
        rcgen::PublicKeyData::subject_public_key_info(&key).as_slice()
    );

    let bundles = api
        .fetch_x509_bundles(with_header(X509BundlesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        bundles.bundles.keys().collect::<Vec<_>>(),
        [&format!("spiffe://{TD}")]
    );

    // JWT-SVID: audience required; minted by the issuer, validated here
    let no_audience = api
        .fetch_jwtsvid(with_header(JwtsvidRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(no_audience.code(), tonic::Code::InvalidArgument);
    let jwt = api
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec!["payments".into()],
            spiffe_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(jwt.svids[0].spiffe_id, svid.spiffe_id);
    let validated = api
        .validate_jwtsvid(with_header(ValidateJwtsvidRequest {
            audience: "payments".into(),
            svid: jwt.svids[0].svid.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(validated.spiffe_id, svid.spiffe_id);
    let aud = &validated.claims.unwrap().fields["aud"];
    assert!(
        matches!(&aud.kind, Some(prost_types::value::Kind::ListValue(l)) if l.values.len() == 1),
        "{aud:?}"
    );
    let wrong = api
        .validate_jwtsvid(with_header(ValidateJwtsvidRequest {
            audience: "other".into(),
            svid: jwt.svids[0].svid.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::InvalidArgument);

    // the Rust `spiffe` crate (a client no one here wrote) sees the same
    let rust_client =
        spiffe::workload_api::WorkloadApiClient::connect_to(format!("unix:{}", socket.display()))
            .await
            .unwrap();
    let rust_svid = rust_client.fetch_x509_svid().await.unwrap();
    assert_eq!(rust_svid.spiffe_id().to_string(), svid.spiffe_id);
    let rust_bundles = rust_client.fetch_x509_bundles().await.unwrap();
    assert!(
        rust_bundles
            .get(&spiffe::TrustDomain::new(TD).unwrap())
            .is_some()
    );
    let rust_jwt = rust_client
        .fetch_jwt_svid(["payments"], None)
        .await
        .unwrap();
    assert_eq!(rust_jwt.spiffe_id().to_string(), svid.spiffe_id);
    let checked = rust_client
        .validate_jwt_token("payments", rust_jwt.token())
        .await
        .unwrap();
    assert_eq!(checked.spiffe_id().to_string(), svid.spiffe_id);

    // the pod leaves: the open stream ends with PermissionDenied, new calls too
    write_workloads(&workloads, vec![]);
    let ended = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .unwrap();
    assert_eq!(ended.unwrap_err().code(), tonic::Code::PermissionDenied);
    let denied = api
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .unwrap_err();
    assert_eq!(
        (denied.code(), denied.message()),
        (tonic::Code::PermissionDenied, "no identity issued")
    );
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_processes_get_identities_by_unix_selectors() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = start_issuer(dir.path());
    let token = node_token(&issuer);
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let exe = std::env::current_exe().unwrap();
    for (id, selectors) in [
        (
            "local/me",
            vec![
                format!("unix:uid:{uid}"),
                format!("unix:path:{}", exe.display()),
            ],
        ),
        ("local/someone-else", vec!["unix:uid:4242".to_owned()]),
    ] {
        let spiffe_id = format!("spiffe://{TD}/{id}");
        let node_id = format!("spiffe://{TD}/node/node-1");
        let mut args = vec![
            "entry",
            "create",
            "-spiffeID",
            &spiffe_id,
            "-parentID",
            &node_id,
        ];
        for s in &selectors {
            args.extend(["-selector", s.as_str()]);
        }
        issuer.cli_json(&args);
    }
    write_workloads(&dir.path().join("workloads.yaml"), vec![]);
    let config = config(dir.path(), &issuer, &token);
    let mut handle = meshward_proxy::agent::start(&config).unwrap();
    wait_for(&mut handle, "the local identity", |s| !s.local.is_empty()).await;
    let (socket, server) = serve_workload_api(dir.path(), &handle).await;
    let mut api = client(&socket).await;
    let mut stream = api
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let got: Vec<&str> = first.svids.iter().map(|s| s.spiffe_id.as_str()).collect();
    assert_eq!(
        got,
        [format!("spiffe://{TD}/local/me").as_str()],
        "only the entry whose every selector matches"
    );
    server.abort();
}

/// A partner trust domain's bundle (a CA and a JWT key, kid `k1`) as SPIFFE JSON,
/// and the JWT key's signer.
fn partner_bundle() -> (String, jsonwebtoken::EncodingKey) {
    use base64::Engine as _;
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&key).unwrap();
    let jwt = rcgen::KeyPair::generate().unwrap();
    let point = jwt.public_key_raw();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let bundle = meshward_spiffe::Bundle {
        x509_authorities: vec![ca.der().clone()],
        jwt_keys: vec![meshward_spiffe::JwtPublicKey::p256(
            "k1",
            b64(&point[1..33]),
            b64(&point[33..]),
        )],
        ..meshward_spiffe::Bundle::new(
            meshward_spiffe::TrustDomain::parse("partner.example").unwrap(),
        )
    };
    (
        bundle.to_spiffe_json(),
        jsonwebtoken::EncodingKey::from_ec_der(&jwt.serialize_der()),
    )
}

/// A JWT-SVID for `sub` and audience `me`, signed by `key` as kid `k1`.
fn jwt_svid(sub: &str, key: &jsonwebtoken::EncodingKey) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("k1".into());
    let exp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    jsonwebtoken::encode(
        &header,
        &serde_json::json!({"sub": sub, "aud": "me", "exp": exp}),
        key,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_bundles_go_only_to_workloads_that_federate() {
    const PARTNER: &str = "spiffe://partner.example";
    let dir = tempfile::tempdir().unwrap();
    let issuer = start_issuer(dir.path());
    let token = node_token(&issuer);
    let (json, partner_key) = partner_bundle();
    let path = dir.path().join("partner.json");
    std::fs::write(&path, json).unwrap();
    let path = path.to_str().unwrap();
    issuer.cli_json(&[
        "bundle", "set", "-id", PARTNER, "-path", path, "-format", "spiffe",
    ]);
    curl_spire_entry_with(&issuer, &["-federatesWith", PARTNER]);
    let mut me = pod("curl", "default", "curl-spire", "10.40.1.2", &[]);
    me.netns = Some(format!("/proc/{}/ns/net", std::process::id()).into());
    write_workloads(&dir.path().join("workloads.yaml"), vec![me]);
    let config = config(dir.path(), &issuer, &token);
    let mut handle = meshward_proxy::agent::start(&config).unwrap();
    wait_for(&mut handle, "the SVID", |s| !ids(s, "10.40.1.2").is_empty()).await;
    let (socket, server) = serve_workload_api(dir.path(), &handle).await;
    let mut api = client(&socket).await;

    // the entry federates with the partner: its bundle comes with the SVID and
    // with the bundles
    let mut svids = api
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = svids.message().await.unwrap().unwrap();
    assert_eq!(
        first.federated_bundles.keys().collect::<Vec<_>>(),
        [PARTNER],
        "{first:?}"
    );
    let bundles = api
        .fetch_x509_bundles(with_header(X509BundlesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    let mut domains: Vec<&String> = bundles.bundles.keys().collect();
    domains.sort();
    assert_eq!(domains, [&format!("spiffe://{TD}"), PARTNER]);
    let jwt_bundles = api
        .fetch_jwt_bundles(with_header(JwtBundlesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    assert!(jwt_bundles.bundles.contains_key(PARTNER), "{jwt_bundles:?}");
    // a partner's JWT-SVID validates; its key cannot vouch for our own IDs
    let validate = |token: String| {
        let mut api = api.clone();
        async move {
            api.validate_jwtsvid(with_header(ValidateJwtsvidRequest {
                audience: "me".into(),
                svid: token,
            }))
            .await
        }
    };
    let valid = validate(jwt_svid("spiffe://partner.example/ns/x/sa/y", &partner_key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(valid.spiffe_id, "spiffe://partner.example/ns/x/sa/y");
    let forged = validate(jwt_svid(
        &format!("spiffe://{TD}/ns/default/sa/admin"),
        &partner_key,
    ))
    .await
    .unwrap_err();
    // judged with the keys of its subject's domain (ours), which lack the partner's
    assert!(forged.message().contains("key to match kid"), "{forged}");

    // it no longer does: the stream sends the SVID again, without the bundle
    let shown = issuer.cli_json(&["entry", "show", "-selector", "k8s:sa:curl-spire"]);
    let entry = &shown["entries"][0];
    issuer.cli_json(&[
        "entry",
        "update",
        "-entryID",
        entry["id"].as_str().unwrap(),
        "-spiffeID",
        entry["spiffe_id"].as_str().unwrap(),
        "-parentID",
        entry["parent_id"].as_str().unwrap(),
        "-selector",
        "k8s:sa:curl-spire",
    ]);
    let next = tokio::time::timeout(Duration::from_secs(15), svids.message())
        .await
        .expect("an update within 15 s")
        .unwrap()
        .unwrap();
    assert!(next.federated_bundles.is_empty(), "{next:?}");
    let refused = validate(jwt_svid("spiffe://partner.example/ns/x/sa/y", &partner_key))
        .await
        .unwrap_err();
    assert!(refused.message().contains("not found"), "{refused}");
    server.abort();
}
