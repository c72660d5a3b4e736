//! The fake API's HTTP side: bearer-token check, then the routes (TokenReview,
//! pods, nodes, list + watch of the other resources).

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

use super::events::WatchFilter;
use super::{
    CLUSTER_FEDERATED_TRUST_DOMAINS, CLUSTER_SPIFFE_IDS, CONFIG_MAPS, ENDPOINT_SLICES,
    ISSUER_TOKEN, POLICIES, REQUEST_AUTHENTICATIONS, SERVICES, State,
};

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
        Ok(mut s) => stream_response(s.events.open_watch(filter, since)),
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

pub(super) async fn handle(
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
            let review = json_body(req).await.unwrap_or(Value::Null);
            json_response(StatusCode::CREATED, token_review(&review, key))
        }
        ("PATCH", ["api", "v1", "namespaces", ns, "configmaps", name]) => {
            // a merge or apply patch of a whole object: enough for what is written here
            let (ns, name) = ((*ns).to_owned(), (*name).to_owned());
            let Some(mut object) = json_body(req).await else {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    json!({"kind": "Status", "code": 400, "message": "body is not JSON"}),
                );
            };
            object["apiVersion"] = json!("v1");
            object["kind"] = json!("ConfigMap");
            object["metadata"]["namespace"] = json!(ns);
            object["metadata"]["name"] = json!(name);
            if let Ok(mut s) = state.lock() {
                s.apply_object(CONFIG_MAPS, object.clone());
            }
            json_response(StatusCode::OK, object)
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
            let served = [
                POLICIES,
                REQUEST_AUTHENTICATIONS,
                CLUSTER_SPIFFE_IDS,
                CLUSTER_FEDERATED_TRUST_DOMAINS,
                ENDPOINT_SLICES,
                SERVICES,
            ];
            if !served.contains(&plural) {
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

/// The request's body as JSON; `None` when it is not.
async fn json_body(req: Request<hyper::body::Incoming>) -> Option<Value> {
    let body = req.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&body).ok()
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
        // the API server's words for an expired token
        Err(e) if *e.kind() == jsonwebtoken::errors::ErrorKind::ExpiredSignature => json!({
            "authenticated": false,
            "error": "[invalid bearer token, service account token has expired]",
        }),
        Err(e) => json!({"authenticated": false, "error": format!("invalid bearer token: {e}")}),
    };
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": review["spec"], "status": status})
}
