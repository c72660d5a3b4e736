//! Service cluster IPs resolved to pods, as ztunnel does. A pod calling
//! `echoserver.echoserver.svc:8080` connects to the Service's cluster IP; capture
//! takes the connection before kube-proxy's DNAT, so the outbound listener sees
//! that address. It picks one of the Service's ready endpoints and tunnels to that
//! pod, whose node then enforces policy with the caller's identity. Without this,
//! the connection would leave as plaintext and meet STRICT at the destination.
//!
//! A Service port also declares what its pods' port speaks (`appProtocol`, or a
//! port name such as `http-web` or `tcp-redis`, as Istio's protocol selection):
//! inbound, that declaration stands in for detection (`declared.rs`).
//!
//! Services and EndpointSlices are followed by `meshward_kubernetes::watched`; the
//! map is rebuilt on every change once both have listed, and published through a
//! watch channel.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::AppProtocol;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use meshward_kubernetes::watched;
use tokio::sync::watch;

mod declared;

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ServiceMap {
    /// Service address (cluster IP, service port) -> ready endpoints (pod IP, target port).
    endpoints: HashMap<SocketAddr, Vec<SocketAddr>>,
    /// Endpoint (pod IP, target port) -> the protocol its Services declare.
    declared: HashMap<SocketAddr, AppProtocol>,
}

/// What an outbound destination is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Resolved {
    /// Not a Service address: the destination as it is.
    NotAService,
    /// A Service address: this endpoint of it.
    Endpoint(SocketAddr),
    /// A Service address without a ready endpoint (kube-proxy rejects these too).
    NoEndpoint,
}

pub(crate) struct Services {
    map: watch::Receiver<Arc<ServiceMap>>,
    /// Round robin over a Service's endpoints.
    next: AtomicUsize,
}

impl Services {
    /// No registry: every destination is taken as it is.
    pub(crate) fn none() -> Self {
        Self::following(watch::channel(Arc::default()).1)
    }

    /// Services and EndpointSlices of the whole cluster, followed.
    pub(crate) fn watch(api: meshward_kubernetes::Connection) -> Self {
        let (tx, rx) = watch::channel(Arc::default());
        let mut services = watched::follow(
            kube::Api::<Service>::all(api.client.clone()),
            api.watcher.clone(),
            "Service",
        );
        let mut slices = watched::follow(
            kube::Api::<EndpointSlice>::all(api.client),
            api.watcher,
            "EndpointSlice",
        );
        tokio::spawn(async move {
            loop {
                let changed = tokio::select! {
                    changed = services.changed() => changed,
                    changed = slices.changed() => changed,
                };
                if changed.is_err() {
                    return;
                }
                let both = (
                    services.borrow_and_update().clone(),
                    slices.borrow_and_update().clone(),
                );
                let (Some(services), Some(slices)) = both else {
                    continue;
                };
                let map = build(
                    services.values().map(AsRef::as_ref),
                    slices.values().map(AsRef::as_ref),
                );
                if tx.send(Arc::new(map)).is_err() {
                    return;
                }
            }
        });
        Self::following(rx)
    }

    fn following(map: watch::Receiver<Arc<ServiceMap>>) -> Self {
        Self {
            map,
            next: AtomicUsize::new(0),
        }
    }

    /// What `target` is; a Service's endpoints are taken in turn.
    pub(crate) fn resolve(&self, target: SocketAddr) -> Resolved {
        let map = self.map.borrow();
        let Some(endpoints) = map.endpoints.get(&target) else {
            return Resolved::NotAService;
        };
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        endpoints
            .get(turn.checked_rem(endpoints.len()).unwrap_or_default())
            .map_or(Resolved::NoEndpoint, |endpoint| {
                Resolved::Endpoint(*endpoint)
            })
    }

    /// What the Services of `endpoint` (a pod's address and port) declare it speaks.
    pub(crate) fn declared(&self, endpoint: SocketAddr) -> Option<AppProtocol> {
        self.map.borrow().declared.get(&endpoint).copied()
    }
}

/// The map kube-proxy would program: for each TCP port of each Service with a
/// cluster IP, the ready endpoints of the same-named port in its EndpointSlices;
/// and what each port declares for every endpoint, ready or not.
fn build<'a>(
    services: impl Iterator<Item = &'a Service>,
    slices: impl Iterator<Item = &'a EndpointSlice>,
) -> ServiceMap {
    let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for slice in slices {
        let namespace = slice.metadata.namespace.as_deref().unwrap_or_default();
        if let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        {
            by_service
                .entry((namespace, service.as_str()))
                .or_default()
                .push(slice);
        }
    }
    let mut map = ServiceMap::default();
    for service in services {
        let (Some(name), Some(spec)) = (service.metadata.name.as_deref(), service.spec.as_ref())
        else {
            continue;
        };
        let namespace = service.metadata.namespace.as_deref().unwrap_or_default();
        let slices = by_service
            .get(&(namespace, name))
            .map_or(&[][..], Vec::as_slice);
        let cluster_ips: BTreeSet<IpAddr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter_map(|ip| ip.parse().ok())
            .collect();
        for port in spec.ports.iter().flatten() {
            if port.protocol.as_deref().unwrap_or("TCP") != "TCP" {
                continue;
            }
            let port_name = port.name.as_deref().unwrap_or_default();
            if let Some(protocol) =
                declared::protocol(port.app_protocol.as_deref(), port.name.as_deref())
            {
                for endpoint in endpoints(slices, port_name, Readiness::Any) {
                    declared::merge(&mut map.declared, endpoint, protocol);
                }
            }
            let Ok(service_port) = u16::try_from(port.port) else {
                continue;
            };
            let ready = endpoints(slices, port_name, Readiness::Ready);
            for ip in &cluster_ips {
                map.endpoints
                    .insert(SocketAddr::new(*ip, service_port), ready.clone());
            }
        }
    }
    map
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Readiness {
    Ready,
    Any,
}

/// Addresses of the slices, with the number of the port named `port_name`.
fn endpoints(slices: &[&EndpointSlice], port_name: &str, readiness: Readiness) -> Vec<SocketAddr> {
    let mut endpoints = BTreeSet::new();
    for slice in slices {
        let port = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or_default() == port_name
                && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
        });
        let Some(port) = port
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for endpoint in &slice.endpoints {
            // absent `ready` means ready (the API's own reading)
            let ready = endpoint.conditions.as_ref().and_then(|c| c.ready) != Some(false);
            if readiness == Readiness::Ready && !ready {
                continue;
            }
            for address in &endpoint.addresses {
                if let Ok(ip) = address.parse::<IpAddr>() {
                    endpoints.insert(SocketAddr::new(ip, port));
                }
            }
        }
    }
    endpoints.into_iter().collect()
}

#[cfg(test)]
mod tests;
