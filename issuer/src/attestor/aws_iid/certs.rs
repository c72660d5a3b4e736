//! AWS's RSA-2048 certificates for instance identity signatures, by region. The
//! standard partition's are shipped (`aws-rsa2048.yaml`); a file of the same form
//! (`region: PEM`) replaces them, for other partitions and for tests.

use std::collections::BTreeMap;
use std::path::Path;

use x509_parser::prelude::{FromDer, X509Certificate};

const SHIPPED: &str = include_str!("aws-rsa2048.yaml");
const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";

/// One RSA public key (PKCS#1 DER) per region.
#[derive(Debug, Clone)]
pub struct RegionCerts(BTreeMap<String, Vec<u8>>);

impl RegionCerts {
    /// The certificates AWS publishes for its standard, China and GovCloud regions.
    pub fn shipped() -> Result<Self, String> {
        Self::from_yaml(SHIPPED, "the shipped AWS certificates")
    }

    /// A `region: PEM` file.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    pub fn from_yaml(text: &str, source: &str) -> Result<Self, String> {
        let regions: BTreeMap<String, String> =
            meshward_config::parse_yaml(text, source).map_err(|e| e.to_string())?;
        if regions.is_empty() {
            return Err(format!("{source}: no region certificates"));
        }
        let mut keys = BTreeMap::new();
        for (region, pem) in regions {
            let key = rsa_key(&pem).map_err(|e| format!("{source}: region {region}: {e}"))?;
            keys.insert(region, key);
        }
        Ok(Self(keys))
    }

    /// The region's key, if AWS (or the override) has one for it.
    pub fn key(&self, region: &str) -> Option<&[u8]> {
        self.0.get(region).map(Vec::as_slice)
    }

    pub fn regions(&self) -> usize {
        self.0.len()
    }
}

/// The RSA public key of the one certificate in `pem`.
fn rsa_key(pem: &str) -> Result<Vec<u8>, String> {
    let certs = meshward_spiffe::pem::certificates(pem).map_err(|e| e.to_string())?;
    let [cert] = certs.as_slice() else {
        return Err(format!("expected one certificate, found {}", certs.len()));
    };
    let (_, cert) = X509Certificate::from_der(cert).map_err(|e| e.to_string())?;
    let spki = cert.public_key();
    if spki.algorithm.algorithm.to_id_string() != RSA_ENCRYPTION {
        return Err("not an RSA certificate (AWS signs with RSA-2048)".into());
    }
    Ok(spki.subject_public_key.data.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_certificates_are_shipped_for_every_region() {
        let certs = RegionCerts::shipped().unwrap();
        assert!(certs.regions() >= 39, "{}", certs.regions());
        for region in ["us-east-1", "eu-west-1", "cn-north-1", "us-gov-west-1"] {
            assert!(certs.key(region).is_some(), "{region}");
        }
        assert!(certs.key("moon-1").is_none());
    }

    #[test]
    fn an_override_file_is_checked() {
        assert!(RegionCerts::from_yaml("us-east-1: not a cert\n", "f").is_err());
        assert!(RegionCerts::from_yaml("", "f").is_err());
    }
}
