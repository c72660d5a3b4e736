//! JWT-SVIDs through the Workload API: minted by the issuer for the caller's
//! identities, validated locally by `meshward_jwt::validate_jwt_svid` with the
//! bundles' JWT keys (JWT-SVID.md).

use meshward_api::proto;
use meshward_jwt::JwtFailure;
use meshward_spiffe::{Bundle, SpiffeId, TrustDomain};
use prost_types::value::Kind;
use tonic::Status;

use std::sync::Arc;

use crate::config::PodInfo;

use crate::agent::{IssuerClient, Snapshot, WorkloadSvid};
use crate::workload_proto::Jwtsvid;

/// One JWT-SVID per identity of the caller (or only `spiffe_id`, which the caller
/// must hold).
pub(crate) async fn fetch(
    mut issuer: IssuerClient,
    node_name: &str,
    pod: Option<&PodInfo>,
    svids: &[Arc<WorkloadSvid>],
    spiffe_id: Option<&SpiffeId>,
    audience: &[String],
) -> Result<Vec<Jwtsvid>, Status> {
    let wanted: Vec<_> = svids
        .iter()
        .filter(|s| spiffe_id.is_none_or(|id| s.spiffe_id == *id))
        .collect();
    if wanted.is_empty() {
        return Err(Status::permission_denied(format!(
            "no identity {} issued to this workload",
            spiffe_id.map_or_else(String::new, ToString::to_string)
        )));
    }
    let mut out = Vec::with_capacity(wanted.len());
    for svid in wanted {
        let request = if let (true, Some(pod)) = (svid.from_template, pod) {
            proto::NewJwtSvidRequest {
                audience: audience.to_vec(),
                template: svid.source.clone(),
                pod: Some(proto::PodAttributes {
                    namespace: pod.namespace.clone(),
                    name: pod.name.clone(),
                    uid: pod.uid.clone(),
                    service_account: pod.service_account.clone(),
                    node_name: node_name.to_owned(),
                    labels: pod.labels.clone().into_iter().collect(),
                    namespace_labels: Default::default(),
                }),
                ..Default::default()
            }
        } else {
            proto::NewJwtSvidRequest {
                entry_id: svid.source.clone(),
                audience: audience.to_vec(),
                ..Default::default()
            }
        };
        let token = crate::metrics::observe_issuer("NewJwtSvid", issuer.new_jwt_svid(request))
            .await
            .map_err(|s| {
                Status::unavailable(format!(
                    "the issuer could not mint a JWT-SVID: {}",
                    s.message()
                ))
            })?
            .into_inner()
            .token;
        out.push(Jwtsvid {
            spiffe_id: svid.spiffe_id.to_string(),
            svid: token,
            hint: String::new(),
        });
    }
    Ok(out)
}

/// A JWKS with only the `jwt-svid` keys, as FetchJWTBundles carries it; none
/// before the issuer has served the own bundle.
pub(crate) fn jwt_only_jwks(own: &Bundle) -> Result<String, Status> {
    if own.x509_authorities.is_empty() {
        return Err(Status::unavailable("no usable bundle yet"));
    }
    Ok(own.jwt_jwks())
}

/// Validates a JWT-SVID of the own trust domain or of one the caller federates
/// with (`trusted`), with `meshward_jwt`'s one JWT-SVID validator: the keys of its
/// subject's domain, `aud` containing `audience`, the JWT-SVID rules. Its claims
/// as the Workload API returns them (`aud` always a list, as SPIRE's).
pub(crate) fn validate(
    snapshot: &Snapshot,
    trusted: impl Fn(&TrustDomain) -> bool,
    token: &str,
    audience: &str,
) -> Result<(SpiffeId, prost_types::Struct), Status> {
    let keys = snapshot.jwt_keys();
    let keys_of = |td: &TrustDomain| keys.get(td).filter(|_| trusted(td)).cloned();
    let (subject, claims) =
        meshward_jwt::validate_jwt_svid(token, audience, keys_of).map_err(|failure| {
            let why = match failure {
                JwtFailure::KeysUnavailable(why) => {
                    format!("key not found: {why} (its own trust domain, or one it federates with)")
                }
                other => other.to_string(),
            };
            Status::invalid_argument(format!("invalid JWT-SVID: {why}"))
        })?;
    let mut fields: std::collections::BTreeMap<String, prost_types::Value> = claims
        .claims
        .into_iter()
        .map(|(k, v)| (k, to_proto(v)))
        .collect();
    if let Some(aud) = fields.get_mut("aud") {
        if let Some(Kind::StringValue(one)) = &aud.kind {
            *aud = prost_types::Value {
                kind: Some(Kind::ListValue(prost_types::ListValue {
                    values: vec![prost_types::Value {
                        kind: Some(Kind::StringValue(one.clone())),
                    }],
                })),
            };
        }
    }
    Ok((subject, prost_types::Struct { fields }))
}

fn to_proto(v: serde_json::Value) -> prost_types::Value {
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.into_iter().map(to_proto).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o.into_iter().map(|(k, v)| (k, to_proto(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}
