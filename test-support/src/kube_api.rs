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

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

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

/// What a change is about, so it reaches only the watches that asked for it.
#[derive(Debug, Clone)]
enum Topic {
    /// A pod, with the node it runs on (watches may filter on `spec.nodeName`).
    Pod { node: String },
    /// A custom object of a resource (`authorizationpolicies`, ...).
    Object { plural: String },
}

/// What one open watch asked for.
#[derive(Debug, Clone)]
enum WatchFilter {
    Pods { node: Option<String> },
    Objects { plural: String },
}

impl WatchFilter {
    fn wants(&self, topic: &Topic) -> bool {
        match (self, topic) {
            (Self::Pods { node: filter }, Topic::Pod { node }) => {
                filter.as_ref().is_none_or(|f| f == node)
            }
            (Self::Objects { plural: watched }, Topic::Object { plural }) => watched == plural,
            _ => false,
        }
    }
}

/// Events kept for watches that start from an older resourceVersion (the API
/// server keeps a window too; a client that lists and then watches must not lose
/// what changed in between).
const HISTORY: usize = 256;

#[derive(Default)]
struct State {
    pods: HashMap<(String, String), FakePod>,
    /// node name -> (uid, internal IP)
    nodes: HashMap<String, (String, String)>,
    /// Bumped on every change (the watch's resourceVersion).
    version: u64,
    /// Custom objects by (plural, namespace, name).
    objects: std::collections::BTreeMap<(String, String, String), Value>,
    /// The last `HISTORY` events: version, topic, event line.
    history: std::collections::VecDeque<(u64, Topic, Bytes)>,
    /// Open watches and where to send their event lines.
    watches: Vec<(WatchFilter, tokio::sync::mpsc::Sender<Bytes>)>,
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

    fn publish(&mut self, topic: Topic, event: Value) {
        let line = Bytes::from(format!("{event}\n"));
        self.watches
            .retain(|(filter, tx)| !filter.wants(&topic) || tx.try_send(line.clone()).is_ok());
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back((self.version, topic, line));
    }

    /// Opens a watch; it first replays the kept events newer than `since` (the
    /// list's resourceVersion), like the API server.
    fn open_watch(
        &mut self,
        filter: WatchFilter,
        since: Option<u64>,
    ) -> tokio::sync::mpsc::Receiver<Bytes> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(HISTORY + 64);
        if let Some(since) = since.filter(|v| *v > 0) {
            for (_, _, line) in self
                .history
                .iter()
                .filter(|(version, topic, _)| *version > since && filter.wants(topic))
            {
                let _ = tx.try_send(line.clone());
            }
        }
        self.watches.push((filter, tx));
        rx
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
const CLUSTER_SPIFFE_IDS: &str = "clusterspiffeids";
const SERVICES: &str = "services";
const ENDPOINT_SLICES: &str = "endpointslices";

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
                        async move { Ok::<_, std::convert::Infallible>(handle(req, &state, &key).await) }
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

    pub fn delete_endpoint_slice(&self, namespace: &str, name: &str) {
        self.delete_object(ENDPOINT_SLICES, namespace, name);
    }

    fn apply_object(&self, plural: &str, api_version: &str, kind: &str, mut object: Value) {
        object["apiVersion"] = json!(api_version);
        object["kind"] = json!(kind);
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
        if let Ok(mut s) = self.state.lock() {
            let event = if s.objects.contains_key(&key) {
                "MODIFIED"
            } else {
                "ADDED"
            };
            s.objects.insert(key, object.clone());
            s.notify_object(plural, event, &object);
        }
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
        let claims = json!({
            "iss": "https://kubernetes.default.svc",
            "sub": format!("system:serviceaccount:{}:{}", pod.namespace, pod.service_account),
            "aud": [audience],
            "iat": now,
            "nbf": now,
            "exp": now + ttl.as_secs(),
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

type Body = BoxBody<Bytes, std::convert::Infallible>;

fn json_response(status: StatusCode, body: Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// A watch from the request's `resourceVersion`: one JSON event per line, for as
/// long as the server runs.
fn watch_response(
    state: &Mutex<State>,
    filter: WatchFilter,
    query: &HashMap<String, String>,
) -> Response<Body> {
    let since = query
        .get("resourceVersion")
        .and_then(|v| v.parse::<u64>().ok());
    match state.lock() {
        Ok(mut s) => stream_response(s.open_watch(filter, since)),
        Err(_) => json_response(StatusCode::INTERNAL_SERVER_ERROR, json!({"kind": "Status"})),
    }
}

fn stream_response(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Response<Body> {
    let frames =
        tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), |b| {
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(b))
        });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn not_found(what: &str) -> Response<Body> {
    json_response(
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": format!("{what} not found"), "reason": "NotFound", "code": 404}),
    )
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    state: &Mutex<State>,
    key: &jsonwebtoken::DecodingKey,
) -> Response<Body> {
    let authorized = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {ISSUER_TOKEN}"));
    if !authorized {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"kind": "Status", "code": 401, "message": "Unauthorized"}),
        );
    }
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace("%3D", "=").replace("%3d", "=")))
        .collect();
    let node_filter = query
        .get("fieldSelector")
        .and_then(|f| f.strip_prefix("spec.nodeName="))
        .map(str::to_owned);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["apis", "authentication.k8s.io", "v1", "tokenreviews"]) => {
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            json_response(StatusCode::CREATED, token_review(&review, key))
        }
        ("GET", ["api", "v1", "namespaces", ns, "pods", name]) => {
            let pod = state
                .lock()
                .ok()
                .and_then(|s| s.pods.get(&((*ns).to_owned(), (*name).to_owned())).cloned());
            match pod {
                Some(p) => json_response(
                    StatusCode::OK,
                    json!({"apiVersion": "v1", "kind": "Pod",
                           "metadata": {"name": p.name, "namespace": p.namespace, "uid": p.uid},
                           "spec": {"nodeName": p.node_name, "serviceAccountName": p.service_account, "containers": []}}),
                ),
                None => not_found(&format!("pod {ns}/{name}")),
            }
        }
        ("GET", ["api", "v1", "pods"])
            if query.get("watch").is_some_and(|w| w == "true" || w == "1") =>
        {
            let filter = WatchFilter::Pods { node: node_filter };
            watch_response(state, filter, &query)
        }
        ("GET", ["api", "v1", "pods"]) => {
            let (items, version) = state
                .lock()
                .map(|s| {
                    let items: Vec<Value> = s
                        .pods
                        .values()
                        .filter(|p| node_filter.as_ref().is_none_or(|n| n == &p.node_name))
                        .map(|p| p.to_json(s.version))
                        .collect();
                    (items, s.version)
                })
                .unwrap_or_default();
            json_response(
                StatusCode::OK,
                json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": version.to_string()}, "items": items}),
            )
        }
        ("GET", ["api", "v1", "services"] | ["apis", _, _, _]) => {
            let (api_version, plural) = match segments.as_slice() {
                ["apis", group, version, plural] => (format!("{group}/{version}"), *plural),
                _ => ("v1".to_owned(), SERVICES),
            };
            if ![POLICIES, CLUSTER_SPIFFE_IDS, ENDPOINT_SLICES, SERVICES].contains(&plural) {
                return not_found(&path);
            }
            if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
                let filter = WatchFilter::Objects {
                    plural: plural.to_owned(),
                };
                return watch_response(state, filter, &query);
            }
            let (items, resource_version) = state
                .lock()
                .map(|s| {
                    let items: Vec<Value> = s
                        .objects
                        .iter()
                        .filter(|((p, _, _), _)| p == plural)
                        .map(|(_, v)| v.clone())
                        .collect();
                    (items, s.version)
                })
                .unwrap_or_default();
            json_response(
                StatusCode::OK,
                json!({"apiVersion": api_version, "kind": "List",
                       "metadata": {"resourceVersion": resource_version.to_string()}, "items": items}),
            )
        }
        ("GET", ["api", "v1", "nodes", name]) => {
            let node = state.lock().ok().and_then(|s| s.nodes.get(*name).cloned());
            match node {
                Some((uid, ip)) => json_response(
                    StatusCode::OK,
                    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "uid": uid},
                           "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}),
                ),
                None => not_found(&format!("node {name}")),
            }
        }
        _ => not_found(&path),
    }
}

/// Verifies the token like the API server does and answers a TokenReview.
fn token_review(review: &Value, key: &jsonwebtoken::DecodingKey) -> Value {
    let token = review["spec"]["token"].as_str().unwrap_or_default();
    let audiences: Vec<String> = review["spec"]["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&audiences);
    let status = match jsonwebtoken::decode::<Value>(token, key, &validation) {
        Ok(data) => {
            let c = data.claims;
            let k = &c["kubernetes.io"];
            json!({
                "authenticated": true,
                "user": {
                    "username": c["sub"],
                    "uid": k["serviceaccount"]["uid"],
                    "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", k["namespace"].as_str().unwrap_or_default())],
                    "extra": {
                        "authentication.kubernetes.io/pod-name": [k["pod"]["name"]],
                        "authentication.kubernetes.io/pod-uid": [k["pod"]["uid"]],
                    }
                },
                "audiences": c["aud"],
            })
        }
        Err(e) => json!({"authenticated": false, "error": format!("invalid bearer token: {e}")}),
    };
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": review["spec"], "status": status})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns"}})
    }

    /// A client lists at version N, then opens its watch: what changed in between
    /// must reach it, or watchers built on list + watch race (as one CI run showed).
    #[test]
    fn a_watch_replays_what_changed_since_its_resource_version() {
        let mut state = State::default();
        state.notify_object(POLICIES, "ADDED", &policy("listed"));
        let listed_at = state.version;
        state.notify_object(POLICIES, "ADDED", &policy("in-between"));
        state.notify_object(CLUSTER_SPIFFE_IDS, "ADDED", &policy("other-resource"));

        let filter = WatchFilter::Objects {
            plural: POLICIES.to_owned(),
        };
        let mut from_list = state.open_watch(filter.clone(), Some(listed_at));
        let mut from_now = state.open_watch(filter, None);
        let line = from_list.try_recv().expect("the change after the list");
        assert!(String::from_utf8_lossy(&line).contains("in-between"));
        assert!(
            from_list.try_recv().is_err(),
            "only that change, of that resource"
        );
        assert!(from_now.try_recv().is_err());

        state.notify_object(POLICIES, "DELETED", &policy("listed"));
        assert!(from_list.try_recv().is_ok() && from_now.try_recv().is_ok());
    }
}
