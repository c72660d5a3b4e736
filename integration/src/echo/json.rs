//! `ealen/echo-server`'s JSON: host, http, request (params, query, cookies, body,
//! headers), environment. Repeated headers are joined with `, ` as Node does.

use serde_json::{Map, Value, json};

use super::{PodEnv, Seen};

pub(super) fn render(seen: &Seen, env: &PodEnv) -> String {
    let mut headers = Map::new();
    for (name, value) in &seen.headers {
        match headers.get_mut(name) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(value);
            }
            _ => {
                headers.insert(name.clone(), json!(value));
            }
        }
    }
    let query: Map<String, Value> = seen
        .query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k.to_owned(), json!(v))
        })
        .collect();
    let body = if seen.body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&seen.body)
            .unwrap_or_else(|_| json!(String::from_utf8_lossy(&seen.body)))
    };
    let hostname = seen
        .host
        .rsplit_once(':')
        .map_or(seen.host.as_str(), |(h, _)| h);
    let environment: Map<String, Value> = [
        ("HOSTNAME", &env.hostname),
        ("NODE_NAME", &env.node_name),
        ("POD_NAME", &env.pod_name),
        ("POD_NAMESPACE", &env.pod_namespace),
        ("POD_IP", &env.pod_ip),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_owned(), json!(v))))
    .collect();
    json!({
        "host": {"hostname": hostname, "ip": seen.client.ip().to_string(), "ips": []},
        "http": {"method": seen.method, "baseUrl": "", "originalUrl": seen.uri, "protocol": "http"},
        "request": {
            "params": {"0": seen.path},
            "query": query,
            "cookies": {},
            "body": body,
            "headers": headers,
        },
        "environment": environment,
    })
    .to_string()
}
