//! AuthorizationPolicy `when.key` names -> the request [`Attribute`] they read.

use http::HeaderName;

use crate::model::Attribute;
use crate::request::PseudoHeader;

/// The `when.key`s Istio admits (reference §4, COND).
pub(crate) fn condition_attribute(key: &str) -> Result<Attribute, String> {
    if let Some(rest) = key.strip_prefix("request.headers[") {
        let name = rest
            .strip_suffix(']')
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("{key:?}: expected request.headers[<name>]"))?;
        if name.starts_with(':') {
            return PseudoHeader::parse(name).map(Attribute::Pseudo).ok_or_else(|| {
                format!("{key:?}: the pseudo-headers a condition may name are :method, :authority and :path")
            });
        }
        return HeaderName::from_bytes(name.as_bytes())
            .map(Attribute::Header)
            .map_err(|_| format!("{key:?}: {name:?} is not a valid header name"));
    }
    if let Some(rest) = key.strip_prefix("request.auth.claims") {
        return claim_path(rest).map(Attribute::Claim).ok_or_else(|| {
            format!(
                "{key:?}: expected request.auth.claims[<name>] or request.auth.claims[<a>][<b>]..."
            )
        });
    }
    if key.starts_with("experimental.envoy.filters.") {
        return Ok(Attribute::EnvoyMetadata);
    }
    Ok(match key {
        "source.ip" => Attribute::SourceIp,
        "remote.ip" => Attribute::RemoteIp,
        "source.namespace" => Attribute::Namespace,
        "source.principal" => Attribute::Principal,
        "source.serviceAccount" => Attribute::ServiceAccount,
        "source.trustDomain" => Attribute::TrustDomain,
        "request.auth.principal" => Attribute::RequestPrincipal,
        "request.auth.audiences" => Attribute::Audience,
        "request.auth.presenter" => Attribute::Presenter,
        "destination.ip" => Attribute::DestinationIp,
        "destination.port" => Attribute::DestinationPort,
        "connection.sni" => Attribute::Sni,
        "" => return Err("is required".into()),
        _ => {
            return Err(format!(
                "unknown key {key:?}: expected request.headers[..], source.ip, remote.ip, source.namespace, \
                 source.principal, source.serviceAccount, source.trustDomain, request.auth.principal, \
                 request.auth.audiences, request.auth.presenter, request.auth.claims[..], destination.ip, \
                 destination.port, connection.sni or experimental.envoy.filters.*"
            ));
        }
    })
}

/// `[a][b]` -> `["a", "b"]`.
fn claim_path(mut rest: &str) -> Option<Vec<String>> {
    let mut path = Vec::new();
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let end = inner.find(']')?;
        let name = &inner[..end];
        if name.is_empty() || name.contains('[') {
            return None;
        }
        path.push(name.to_owned());
        rest = &inner[end + 1..];
    }
    (!path.is_empty()).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_paths() {
        assert_eq!(claim_path("[groups]"), Some(vec!["groups".to_owned()]));
        assert_eq!(
            claim_path("[a][b]"),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        for bad in ["", "[", "[]", "groups", "[a]b", "[a[b]]"] {
            assert_eq!(claim_path(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn condition_keys() {
        assert!(
            matches!(condition_attribute("request.headers[X-Role]"), Ok(Attribute::Header(h)) if h == "x-role")
        );
        assert!(condition_attribute("request.headers[bad name]").is_err());
        assert!(matches!(
            condition_attribute("request.headers[:authority]"),
            Ok(Attribute::Pseudo(PseudoHeader::Authority))
        ));
        assert!(condition_attribute("request.headers[:scheme]").is_err());
        assert!(condition_attribute("request.headers[]").is_err());
        assert!(condition_attribute("source.user").is_err());
        assert_eq!(
            condition_attribute("destination.port"),
            Ok(Attribute::DestinationPort)
        );
        assert_eq!(
            condition_attribute("experimental.envoy.filters.x.y"),
            Ok(Attribute::EnvoyMetadata)
        );
    }
}
