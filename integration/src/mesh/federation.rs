//! Federation between the clusters of a [`Mesh`], done the way an operator does
//! it: `meshward issuer federation create` with a bootstrap bundle, and
//! `federatesWith` on the registration entries of the workloads that need it.

use super::Mesh;
use super::issuer::write;
use crate::error::{HarnessError, Result};

impl Mesh {
    /// Makes the issuer of `trust_domain` federate with the cluster of `with`
    /// (https_spiffe, bootstrapped with `with`'s current bundle). Returns the
    /// commands, as a user would type them.
    pub fn federate(&self, trust_domain: &str, with: &str) -> Result<Vec<String>> {
        let partner = self.issuer_of(with)?;
        let bootstrap = self
            .cluster
            .log_dir()
            .join(format!("{trust_domain}-bootstrap-{with}.pem"));
        write(&bootstrap, &partner.cli(&self.bin, &["bundle", "show"])?)?;
        let url = partner.bundle_endpoint_url();
        let endpoint_id = format!("spiffe://{with}/spire/server");
        let bootstrap = bootstrap.display().to_string();
        let args = [
            "federation",
            "create",
            "-trustDomain",
            with,
            "-bundleEndpointURL",
            &url,
            "-bundleEndpointProfile",
            "https_spiffe",
            "-endpointSpiffeID",
            &endpoint_id,
            "-trustDomainBundlePath",
            &bootstrap,
            "-trustDomainBundleFormat",
            "pem",
        ];
        self.issuer_cli_of(trust_domain, &args)?;
        Ok(vec![
            format!("meshward issuer bundle show > {bootstrap}    # in {with}"),
            format!("meshward issuer {}    # in {trust_domain}", args.join(" ")),
        ])
    }

    /// Sets `federatesWith` of a registered pod's entry to `with` (trust domains;
    /// empty: none), in its own cluster's issuer. Returns the command.
    pub fn federate_pod(&self, pod: &str, with: &[&str]) -> Result<String> {
        let id = self.pod_spiffe_id(pod)?;
        let trust_domain = id
            .strip_prefix("spiffe://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default()
            .to_owned();
        let shown = self.issuer_cli_of(
            &trust_domain,
            &["entry", "show", "-spiffeID", &id, "-output", "json"],
        )?;
        let shown: serde_json::Value = serde_json::from_str(&shown)
            .map_err(|e| HarnessError::Invalid(format!("entry show: {e}: {shown}")))?;
        let entry = &shown["entries"][0];
        let field = |name: &str| {
            entry[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| HarnessError::Invalid(format!("no {name} in {shown}")))
        };
        let mut args = vec![
            "entry".to_owned(),
            "update".into(),
            "-entryID".into(),
            field("id")?,
            "-spiffeID".into(),
            id,
            "-parentID".into(),
            field("parent_id")?,
        ];
        if let Some(ttl) = entry["x509_svid_ttl"].as_u64() {
            args.extend(["-x509SVIDTTL".into(), ttl.to_string()]);
        }
        for selector in entry["selectors"].as_array().into_iter().flatten() {
            if let Some(selector) = selector.as_str() {
                args.extend(["-selector".into(), selector.to_owned()]);
            }
        }
        for td in with {
            args.extend(["-federatesWith".into(), format!("spiffe://{td}")]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.issuer_cli_of(&trust_domain, &args)?;
        Ok(format!(
            "meshward issuer {}    # in {trust_domain}",
            args.join(" ")
        ))
    }
}
