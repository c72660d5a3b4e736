//! CA keys as files: `<ca_dir>/<generation>/ca.key` and `jwt.key`, PKCS#8 PEM,
//! mode 0600, written atomically. The layout existing data directories have.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use meshward_spiffe::pem;

use super::{CaKey, KeyError, KeyManager, KeyRole};

/// Keys under `<data_dir>/ca`.
pub struct FileKeys {
    dir: PathBuf,
}

impl FileKeys {
    /// `dir`: the CA directory (`<data_dir>/ca`).
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }

    fn path(&self, generation: &str, role: KeyRole) -> PathBuf {
        self.dir
            .join(generation)
            .join(format!("{}.key", role.name()))
    }
}

impl KeyManager for FileKeys {
    fn describe(&self) -> String {
        format!("key files under {}", self.dir.display())
    }

    fn generate(&self, generation: &str, role: KeyRole) -> Result<Arc<dyn CaKey>, KeyError> {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|e| KeyError::Crypto {
                    what: "P-256 key generation",
                    source: e.into(),
                })?;
        let path = self.path(generation, role);
        let key = FileKey::from_pkcs8(pkcs8.as_ref(), &path)?;
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|source| KeyError::Io {
                path: dir.to_owned(),
                source,
            })?;
        }
        write_private(&path, pem::encode("PRIVATE KEY", pkcs8.as_ref()).as_bytes())?;
        Ok(Arc::new(key))
    }

    fn find(&self, generation: &str, role: KeyRole) -> Result<Arc<dyn CaKey>, KeyError> {
        let path = self.path(generation, role);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyError::NotFound {
                    manager: self.describe(),
                    generation: generation.to_owned(),
                    role: role.name(),
                });
            }
            Err(source) => return Err(KeyError::Io { path, source }),
        };
        let der = pem::block(&text, "PRIVATE KEY").map_err(|e| KeyError::BadKeyFile {
            path: path.clone(),
            source: e.into(),
        })?;
        Ok(Arc::new(FileKey::from_pkcs8(&der, &path)?))
    }

    fn destroy(&self, generation: &str) -> Result<(), KeyError> {
        for role in [KeyRole::Ca, KeyRole::Jwt] {
            let path = self.path(generation, role);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(KeyError::Io { path, source }),
            }
        }
        Ok(())
    }
}

/// A key held in memory, read from its file.
struct FileKey {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl FileKey {
    fn from_pkcs8(der: &[u8], path: &Path) -> Result<Self, KeyError> {
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der).map_err(|e| {
                KeyError::BadKeyFile {
                    path: path.to_owned(),
                    source: e.into(),
                }
            })?;
        Ok(Self {
            pair,
            rng: SystemRandom::new(),
        })
    }
}

impl CaKey for FileKey {
    fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    fn sign(&self, message: &[u8]) -> Result<[u8; 64], KeyError> {
        let signature = self
            .pair
            .sign(&self.rng, message)
            .map_err(|e| KeyError::Crypto {
                what: "ECDSA signature",
                source: e.into(),
            })?;
        signature.as_ref().try_into().map_err(|_| KeyError::Crypto {
            what: "ECDSA signature",
            source: "not 64 bytes".into(),
        })
    }
}

/// Writes `contents` to `path` (mode 0600) through a temporary file and a rename.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), KeyError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| KeyError::Io { path, source }
    };
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    file.write_all(contents).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}
