use meshward_policy::{DefaultMode, PathNormalization};

use super::*;

#[test]
fn empty_file_is_the_default_configuration() {
    assert_eq!(
        ProxyConfig::from_yaml("", "p.yaml").unwrap(),
        ProxyConfig::default()
    );
    let options = ProxyConfig::default().engine_options();
    assert_eq!(options.default_mode, DefaultMode::Deny);
    assert_eq!(options.root_namespace, "istio-system");
    assert_eq!(
        options.path_normalization,
        PathNormalization::DecodeAndMergeSlashes
    );
}

#[test]
fn full_authorization_section() {
    let yaml = "trust_domain: math.example.com\nauthorization:\n  default: allow-if-no-policy\n  root_namespace: mesh-root\n  trust_domain_aliases: [old.example.com]\n  path_normalization: MERGE_SLASHES\n  policy_paths: [/etc/meshward/policies]\n";
    let config = ProxyConfig::from_yaml(yaml, "p.yaml").unwrap();
    let options = config.engine_options();
    assert_eq!(options.trust_domain, "math.example.com");
    assert_eq!(options.trust_domain_aliases, ["old.example.com"]);
    assert_eq!(options.default_mode, DefaultMode::AllowIfNoPolicy);
    assert_eq!(options.root_namespace, "mesh-root");
    assert_eq!(options.path_normalization, PathNormalization::MergeSlashes);
    assert_eq!(
        config.authorization.policy_paths,
        [std::path::PathBuf::from("/etc/meshward/policies")]
    );
}

#[test]
fn errors_name_file_field_and_reason() {
    let cases = [
        (
            "authorization:\n  defualt: deny\n",
            "p.yaml: authorization.defualt: unknown field `defualt`",
        ),
        (
            "authorization:\n  default: permit\n",
            "p.yaml: authorization.default: unknown variant `permit`",
        ),
        (
            "trust_domain: Bad.TD\n",
            "p.yaml: trust_domain: invalid trust domain \"Bad.TD\": trust domain characters are limited",
        ),
        (
            "authorization:\n  root_namespace: Istio_System\n",
            "p.yaml: authorization.root_namespace: \"Istio_System\"",
        ),
        (
            "authorization:\n  trust_domain_aliases: [ok, \"no way\"]\n",
            "p.yaml: authorization.trust_domain_aliases[1]",
        ),
        ("authorization: [\n", "p.yaml: invalid YAML at line"),
        (
            "worker_threads: 0\n",
            "p.yaml: worker_threads: 0 is not between 1 and 1024",
        ),
        (
            "hbone:\n  key_exchange: [X25519, X448]\n",
            "p.yaml: hbone.key_exchange[1]: unknown variant `X448`",
        ),
        (
            "hbone:\n  key_exchange: []\n",
            "p.yaml: hbone.key_exchange: needs at least one group",
        ),
        (
            "hbone:\n  key_exchange: [X25519, X25519]\n",
            "p.yaml: hbone.key_exchange: X25519 is listed twice",
        ),
        (
            "extension_providers:\n- name: opa\n",
            "p.yaml: extension_providers[0].name: provider \"opa\": exactly one of envoyExtAuthzGrpc and envoyExtAuthzHttp",
        ),
        (
            "extension_providers:\n- name: opa\n  envoyExtAuthzGrpc: {service: opa, port: 9191, statusOnError: nope}\n",
            "p.yaml: extension_providers[0].envoyExtAuthzGrpc.statusOnError: \"nope\" is not an HTTP status",
        ),
        (
            "authorization:\n  jwks:\n    refresh_interval: 1s\n",
            "p.yaml: authorization.jwks.refresh_interval: must be at least 10s",
        ),
    ];
    for (yaml, want) in cases {
        let e = ProxyConfig::from_yaml(yaml, "p.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(want), "want {want:?}, got {e:?}");
    }
}

#[test]
fn unreadable_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("proxy.yaml");
    let e = ProxyConfig::from_file(&missing).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}: cannot read", missing.display())),
        "{e}"
    );
}

#[test]
fn agent_section() {
    let yaml = "trust_domain: math.example.com\nagent:\n  issuer_address: 10.0.0.2:8081\n  trust_bundle_path: /etc/bundle.pem\n  join_token: abc\n  workloads:\n    file: /etc/workloads.yaml\n  sync_interval: 2s\n";
    let config = ProxyConfig::from_yaml(yaml, "p.yaml").unwrap();
    assert!(config.agent.is_enabled());
    assert_eq!(
        config.agent.sync_interval,
        std::time::Duration::from_secs(2)
    );
    assert_eq!(config.readiness_listen.port(), 15021);
    assert_eq!(config.agent.issuer_address, ["10.0.0.2:8081"]);
    let replicas = "agent:\n  issuer_address: [10.0.0.2:8081, issuer-b.meshward:8081]\n";
    let config = ProxyConfig::from_yaml(replicas, "p.yaml").unwrap();
    assert_eq!(
        config.agent.issuer_address,
        ["10.0.0.2:8081", "issuer-b.meshward:8081"]
    );
    let cases = [
        (
            "agent:\n  join_token: a\n  join_token_file: /t\n",
            "p.yaml: agent: set only one of join_token, join_token_file, k8s_psat and aws_iid",
        ),
        (
            "agent:\n  workloads:\n    file: /a\n    kubernetes: {node_name: n}\n",
            "p.yaml: agent.workloads: set only one of file and kubernetes",
        ),
        (
            "agent:\n  issuer_address: nowhere\n",
            "p.yaml: agent.issuer_address: \"nowhere\" must be host:port",
        ),
        (
            "agent:\n  issuer_address: [a:8081, ':8081']\n",
            "p.yaml: agent.issuer_address[1]: \":8081\" must be host:port",
        ),
        (
            "agent:\n  issuer_address: []\n",
            "p.yaml: agent.issuer_address: needs at least one host:port",
        ),
        (
            "agent:\n  issuer_address: {a: b}\n",
            "p.yaml: agent.issuer_address: expected host:port or a list of host:port",
        ),
        (
            "agent:\n  k8s_psat: {}\n",
            "p.yaml: agent.k8s_psat: missing field `cluster`",
        ),
    ];
    for (yaml, want) in cases {
        let e = ProxyConfig::from_yaml(yaml, "p.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(want), "want {want:?}, got {e:?}");
    }
}

#[test]
fn data_path_sections() {
    let yaml = "inbound:\n  plaintext: PERMISSIVE\n  ports: {8080: http, 5432: tcp}\n  protocol_detection_timeout: 250ms\noutbound:\n  mesh_cidrs: [10.40.0.0/16, fd00::/64]\nlimits:\n  idle_timeout: 10m\n  max_streams_per_connection: 8\n";
    let config = ProxyConfig::from_yaml(yaml, "p.yaml").unwrap();
    assert_eq!(config.inbound.plaintext, PlaintextMode::Permissive);
    assert_eq!(config.inbound.ports[&8080], AppProtocol::Http);
    assert_eq!(config.inbound.ports[&5432], AppProtocol::Tcp);
    assert_eq!(
        config.inbound.protocol_detection_timeout,
        std::time::Duration::from_millis(250)
    );
    assert!(
        config.outbound.mesh_cidrs[0].contains(&"10.40.3.7".parse::<std::net::IpAddr>().unwrap())
    );
    assert_eq!(config.limits.idle_timeout.as_secs(), 600);
    assert_eq!(config.limits.max_streams_per_connection, 8);
    // untouched: defaults
    assert_eq!(config.limits.connect_timeout.as_secs(), 5);
    assert_eq!(
        ProxyConfig::default().inbound.plaintext,
        PlaintextMode::Strict
    );

    for (yaml, want) in [
        (
            "inbound:\n  plaintext: OPEN\n",
            "p.yaml: inbound.plaintext: unknown variant `OPEN`",
        ),
        (
            "inbound:\n  ports: {8080: grpc}\n",
            "p.yaml: inbound.ports.8080: unknown variant `grpc`",
        ),
        (
            "outbound:\n  mesh_cidrs: [10.0.0.0/33]\n",
            "p.yaml: outbound.mesh_cidrs[0]",
        ),
        (
            "limits:\n  idle_timeout: 0s\n",
            "p.yaml: limits.idle_timeout: must be more than 0s",
        ),
        (
            "limits:\n  max_connections: 0\n",
            "p.yaml: limits.max_connections: must be at least 1",
        ),
    ] {
        let e = ProxyConfig::from_yaml(yaml, "p.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(want), "want {want:?}, got {e:?}");
    }
}

#[test]
fn worker_threads_default_to_at_least_two() {
    let config = ProxyConfig::default();
    assert!(config.worker_threads() >= 2);
    let one = ProxyConfig::from_yaml("worker_threads: 1\n", "p.yaml").unwrap();
    assert_eq!(one.worker_threads(), 1);
}

#[test]
fn capture_on_exit() {
    assert_eq!(
        ProxyConfig::default().capture.on_exit,
        CaptureOnExit::Remove
    );
    let config = ProxyConfig::from_yaml("capture:\n  on_exit: keep\n", "p.yaml").unwrap();
    assert_eq!(config.capture.on_exit, CaptureOnExit::Keep);
    let e = ProxyConfig::from_yaml("capture:\n  on_exit: forget\n", "p.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("p.yaml: capture.on_exit: unknown variant `forget`"),
        "{e}"
    );
}
