//! What a Service port declares its pods' port speaks, as Istio's protocol
//! selection reads it: `appProtocol` first, else the port name (`<protocol>` or
//! `<protocol>-<suffix>`). meshward knows two treatments: HTTP (judged per
//! request) and TCP (judged once per connection, bytes as they come). A name
//! neither maps to declares nothing, and the port is detected.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::SocketAddr;

use crate::config::AppProtocol;

/// The declaration of a Service port with this `appProtocol` and name.
pub(super) fn protocol(app_protocol: Option<&str>, name: Option<&str>) -> Option<AppProtocol> {
    if let Some(declared) = app_protocol {
        return named(declared);
    }
    let name = name?;
    named(name.split_once('-').map_or(name, |(prefix, _)| prefix))
}

fn named(protocol: &str) -> Option<AppProtocol> {
    match protocol.to_ascii_lowercase().as_str() {
        "http" | "http2" | "grpc" | "grpc-web" | "kubernetes.io/h2c" | "kubernetes.io/ws" => {
            Some(AppProtocol::Http)
        }
        // TLS is opaque to a proxy that does not terminate it; the databases and
        // brokers Istio names are TCP to it too
        "tcp" | "tls" | "https" | "kubernetes.io/wss" | "mongo" | "mysql" | "redis" => {
            Some(AppProtocol::Tcp)
        }
        _ => None,
    }
}

/// Records `protocol` for `endpoint`. Two Services that disagree about one pod
/// port make it HTTP: every request is then judged, which TCP would not do.
pub(super) fn merge(
    declared: &mut HashMap<SocketAddr, AppProtocol>,
    endpoint: SocketAddr,
    protocol: AppProtocol,
) {
    match declared.entry(endpoint) {
        Entry::Vacant(slot) => {
            slot.insert(protocol);
        }
        Entry::Occupied(mut slot) if *slot.get() != protocol => {
            slot.insert(AppProtocol::Http);
        }
        Entry::Occupied(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_protocol_then_the_port_name_as_istio_reads_them() {
        let http = Some(AppProtocol::Http);
        let tcp = Some(AppProtocol::Tcp);
        for (app_protocol, name, want) in [
            (Some("http"), None, http),
            (Some("HTTP2"), Some("tcp-x"), http),
            (Some("grpc"), None, http),
            (Some("kubernetes.io/h2c"), None, http),
            (Some("redis"), Some("http"), tcp),
            (Some("tls"), None, tcp),
            // an appProtocol meshward does not know declares nothing, whatever the name
            (Some("example.com/custom"), Some("http"), None),
            (None, Some("http-web"), http),
            (None, Some("grpc-web"), http),
            (None, Some("grpc"), http),
            (None, Some("tcp-redis"), tcp),
            (None, Some("mysql"), tcp),
            (None, Some("web"), None),
            (None, Some("httpx"), None),
            (None, None, None),
        ] {
            assert_eq!(
                protocol(app_protocol, name),
                want,
                "{app_protocol:?} {name:?}"
            );
        }
    }

    #[test]
    fn services_that_disagree_make_a_port_http() {
        let endpoint: SocketAddr = "10.0.1.5:9000".parse().unwrap();
        let mut declared = HashMap::new();
        merge(&mut declared, endpoint, AppProtocol::Tcp);
        assert_eq!(declared[&endpoint], AppProtocol::Tcp);
        merge(&mut declared, endpoint, AppProtocol::Tcp);
        assert_eq!(declared[&endpoint], AppProtocol::Tcp);
        merge(&mut declared, endpoint, AppProtocol::Http);
        assert_eq!(declared[&endpoint], AppProtocol::Http);
        merge(&mut declared, endpoint, AppProtocol::Tcp);
        assert_eq!(declared[&endpoint], AppProtocol::Http);
    }
}
