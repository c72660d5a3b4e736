use super::*;

fn td(name: &str) -> meshward_spiffe::TrustDomain {
    meshward_spiffe::TrustDomain::parse(name).unwrap()
}

fn pod() -> PodAttributes {
    PodAttributes {
        namespace: "default".into(),
        name: "curl-7d9".into(),
        uid: "uid-1".into(),
        service_account: "curl-spire".into(),
        node_name: "node-1".into(),
        labels: [("app".to_owned(), "curl".to_owned())].into(),
        namespace_labels: BTreeMap::new(),
    }
}

fn template(id: &str) -> IdentityTemplate {
    IdentityTemplate {
        name: "t".into(),
        spiffe_id_template: id.into(),
        pod_selector: BTreeMap::new(),
        namespace_selector: BTreeMap::new(),
        workload_selector_templates: vec!["k8s:ns:{{ .PodMeta.Namespace }}".into()],
        dns_name_templates: vec!["{{ .PodMeta.Name }}.{{ .PodMeta.Namespace }}.svc".into()],
        x509_svid_ttl: 0,
        jwt_svid_ttl: 0,
        federates_with: vec![],
        hint: String::new(),
        node_selectors: vec![],
    }
}

#[test]
fn both_syntaxes_render_the_same_id() {
    let long = template(
        "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}",
    );
    let short = template("spiffe://{{trust-domain}}/ns/{{namespace}}/sa/{{serviceaccount}}");
    let a = long.render(&td("math.example.com"), "eks", &pod()).unwrap();
    let b = short
        .render(&td("math.example.com"), "eks", &pod())
        .unwrap();
    assert_eq!(
        a.spiffe_id.as_str(),
        "spiffe://math.example.com/ns/default/sa/curl-spire"
    );
    assert_eq!(a, b);
    assert_eq!(
        a.selectors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["k8s:pod-uid:uid-1", "k8s:ns:default"]
    );
    assert_eq!(a.dns_names, ["curl-7d9.default.svc"]);
}

#[test]
fn labels_and_errors() {
    let t = template("spiffe://td/app/{{ index .PodMeta.Labels \"app\" }}/{{label:app}}");
    assert_eq!(
        t.render(&td("td"), "c", &pod()).unwrap().spiffe_id.as_str(),
        "spiffe://td/app/curl/curl"
    );
    let missing = template("spiffe://td/{{ label:tier }}");
    assert!(
        missing
            .render(&td("td"), "c", &pod())
            .unwrap_err()
            .contains("no label \"tier\"")
    );
    assert!(
        template("spiffe://td/{{ .Nope }}")
            .render(&td("td"), "c", &pod())
            .unwrap_err()
            .contains("unknown template expression")
    );
    assert!(
        template("spiffe://other/x")
            .render(&td("td"), "c", &pod())
            .unwrap_err()
            .contains("not in trust domain")
    );
    assert!(
        template("spiffe://td/{{ namespace")
            .validate(&td("td"))
            .is_err()
    );
}

#[test]
fn selection_by_pod_and_namespace_labels() {
    let mut t = template("spiffe://td/x");
    assert!(t.selects(&pod()));
    t.pod_selector.insert("app".into(), "curl".into());
    t.namespace_selector
        .insert(NAMESPACE_NAME_LABEL.into(), "default".into());
    assert!(t.selects(&pod()));
    t.namespace_selector
        .insert(NAMESPACE_NAME_LABEL.into(), "other".into());
    assert!(!t.selects(&pod()));
}

#[test]
fn cluster_spiffe_id_yaml() {
    let yaml = "apiVersion: spire.spiffe.io/v1alpha1\nkind: ClusterSPIFFEID\nmetadata:\n  name: default\nspec:\n  spiffeIDTemplate: \"spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}\"\n  podSelector:\n    matchLabels:\n      spiffe: enabled\n  ttl: 30m\n";
    let t = from_cluster_spiffe_id_yaml(yaml).unwrap();
    assert_eq!(t[0].name, "default");
    assert_eq!(t[0].x509_svid_ttl, 1800);
    assert_eq!(t[0].pod_selector["spiffe"], "enabled");
    let bad = yaml.replace(
        "matchLabels:\n      spiffe: enabled",
        "matchExpressions: [{key: a, operator: Exists}]",
    );
    assert!(
        from_cluster_spiffe_id_yaml(&bad)
            .unwrap_err()
            .contains("matchExpressions is not supported")
    );
    let typo = yaml.replace("podSelector", "podSelectr");
    assert!(
        from_cluster_spiffe_id_yaml(&typo)
            .unwrap_err()
            .contains("podSelectr")
    );
}

/// The CRD in docker/k8s/base/crds.yaml admits the every-field fixture and refuses
/// the invalid ones (the real API server: test-support/tests/control_plane.rs); the
/// issuer agrees.
#[test]
fn the_crd_fixtures_read_as_the_crd_admits_them() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/k8s/tests");
    let read = |name: &str| std::fs::read_to_string(fixtures.join(name)).unwrap();
    let all =
        from_cluster_spiffe_id_yaml(&read("valid/cluster-spiffe-id-every-field.yaml")).unwrap();
    let t = &all[0];
    t.validate(&td("math.example.com")).unwrap();
    assert_eq!((t.x509_svid_ttl, t.jwt_svid_ttl), (1800, 300));
    assert_eq!(t.namespace_selector["mesh"], "on");
    assert_eq!(
        (
            t.federates_with.len(),
            t.workload_selector_templates.len(),
            t.dns_name_templates.len()
        ),
        (1, 1, 1)
    );
    assert_eq!(t.hint, "payments");
    assert_eq!(
        t.node_selectors[0].to_string(),
        "aws_iid:account:123456789012"
    );
    assert!(t.selects_node(&["aws_iid:account:123456789012".parse().unwrap()]));
    assert!(!t.selects_node(&["k8s_psat:cluster:eks".parse().unwrap()]));
    for invalid in ["csid-without-template.yaml", "csid-misspelt-selector.yaml"] {
        let text = read(&format!("invalid/{invalid}"));
        assert!(from_cluster_spiffe_id_yaml(&text).is_err(), "{invalid}");
    }
}
