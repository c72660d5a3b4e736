//! A small Kubernetes API server for tests, since no cluster runs here: HTTPS with
//! its own CA, bearer-token authentication, `TokenReview` that really verifies the
//! signed service-account tokens it issues (signature, expiry, audience), `GET`
//! of the pods and nodes it was given; list + watch of pods, AuthorizationPolicy,
//! ClusterSPIFFEID, Service and EndpointSlice objects.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

mod events;
mod routes;
use events::{EventLog, Topic};

/// A pod as the fake API knows it.
#[derive(Debug, Clone, Default)]
pub struct FakePod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node_name: String,
    pub service_account: String,
    /// `status.podIP`; empty = not yet assigned.
    pub ip: String,
    pub image: String,
    pub labels: std::collections::BTreeMap<String, String>,
}

impl FakePod {
    fn to_json(&self, resource_version: u64) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid,
                         "labels": self.labels, "resourceVersion": resource_version.to_string()},
            "spec": {"nodeName": self.node_name, "serviceAccountName": self.service_account,
                     "containers": [{"name": "main", "image": self.image}]},
            "status": if self.ip.is_empty() { json!({"phase": "Pending"}) } else { json!({"phase": "Running", "podIP": self.ip}) },
        })
    }
}

#[derive(Default)]
struct State {
    pods: HashMap<(String, String), FakePod>,
    /// node name -> (uid, internal IP)
    nodes: HashMap<String, (String, String)>,
    /// Bumped on every change (the watch's resourceVersion).
    version: u64,
    /// Custom objects by (plural, namespace, name).
    objects: std::collections::BTreeMap<(String, String, String), Value>,
    /// Open watches and the recent events they may replay.
    events: EventLog,
}

impl State {
    /// Tells every open watch of `plural` about an event.
    fn notify_object(&mut self, plural: &str, kind: &str, object: &Value) {
        self.version += 1;
        let mut object = object.clone();
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
        let topic = Topic::Object {
            plural: plural.to_owned(),
        };
        self.publish(topic, json!({"type": kind, "object": object}));
    }

    /// Tells every open watch (whose node filter matches) about a pod event.
    fn notify(&mut self, kind: &str, pod: &FakePod) {
        self.version += 1;
        let topic = Topic::Pod {
            node: pod.node_name.clone(),
        };
        let event = json!({"type": kind, "object": pod.to_json(self.version)});
        self.publish(topic, event);
    }

    /// Adds or replaces an object; open watches see ADDED or MODIFIED.
    fn apply_object(&mut self, plural: &str, object: Value) {
        let key = (
            plural.to_owned(),
            object["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
        let event = if self.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.objects.insert(key, object.clone());
        self.notify_object(plural, event, &object);
    }

    fn publish(&mut self, topic: Topic, event: Value) {
        self.events.publish(self.version, topic, &event);
    }
}

pub struct FakeKubeApi {
    address: SocketAddr,
    ca_file: PathBuf,
    token_file: PathBuf,
    signing_key: jsonwebtoken::EncodingKey,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

const ISSUER_TOKEN: &str = "issuer-sa-token";
const POLICIES: &str = "authorizationpolicies";
const REQUEST_AUTHENTICATIONS: &str = "requestauthentications";
const CLUSTER_SPIFFE_IDS: &str = "clusterspiffeids";
const CLUSTER_FEDERATED_TRUST_DOMAINS: &str = "clusterfederatedtrustdomains";
const SERVICES: &str = "services";
const ENDPOINT_SLICES: &str = "endpointslices";
const CONFIG_MAPS: &str = "configmaps";

impl FakeKubeApi {
    /// Starts the server on loopback; writes its CA and the issuer's API token into `dir`.
    pub async fn start(dir: &Path) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca_params = rcgen::CertificateParams::default();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "fake kubernetes CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA");
        let issuer = rcgen::Issuer::from_ca_cert_der(ca_cert.der(), ca_key).expect("issuer");
        let server_key = rcgen::KeyPair::generate().expect("key");
        let mut server_params =
            rcgen::CertificateParams::new(vec!["kubernetes.default.svc".to_owned()])
                .expect("params");
        server_params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .expect("server cert");

        let ca_file = dir.join("kube-ca.pem");
        let token_file = dir.join("kube-token");
        std::fs::write(&ca_file, ca_cert.pem()).expect("write CA");
        std::fs::write(&token_file, ISSUER_TOKEN).expect("write token");

        let sa_key = rcgen::KeyPair::generate().expect("SA key");
        let signing_key = jsonwebtoken::EncodingKey::from_ec_der(&sa_key.serialize_der());
        let public_point = rcgen::PublicKeyData::der_bytes(&sa_key).to_vec();
        let decoding_key = jsonwebtoken::DecodingKey::from_ec_der(&public_point);

        let tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![server_cert.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
            )
            .expect("TLS config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let state = Arc::new(Mutex::new(State::default()));
        let (task_state, key) = (state.clone(), Arc::new(decoding_key));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, state, key) = (acceptor.clone(), task_state.clone(), key.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = service_fn(move |req| {
                        let (state, key) = (state.clone(), key.clone());
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                routes::handle(req, &state, &key).await,
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            address,
            ca_file,
            token_file,
            signing_key,
            state,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.address)
    }

    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The token the issuer authenticates with.
    pub fn token_file(&self) -> &Path {
        &self.token_file
    }

    /// How a configuration reaches this API, as a YAML flow mapping:
    /// `{api_server: ..., api_ca_path: ..., api_token_path: ...}`.
    pub fn connection_yaml(&self) -> String {
        format!(
            "{{api_server: \"{}\", api_ca_path: \"{}\", api_token_path: \"{}\"}}",
            self.url(),
            self.ca_file.display(),
            self.token_file.display()
        )
    }

    /// An issuer.yaml `k8s_psat` section for cluster `eks` on this API, allowing
    /// the service account `meshward:meshward-node`.
    pub fn issuer_psat_yaml(&self) -> String {
        format!(
            "k8s_psat:\n  clusters:\n  - name: eks\n    api_server: {}\n    api_ca_path: {}\n    api_token_path: {}\n    service_account_allow_list: [\"meshward:meshward-node\"]\n",
            self.url(),
            self.ca_file.display(),
            self.token_file.display()
        )
    }

    pub fn add_node(&self, name: &str, uid: &str, internal_ip: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.nodes
                .insert(name.to_owned(), (uid.to_owned(), internal_ip.to_owned()));
        }
    }

    /// Adds node `node` (UID `node_uid`, InternalIP 10.0.1.23) and on it the node
    /// daemon's pod `pod_name` (UID `pod_uid`, service account meshward:meshward-node,
    /// the one `issuer_psat_yaml` allows); returns the pod, for tokens.
    pub fn add_agent_pod(
        &self,
        node: &str,
        node_uid: &str,
        pod_name: &str,
        pod_uid: &str,
    ) -> FakePod {
        self.add_node(node, node_uid, "10.0.1.23");
        let pod = FakePod {
            namespace: "meshward".into(),
            name: pod_name.into(),
            uid: pod_uid.into(),
            node_name: node.into(),
            service_account: "meshward-node".into(),
            ..Default::default()
        };
        self.add_pod(pod.clone());
        pod
    }

    /// Adds or replaces a pod; open watches see ADDED or MODIFIED.
    pub fn add_pod(&self, pod: FakePod) {
        if let Ok(mut s) = self.state.lock() {
            let key = (pod.namespace.clone(), pod.name.clone());
            let kind = if s.pods.contains_key(&key) {
                "MODIFIED"
            } else {
                "ADDED"
            };
            s.notify(kind, &pod);
            s.pods.insert(key, pod);
        }
    }

    /// Adds or replaces an AuthorizationPolicy object (a JSON value with metadata
    /// and spec); open watches see ADDED or MODIFIED.
    pub fn apply_authorization_policy(&self, object: Value) {
        self.apply_object(
            POLICIES,
            "security.istio.io/v1",
            "AuthorizationPolicy",
            object,
        );
    }

    /// Removes an AuthorizationPolicy object; open watches see DELETED.
    pub fn delete_authorization_policy(&self, namespace: &str, name: &str) {
        self.delete_object(POLICIES, namespace, name);
    }

    /// Adds or replaces a RequestAuthentication object; open watches see ADDED or
    /// MODIFIED.
    pub fn apply_request_authentication(&self, object: Value) {
        self.apply_object(
            REQUEST_AUTHENTICATIONS,
            "security.istio.io/v1",
            "RequestAuthentication",
            object,
        );
    }

    /// Adds or replaces a ClusterSPIFFEID object (cluster-scoped).
    pub fn apply_cluster_spiffe_id(&self, object: Value) {
        self.apply_object(
            CLUSTER_SPIFFE_IDS,
            "spire.spiffe.io/v1alpha1",
            "ClusterSPIFFEID",
            object,
        );
    }

    pub fn delete_cluster_spiffe_id(&self, name: &str) {
        self.delete_object(CLUSTER_SPIFFE_IDS, "", name);
    }

    /// Adds or replaces a ClusterFederatedTrustDomain object (cluster-scoped).
    pub fn apply_cluster_federated_trust_domain(&self, object: Value) {
        self.apply_object(
            CLUSTER_FEDERATED_TRUST_DOMAINS,
            "spire.spiffe.io/v1alpha1",
            "ClusterFederatedTrustDomain",
            object,
        );
    }

    pub fn delete_cluster_federated_trust_domain(&self, name: &str) {
        self.delete_object(CLUSTER_FEDERATED_TRUST_DOMAINS, "", name);
    }

    /// Adds or replaces a Service (core v1).
    pub fn apply_service(&self, object: Value) {
        self.apply_object(SERVICES, "v1", "Service", object);
    }

    /// Adds or replaces an EndpointSlice (discovery.k8s.io/v1).
    pub fn apply_endpoint_slice(&self, object: Value) {
        self.apply_object(
            ENDPOINT_SLICES,
            "discovery.k8s.io/v1",
            "EndpointSlice",
            object,
        );
    }

    pub fn delete_service(&self, namespace: &str, name: &str) {
        self.delete_object(SERVICES, namespace, name);
    }

    pub fn delete_endpoint_slice(&self, namespace: &str, name: &str) {
        self.delete_object(ENDPOINT_SLICES, namespace, name);
    }

    fn apply_object(&self, plural: &str, api_version: &str, kind: &str, mut object: Value) {
        object["apiVersion"] = json!(api_version);
        object["kind"] = json!(kind);
        if let Ok(mut s) = self.state.lock() {
            s.apply_object(plural, object);
        }
    }

    /// A ConfigMap as the API holds it (written with PATCH, e.g. server-side apply).
    pub fn config_map(&self, namespace: &str, name: &str) -> Option<Value> {
        let key = (
            CONFIG_MAPS.to_owned(),
            namespace.to_owned(),
            name.to_owned(),
        );
        self.state.lock().ok()?.objects.get(&key).cloned()
    }

    fn delete_object(&self, plural: &str, namespace: &str, name: &str) {
        if let Ok(mut s) = self.state.lock() {
            let key = (plural.to_owned(), namespace.to_owned(), name.to_owned());
            if let Some(object) = s.objects.remove(&key) {
                s.notify_object(plural, "DELETED", &object);
            }
        }
    }

    /// Removes a pod; open watches see DELETED.
    pub fn remove_pod(&self, namespace: &str, name: &str) {
        if let Ok(mut s) = self.state.lock() {
            if let Some(pod) = s.pods.remove(&(namespace.to_owned(), name.to_owned())) {
                s.notify("DELETED", &pod);
            }
        }
    }

    /// A projected service-account token for `pod`, as the kubelet mounts it.
    pub fn service_account_token(&self, pod: &FakePod, audience: &str, ttl: Duration) -> String {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.signed_token(pod, audience, now, now + ttl.as_secs())
    }

    /// A token for `pod` that expired an hour ago (a node whose kubelet stopped
    /// refreshing it).
    pub fn expired_service_account_token(&self, pod: &FakePod, audience: &str) -> String {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.signed_token(pod, audience, now - 7200, now - 3600)
    }

    fn signed_token(&self, pod: &FakePod, audience: &str, now: u64, exp: u64) -> String {
        let claims = json!({
            "iss": "https://kubernetes.default.svc",
            "sub": format!("system:serviceaccount:{}:{}", pod.namespace, pod.service_account),
            "aud": [audience],
            "iat": now,
            "nbf": now,
            "exp": exp,
            "kubernetes.io": {
                "namespace": pod.namespace,
                "pod": {"name": pod.name, "uid": pod.uid},
                "serviceaccount": {"name": pod.service_account, "uid": "sa-uid"},
                "node": {"name": pod.node_name, "uid": "node-uid-in-token"},
            },
        });
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
            &claims,
            &self.signing_key,
        )
        .expect("sign a token")
    }
}

impl Drop for FakeKubeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}
