//! The admin API over gRPC on a unix socket (mode 0600).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{
    agent, bundle, bundle_from, entry, entry_from, relationship, relationship_from, selectors,
    spiffe_id, status, template, template_from,
};
use crate::datastore::{Datastore, EntryFilter};
use crate::service::Issuer;
use meshward_api::proto::admin_api_server::AdminApi;
use meshward_api::proto::{self};

pub(crate) struct AdminService<D> {
    pub(crate) issuer: Arc<Issuer<D>>,
    /// `federation.https_web_ca_file`, for `federation refresh`.
    pub(crate) https_web_ca_file: Option<std::path::PathBuf>,
}

fn optional_id(field: &str, value: &str) -> Result<Option<meshward_spiffe::SpiffeId>, Status> {
    if value.is_empty() {
        Ok(None)
    } else {
        spiffe_id(field, value).map(Some)
    }
}

impl<D: Datastore + 'static> AdminService<D> {
    async fn put_relationship(
        &self,
        message: proto::FederationRelationship,
        replace: bool,
    ) -> Result<Response<proto::FederationRelationship>, Status> {
        let (relationship, bootstrap) = relationship_from(message)?;
        self.issuer
            .put_federation_relationship(&relationship, bootstrap.as_ref(), replace)
            .await
            .map_err(status)?;
        Ok(Response::new(super::convert::relationship(&relationship)))
    }
}

#[tonic::async_trait]
impl<D: Datastore + 'static> AdminApi for AdminService<D> {
    async fn create_entry(
        &self,
        request: Request<proto::Entry>,
    ) -> Result<Response<proto::Entry>, Status> {
        let created = self
            .issuer
            .create_entry(entry_from(request.into_inner())?)
            .await
            .map_err(status)?;
        Ok(Response::new(entry(&created)))
    }

    async fn update_entry(
        &self,
        request: Request<proto::Entry>,
    ) -> Result<Response<proto::Entry>, Status> {
        let updated = self
            .issuer
            .update_entry(entry_from(request.into_inner())?)
            .await
            .map_err(status)?;
        Ok(Response::new(entry(&updated)))
    }

    async fn delete_entry(
        &self,
        request: Request<proto::EntryRef>,
    ) -> Result<Response<proto::Entry>, Status> {
        let deleted = self
            .issuer
            .delete_entry(&request.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(entry(&deleted)))
    }

    async fn list_entries(
        &self,
        request: Request<proto::ListEntriesRequest>,
    ) -> Result<Response<proto::ListAuthorizedEntriesResponse>, Status> {
        let r = request.into_inner();
        let filter = EntryFilter {
            spiffe_id: optional_id("spiffeID", &r.spiffe_id)?,
            parent_id: optional_id("parentID", &r.parent_id)?,
            selectors: selectors(&r.selectors)?,
        };
        let entries = self.issuer.list_entries(&filter).await.map_err(status)?;
        Ok(Response::new(proto::ListAuthorizedEntriesResponse {
            entries: entries.iter().map(entry).collect(),
        }))
    }

    async fn generate_join_token(
        &self,
        request: Request<proto::GenerateJoinTokenRequest>,
    ) -> Result<Response<proto::JoinToken>, Status> {
        let r = request.into_inner();
        let token = self
            .issuer
            .generate_join_token(optional_id("spiffeID", &r.spiffe_id)?, r.ttl_seconds)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::JoinToken {
            token: token.token,
            spiffe_id: token.spiffe_id.to_string(),
            expires_at: token.expires_at,
        }))
    }

    async fn list_agents(
        &self,
        _request: Request<proto::Empty>,
    ) -> Result<Response<proto::ListAgentsResponse>, Status> {
        let agents = self.issuer.list_agents().await.map_err(status)?;
        Ok(Response::new(proto::ListAgentsResponse {
            agents: agents.iter().map(agent).collect(),
        }))
    }

    async fn show_agent(
        &self,
        request: Request<proto::AgentRef>,
    ) -> Result<Response<proto::Agent>, Status> {
        let id = spiffe_id("spiffeID", &request.into_inner().spiffe_id)?;
        Ok(Response::new(agent(
            &self.issuer.show_agent(&id).await.map_err(status)?,
        )))
    }

    async fn ban_agent(
        &self,
        request: Request<proto::AgentRef>,
    ) -> Result<Response<proto::Agent>, Status> {
        let id = spiffe_id("spiffeID", &request.into_inner().spiffe_id)?;
        Ok(Response::new(agent(
            &self.issuer.ban_agent(&id).await.map_err(status)?,
        )))
    }

    async fn evict_agent(
        &self,
        request: Request<proto::AgentRef>,
    ) -> Result<Response<proto::Empty>, Status> {
        let id = spiffe_id("spiffeID", &request.into_inner().spiffe_id)?;
        self.issuer.evict_agent(&id).await.map_err(status)?;
        Ok(Response::new(proto::Empty {}))
    }

    async fn show_bundle(
        &self,
        _request: Request<proto::Empty>,
    ) -> Result<Response<proto::Bundle>, Status> {
        Ok(Response::new(bundle(
            &self.issuer.bundle().await.map_err(status)?,
        )))
    }

    async fn set_federated_bundle(
        &self,
        request: Request<proto::Bundle>,
    ) -> Result<Response<proto::Empty>, Status> {
        let b = bundle_from(request.into_inner())?;
        self.issuer.set_federated_bundle(&b).await.map_err(status)?;
        Ok(Response::new(proto::Empty {}))
    }

    async fn list_federated_bundles(
        &self,
        _request: Request<proto::Empty>,
    ) -> Result<Response<proto::ListBundlesResponse>, Status> {
        let bundles = self.issuer.federated_bundles().await.map_err(status)?;
        Ok(Response::new(proto::ListBundlesResponse {
            bundles: bundles.iter().map(bundle).collect(),
        }))
    }

    async fn delete_federated_bundle(
        &self,
        request: Request<proto::TrustDomainRef>,
    ) -> Result<Response<proto::Empty>, Status> {
        self.issuer
            .delete_federated_bundle(&super::convert::trust_domain(
                &request.into_inner().trust_domain,
            )?)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::Empty {}))
    }

    async fn create_federation_relationship(
        &self,
        request: Request<proto::FederationRelationship>,
    ) -> Result<Response<proto::FederationRelationship>, Status> {
        self.put_relationship(request.into_inner(), false).await
    }

    async fn update_federation_relationship(
        &self,
        request: Request<proto::FederationRelationship>,
    ) -> Result<Response<proto::FederationRelationship>, Status> {
        self.put_relationship(request.into_inner(), true).await
    }

    async fn delete_federation_relationship(
        &self,
        request: Request<proto::TrustDomainRef>,
    ) -> Result<Response<proto::Empty>, Status> {
        let td = super::convert::trust_domain(&request.into_inner().trust_domain)?;
        self.issuer
            .delete_federation_relationship(&td, None)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::Empty {}))
    }

    async fn list_federation_relationships(
        &self,
        _request: Request<proto::Empty>,
    ) -> Result<Response<proto::ListFederationRelationshipsResponse>, Status> {
        let relationships = self
            .issuer
            .federation_relationships()
            .await
            .map_err(status)?;
        Ok(Response::new(proto::ListFederationRelationshipsResponse {
            relationships: relationships.iter().map(relationship).collect(),
        }))
    }

    async fn refresh_federated_bundle(
        &self,
        request: Request<proto::TrustDomainRef>,
    ) -> Result<Response<proto::Bundle>, Status> {
        let td = super::convert::trust_domain(&request.into_inner().trust_domain)?;
        let fetched =
            crate::federation::refresh_now(&self.issuer, &td, self.https_web_ca_file.as_deref())
                .await
                .map_err(|e| match e {
                    crate::federation::RefreshError::Unknown(_) => Status::not_found(e.to_string()),
                    crate::federation::RefreshError::Store(s) => status(s),
                    other => Status::unavailable(other.to_string()),
                })?;
        Ok(Response::new(bundle(&fetched)))
    }

    async fn put_templates(
        &self,
        request: Request<proto::ListIdentityTemplatesResponse>,
    ) -> Result<Response<proto::Empty>, Status> {
        let templates = request
            .into_inner()
            .templates
            .into_iter()
            .map(template_from)
            .collect::<Result<Vec<_>, _>>()?;
        self.issuer
            .put_templates(&templates)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::Empty {}))
    }

    async fn list_templates(
        &self,
        _request: Request<proto::Empty>,
    ) -> Result<Response<proto::ListIdentityTemplatesResponse>, Status> {
        let templates = self.issuer.list_templates().await.map_err(status)?;
        Ok(Response::new(proto::ListIdentityTemplatesResponse {
            templates: templates.iter().map(template).collect(),
        }))
    }

    async fn delete_template(
        &self,
        request: Request<proto::TemplateRef>,
    ) -> Result<Response<proto::Empty>, Status> {
        self.issuer
            .delete_template(&request.into_inner().name)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::Empty {}))
    }

    async fn health(
        &self,
        _request: Request<proto::Empty>,
    ) -> Result<Response<proto::HealthResponse>, Status> {
        let (datastore_ok, ca_active) = self.issuer.health().await;
        let message = match (datastore_ok, ca_active) {
            (true, true) => "ready".to_owned(),
            (false, _) => "datastore unreachable".to_owned(),
            (_, false) => "no active CA".to_owned(),
        };
        Ok(Response::new(proto::HealthResponse {
            datastore_ok,
            ca_active,
            message,
        }))
    }
}
