//! `aws_iid` end to end: one issuer with two node attestors. node-1 attests with
//! `k8s_psat` (its daemon pod's projected token from the real control plane's
//! TokenRequest API, reviewed by its TokenReview), node-2 with `aws_iid`: the document its own instance metadata
//! service serves (a test IMDS on 169.254.169.254:80, an address only node-2's
//! network namespace has), signed by a test key the issuer trusts as AWS's for
//! the region. Node alias entries select each node by its attestor's selectors
//! (`k8s_psat:cluster:`, `aws_iid:account:`); node-2's pod serves node-1's.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;

mod support;

use meshward_integration::{HarnessError, Netns, NodeAttestation, NodeSetup, available_or_skip};
use meshward_test_support::aws_iid::{Instance, Signer};
use meshward_test_support::imds::{self, Behaviour};
use meshward_test_support::{control_plane, k8s_psat};
use support::{TD, curl_spire, echo_mesh, eventually, example, status};

const ACCOUNT: &str = "123456789012";
const INSTANCE: &str = "i-0e2e0000000000001";
const IMDS: &str = "169.254.169.254";

/// node-2's instance metadata service: the link-local address on the node
/// namespace's loopback, a listener bound in that namespace, served by `runtime`.
fn imds_on_the_node(runtime: &tokio::runtime::Handle, behaviour: Behaviour) -> NodeSetup {
    let runtime = runtime.clone();
    NodeSetup(Arc::new(move |ns: &Netns| {
        ns.ip(&["addr", "add", &format!("{IMDS}/32"), "dev", "lo"])?;
        let listener = ns
            .run(|| std::net::TcpListener::bind((IMDS, 80)))?
            .map_err(|e| HarnessError::Invalid(format!("bind the test IMDS: {e}")))?;
        listener.set_nonblocking(true).unwrap();
        let _entered = runtime.enter();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        runtime.spawn(imds::serve(listener, behaviour.clone()));
        Ok(())
    }))
}

/// node-1 attests with `k8s_psat`: its daemon pod (ServiceAccount
/// meshward-system:meshward-node) bound to a node of `plane`, and that pod's
/// projected token (written in `dir`).
fn k8s_psat_node(plane: &control_plane::ControlPlane, dir: &std::path::Path) -> NodeAttestation {
    let pod = "meshward-node-aws-iid-test";
    k8s_psat::agent_pod(plane, pod).unwrap();
    let token = dir.join("node-1-token");
    let jwt = k8s_psat::projected_token(plane, pod, k8s_psat::AUDIENCE).unwrap();
    std::fs::write(&token, jwt).unwrap();
    NodeAttestation {
        agent_yaml: format!(
            "  k8s_psat: {{cluster: eks, token_path: {}}}\n",
            token.display()
        ),
        alias_id: format!("spiffe://{TD}/nodes/eks-cluster"),
        alias_selectors: vec!["k8s_psat:cluster:eks".into()],
        setup: None,
    }
}

#[test]
fn a_k8s_psat_node_and_an_aws_iid_node_serve_pods_side_by_side() {
    let test = "a_k8s_psat_node_and_an_aws_iid_node_serve_pods_side_by_side";
    let Some(()) = available_or_skip(test) else {
        return;
    };
    let Some(plane) = control_plane::shared(test) else {
        return;
    };
    let signer = Signer::new();
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("aws-certs.yaml");
    std::fs::write(&certs, signer.region_certificates(&["us-east-1"])).unwrap();
    let document = Instance::new(ACCOUNT, "us-east-1", INSTANCE).document();
    let rsa2048 = signer.sign(document.as_bytes());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let setup = imds_on_the_node(runtime.handle(), Behaviour::Serve { document, rsa2048 });
    let alias = format!("spiffe://{TD}/nodes/aws-account-{ACCOUNT}");
    let api_address: SocketAddr = plane.url().trim_start_matches("https://").parse().unwrap();
    let psat = k8s_psat_node(plane, dir.path());
    let psat_yaml = k8s_psat::issuer_yaml(plane, dir.path()).unwrap();

    let (mesh, _echo) = echo_mesh(|spec| {
        spec.issuer_yaml(&format!(
            "aws_iid:\n  account_ids: ['{ACCOUNT}']\n  region_certificates_file: {}\n{}",
            certs.display(),
            psat_yaml
        ));
        spec.issuer_reaches(api_address.port());
        spec.node_attestation("node-1", psat);
        spec.node_attestation(
            "node-2",
            NodeAttestation {
                agent_yaml: "  aws_iid: {}\n".into(),
                alias_id: alias.clone(),
                alias_selectors: vec![format!("aws_iid:account:{ACCOUNT}")],
                setup: Some(setup),
            },
        );
        spec.pod("node-1", curl_spire(), true);
    });

    let agents = mesh.issuer_cli(&["agent", "list"]).unwrap();
    let node_id = format!("spiffe://{TD}/spire/agent/aws_iid/{ACCOUNT}/us-east-1/{INSTANCE}");
    assert!(agents.contains(&node_id), "{agents}");
    let node_uid = k8s_psat::node_uid(plane).unwrap();
    let psat_id = format!("spiffe://{TD}/spire/agent/k8s_psat/eks/{node_uid}");
    assert!(agents.contains(&psat_id), "{agents}");

    // each pod holds the identity its node's alias entry grants: node-2's serves node-1's
    mesh.apply_policy("02-allow-curl-spire", &example("02-allow-curl-spire"))
        .unwrap();
    let url = format!("http://{}:8080/", mesh.pod_ip("echoserver").unwrap());
    let r = eventually(&mesh, "curl-spire -> echoserver", || {
        status(&mesh, "curl-spire", &[&url], 200)
    });
    let xfcc = r.json().unwrap()["request"]["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        xfcc.starts_with(&format!("By=spiffe://{TD}/ns/echoserver/sa/default;")),
        "{xfcc}"
    );
    assert!(
        xfcc.ends_with(&format!("URI=spiffe://{TD}/ns/default/sa/curl-spire")),
        "{xfcc}"
    );

    // the metadata service is node-2's alone: not in node-1's namespace, nor the root's
    let node_1 = mesh.cluster.node("node-1").unwrap().netns();
    assert!(!node_1.ip(&["-o", "addr"]).unwrap().contains(IMDS));
    let root = std::process::Command::new("ip")
        .args(["-o", "addr"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&root.stdout).contains(IMDS));
    let node_2 = mesh.cluster.node("node-2").unwrap().netns();
    assert!(node_2.ip(&["-o", "addr"]).unwrap().contains(IMDS));
}
