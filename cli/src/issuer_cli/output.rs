//! What the admin verbs print: spire-server's layout for people, JSON for scripts.

use clap::ValueEnum;
use meshward_api::proto;
use serde_json::json;

use super::BundleFormat;

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Output {
    Pretty,
    Json,
}

fn ttl(seconds: i32) -> String {
    if seconds == 0 {
        "default".into()
    } else {
        seconds.to_string()
    }
}

fn entry_json(e: &proto::Entry) -> serde_json::Value {
    json!({
        "id": e.id, "spiffe_id": e.spiffe_id, "parent_id": e.parent_id, "selectors": e.selectors,
        "x509_svid_ttl": e.x509_svid_ttl, "jwt_svid_ttl": e.jwt_svid_ttl, "dns_names": e.dns_names,
        "federates_with": e.federates_with, "admin": e.admin, "downstream": e.downstream,
        "hint": e.hint, "created_at": e.created_at, "revision": e.revision,
    })
}

fn agent_json(a: &proto::Agent) -> serde_json::Value {
    json!({
        "spiffe_id": a.spiffe_id, "attestation_type": a.attestation_type, "selectors": a.selectors,
        "serial": a.serial, "expires_at": a.expires_at, "banned": a.banned,
        "can_reattest": a.can_reattest, "created_at": a.created_at,
    })
}

impl Output {
    pub(crate) fn entries(self, entries: &[proto::Entry]) {
        match self {
            Self::Json => println!(
                "{}",
                json!({ "entries": entries.iter().map(entry_json).collect::<Vec<_>>() })
            ),
            Self::Pretty => {
                let noun = if entries.len() == 1 {
                    "entry"
                } else {
                    "entries"
                };
                println!("Found {} {noun}", entries.len());
                for e in entries {
                    println!("Entry ID         : {}", e.id);
                    println!("SPIFFE ID        : {}", e.spiffe_id);
                    println!("Parent ID        : {}", e.parent_id);
                    println!("Revision         : {}", e.revision);
                    println!("X509-SVID TTL    : {}", ttl(e.x509_svid_ttl));
                    println!("JWT-SVID TTL     : {}", ttl(e.jwt_svid_ttl));
                    for s in &e.selectors {
                        println!("Selector         : {s}");
                    }
                    for d in &e.dns_names {
                        println!("DNS name         : {d}");
                    }
                    for f in &e.federates_with {
                        println!("FederatesWith    : {f}");
                    }
                    if e.admin {
                        println!("Admin            : true");
                    }
                    if e.downstream {
                        println!("Downstream       : true");
                    }
                    if !e.hint.is_empty() {
                        println!("Hint             : {}", e.hint);
                    }
                    println!();
                }
            }
        }
    }

    pub(crate) fn agents(self, agents: &[proto::Agent]) {
        match self {
            Self::Json => println!(
                "{}",
                json!({ "agents": agents.iter().map(agent_json).collect::<Vec<_>>() })
            ),
            Self::Pretty => {
                let noun = if agents.len() == 1 {
                    "attested agent"
                } else {
                    "attested agents"
                };
                println!("Found {} {noun}:\n", agents.len());
                for a in agents {
                    println!("SPIFFE ID         : {}", a.spiffe_id);
                    println!("Attestation type  : {}", a.attestation_type);
                    println!("Expiration time   : {}", a.expires_at);
                    println!("Serial number     : {}", a.serial);
                    println!("Can re-attest     : {}", a.can_reattest);
                    println!("Banned            : {}", a.banned);
                    for s in &a.selectors {
                        println!("Selector          : {s}");
                    }
                    println!();
                }
            }
        }
    }

    pub(crate) fn templates(self, templates: &[proto::IdentityTemplate]) {
        match self {
            Self::Json => println!(
                "{}",
                json!({ "templates": templates.iter().map(|t| json!({
                    "name": t.name, "spiffe_id_template": t.spiffe_id_template,
                    "pod_selector": t.pod_selector, "namespace_selector": t.namespace_selector,
                    "workload_selector_templates": t.workload_selector_templates,
                    "dns_name_templates": t.dns_name_templates, "x509_svid_ttl": t.x509_svid_ttl,
                    "jwt_svid_ttl": t.jwt_svid_ttl, "federates_with": t.federates_with, "hint": t.hint,
                })).collect::<Vec<_>>() })
            ),
            Self::Pretty => {
                println!("Found {} template(s)", templates.len());
                for t in templates {
                    println!("Name             : {}", t.name);
                    println!("SPIFFE ID        : {}", t.spiffe_id_template);
                    for (k, v) in &t.pod_selector {
                        println!("Pod selector     : {k}={v}");
                    }
                    for (k, v) in &t.namespace_selector {
                        println!("Namespace sel.   : {k}={v}");
                    }
                    println!("X509-SVID TTL    : {}", ttl(t.x509_svid_ttl));
                    println!();
                }
            }
        }
    }

    pub(crate) fn token(self, token: &proto::JoinToken) {
        match self {
            Self::Json => println!(
                "{}",
                json!({ "value": token.token, "spiffe_id": token.spiffe_id, "expires_at": token.expires_at })
            ),
            Self::Pretty => {
                println!("Token: {}", token.token);
                println!("SPIFFE ID: {}", token.spiffe_id);
            }
        }
    }

    pub(crate) fn deleted(self, id: &str) {
        self.done(&format!("Deleted entry with ID: {id}"));
    }

    pub(crate) fn relationships(self, relationships: &[proto::FederationRelationship]) {
        match self {
            Self::Json => println!(
                "{}",
                json!({ "relationships": relationships.iter().map(|r| json!({
                    "trust_domain": r.trust_domain,
                    "bundle_endpoint_url": r.bundle_endpoint_url,
                    "bundle_endpoint_profile": r.bundle_endpoint_profile,
                    "endpoint_spiffe_id": r.endpoint_spiffe_id,
                    "managed_by": r.managed_by,
                })).collect::<Vec<_>>() })
            ),
            Self::Pretty => {
                println!("Found {} federation relationship(s)", relationships.len());
                for r in relationships {
                    println!();
                    println!("Trust domain              : {}", r.trust_domain);
                    println!("Bundle endpoint URL       : {}", r.bundle_endpoint_url);
                    println!("Bundle endpoint profile   : {}", r.bundle_endpoint_profile);
                    if !r.endpoint_spiffe_id.is_empty() {
                        println!("Endpoint SPIFFE ID        : {}", r.endpoint_spiffe_id);
                    }
                    if !r.managed_by.is_empty() {
                        println!("Managed by                : {}", r.managed_by);
                    }
                }
            }
        }
    }

    pub(crate) fn done(self, message: &str) {
        match self {
            Self::Json => println!("{}", json!({ "result": message })),
            Self::Pretty => println!("{message}"),
        }
    }
}

pub(crate) fn bundle(b: &proto::Bundle, format: BundleFormat, with_header: bool) {
    if with_header {
        println!("****************************************");
        println!("* spiffe://{}", b.trust_domain);
        println!("****************************************");
    }
    match format {
        BundleFormat::Spiffe => println!("{}", b.jwks),
        BundleFormat::Pem => {
            for der in &b.x509_authorities {
                print!("{}", pem(der));
            }
        }
    }
}

fn pem(der: &[u8]) -> String {
    meshward_spiffe::pem::encode("CERTIFICATE", der)
}
