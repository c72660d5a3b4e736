//! The agent API over gRPC: callers are authenticated by their TLS client
//! certificate (already verified against the bundle by the TLS layer).

use std::sync::Arc;

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Response, Status};

use super::convert::{bundle, code_of, entry, status, svid, target, template};
use crate::datastore::Datastore;
use crate::service::{Caller, Issuer};
use meshward_api::proto::agent_api_server::AgentApi;
use meshward_api::proto::{self};

pub(crate) struct AgentService<D> {
    pub(crate) issuer: Arc<Issuer<D>>,
}

/// The node behind a request: the SPIFFE ID and serial of its client certificate
/// (the agent API is served on `tokio_rustls::server::TlsStream<TcpStream>`, whose
/// connect info tonic files under `TlsConnectInfo<TcpConnectInfo>`).
fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    let leaf = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|info| info.peer_certs())
        .and_then(|certs| certs.first().cloned())
        .ok_or_else(|| {
            Status::unauthenticated(
                "this call needs the node SVID as TLS client certificate: attest first",
            )
        })?;
    let id =
        meshward_tls::spiffe_id_of(&leaf).map_err(|e| Status::unauthenticated(e.to_string()))?;
    let serial = meshward_tls::serial_of(&leaf).unwrap_or_default();
    Ok(Caller { id, serial })
}

impl<D: Datastore + 'static> AgentService<D> {
    /// What an attestation answers: the node SVID and the bundle to verify with.
    async fn attested(
        &self,
        node_svid: &crate::x509::X509Svid,
    ) -> Result<Response<proto::AttestResponse>, Status> {
        let own = self.issuer.bundle().await.map_err(status)?;
        Ok(Response::new(proto::AttestResponse {
            svid: Some(svid(node_svid)),
            bundle: Some(bundle(&own)),
        }))
    }
}

#[tonic::async_trait]
impl<D: Datastore + 'static> AgentApi for AgentService<D> {
    async fn attest_agent(
        &self,
        request: Request<proto::AttestAgentRequest>,
    ) -> Result<Response<proto::AttestResponse>, Status> {
        let r = request.into_inner();
        let node_svid = self
            .issuer
            .attest_agent(&r.r#type, &r.payload, &r.csr)
            .await
            .map_err(status)?;
        self.attested(&node_svid).await
    }

    async fn renew_agent(
        &self,
        request: Request<proto::RenewAgentRequest>,
    ) -> Result<Response<proto::RenewAgentResponse>, Status> {
        let caller = caller(&request)?;
        let renewed = self
            .issuer
            .renew_agent(&caller, &request.into_inner().csr)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::RenewAgentResponse {
            svid: Some(svid(&renewed)),
        }))
    }

    async fn list_authorized_entries(
        &self,
        request: Request<proto::ListAuthorizedEntriesRequest>,
    ) -> Result<Response<proto::ListAuthorizedEntriesResponse>, Status> {
        let caller = caller(&request)?;
        let entries = self
            .issuer
            .authorized_entries(&caller)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::ListAuthorizedEntriesResponse {
            entries: entries.iter().map(entry).collect(),
        }))
    }

    async fn batch_new_x509_svid(
        &self,
        request: Request<proto::BatchNewX509SvidRequest>,
    ) -> Result<Response<proto::BatchNewX509SvidResponse>, Status> {
        let caller = caller(&request)?;
        let params = request
            .into_inner()
            .params
            .into_iter()
            .map(|p| {
                let addresses = p
                    .ip_addresses
                    .iter()
                    .map(|a| {
                        a.parse().map_err(|_| {
                            Status::invalid_argument(format!(
                                "ip_addresses: {a:?} is not an IP address"
                            ))
                        })
                    })
                    .collect::<Result<_, Status>>()?;
                Ok(crate::service::SvidRequest {
                    target: target(p.entry_id, p.template, p.pod)?,
                    csr: p.csr,
                    addresses,
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let results = self
            .issuer
            .batch_new_x509_svid(&caller, params)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::BatchNewX509SvidResponse {
            results: results
                .into_iter()
                .map(|(entry_id, result)| match result {
                    Ok(s) => proto::BatchNewX509SvidResult {
                        entry_id,
                        svid: Some(svid(&s)),
                        code: 0,
                        message: String::new(),
                    },
                    Err(e) => proto::BatchNewX509SvidResult {
                        entry_id,
                        svid: None,
                        code: code_of(&e),
                        message: e.to_string(),
                    },
                })
                .collect(),
        }))
    }

    async fn new_jwt_svid(
        &self,
        request: Request<proto::NewJwtSvidRequest>,
    ) -> Result<Response<proto::NewJwtSvidResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let (token, expires) = self
            .issuer
            .new_jwt_svid(
                &caller,
                &target(r.entry_id, r.template, r.pod)?,
                &r.audience,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(proto::NewJwtSvidResponse {
            token,
            expires_at: crate::service::unix(expires),
        }))
    }

    async fn list_identity_templates(
        &self,
        request: Request<proto::ListIdentityTemplatesRequest>,
    ) -> Result<Response<proto::ListIdentityTemplatesResponse>, Status> {
        let caller = caller(&request)?;
        let templates = self
            .issuer
            .identity_templates(&caller)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::ListIdentityTemplatesResponse {
            templates: templates.iter().map(template).collect(),
        }))
    }

    async fn get_bundles(
        &self,
        request: Request<proto::GetBundlesRequest>,
    ) -> Result<Response<proto::GetBundlesResponse>, Status> {
        let caller = caller(&request)?;
        let (own, federated) = self.issuer.bundles(&caller).await.map_err(status)?;
        Ok(Response::new(proto::GetBundlesResponse {
            own: Some(bundle(&own)),
            federated: federated.iter().map(bundle).collect(),
        }))
    }
}
