//! CA keys in a PKCS#11 token: generated there (`CKM_EC_KEY_PAIR_GEN`, P-256) as
//! token objects that are private, sensitive and never extractable; every
//! signature is `CKM_ECDSA` over a SHA-256 digest computed here, so only 32 bytes
//! travel to the token and the private key never leaves it. The process holds
//! object handles, never a private key byte.
//!
//! Keys are labelled `<prefix>/<generation>/ca` and `<prefix>/<generation>/jwt`
//! (CKA_LABEL and CKA_ID); generation IDs are unique (time + random), so issuer
//! replicas sharing one token each keep their own generations' keys and never
//! touch another's.
//!
//! Sessions: the PKCS#11 library is loaded and initialised once per process
//! (`C_Initialize` is process-wide); a pool of at most `MAX_SESSIONS` logged-in
//! read-write sessions serves the signing threads, one session per call at a
//! time (a session is not thread-safe); a signer finding none free waits for one. A session the token reports broken is dropped
//! and the call retried once on a fresh one (a network HSM that reconnects).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{
    Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use super::{CaKey, KeyError, KeyManager, KeyRole};
use crate::config::Pkcs11Config;

/// DER of the P-256 curve OID (CKA_EC_PARAMS).
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// Sessions open at once at most (HSMs limit them per client): a signer finding
/// none idle and this many open waits for one. Idle ones stay open (they keep the
/// login).
const MAX_SESSIONS: usize = 16;

/// The keys of one token, under one label prefix.
pub struct Pkcs11Keys {
    token: Arc<Token>,
    prefix: String,
}

struct Token {
    label: String,
    pkcs11: Pkcs11,
    slot: Slot,
    pin: AuthPin,
    sessions: Mutex<Sessions>,
    returned: Condvar,
}

/// The session pool: idle sessions, and how many are open (idle or in use).
#[derive(Default)]
struct Sessions {
    idle: Vec<Session>,
    open: usize,
}

impl Pkcs11Keys {
    #[cfg(test)]
    pub(crate) fn open_sessions(&self) -> usize {
        self.token.open_sessions()
    }

    /// Loads the library, finds the token by label, reads the PIN and logs in.
    pub fn open(config: &Pkcs11Config) -> Result<Self, KeyError> {
        let pin = read_pin(config)?;
        let pkcs11 = library(&config.library_path)?;
        let slot = find_token(&pkcs11, &config.library_path, &config.token_label)?;
        let token = Token {
            label: config.token_label.clone(),
            pkcs11,
            slot,
            pin,
            sessions: Mutex::default(),
            returned: Condvar::new(),
        };
        // log in now: a wrong PIN fails the start, not the first signature
        let session = token.take()?;
        token.put_back(session);
        Ok(Self {
            token: Arc::new(token),
            prefix: config.key_label_prefix.clone(),
        })
    }

    fn label(&self, generation: &str, role: KeyRole) -> String {
        format!("{}/{generation}/{}", self.prefix, role.name())
    }

    /// Every private key under this prefix, with what the token says about its
    /// protection: for operators and tests.
    pub fn audit(&self) -> Result<Vec<KeyAudit>, KeyError> {
        self.token.with_session("listing keys", |s| {
            let mut audits = Vec::new();
            for handle in s.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])? {
                let label = match s.get_attributes(handle, &[AttributeType::Label])?.first() {
                    Some(Attribute::Label(l)) => String::from_utf8_lossy(l).into_owned(),
                    _ => continue,
                };
                if !label.starts_with(&format!("{}/", self.prefix)) {
                    continue;
                }
                let mut audit = KeyAudit {
                    label,
                    ..KeyAudit::default()
                };
                for attribute in s.get_attributes(
                    handle,
                    &[
                        AttributeType::Token,
                        AttributeType::Private,
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                        AttributeType::NeverExtractable,
                    ],
                )? {
                    match attribute {
                        Attribute::Token(v) => audit.token = v,
                        Attribute::Private(v) => audit.private = v,
                        Attribute::Sensitive(v) => audit.sensitive = v,
                        Attribute::Extractable(v) => audit.extractable = v,
                        Attribute::NeverExtractable(v) => audit.never_extractable = v,
                        _ => {}
                    }
                }
                audit.value_refused = matches!(
                    s.get_attribute_info(handle, &[AttributeType::Value])?
                        .first(),
                    Some(AttributeInfo::Sensitive)
                );
                audits.push(audit);
            }
            Ok(audits)
        })
    }

    fn objects(&self, label: &str) -> Result<Vec<ObjectHandle>, KeyError> {
        let label = label.as_bytes().to_vec();
        self.token.with_session("finding keys", |s| {
            s.find_objects(&[Attribute::Label(label.clone())])
        })
    }
}

/// A private key as the token describes it (`Pkcs11Keys::audit`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyAudit {
    pub label: String,
    pub token: bool,
    pub private: bool,
    pub sensitive: bool,
    pub extractable: bool,
    pub never_extractable: bool,
    /// `C_GetAttributeValue(CKA_VALUE)` answered CKR_ATTRIBUTE_SENSITIVE.
    pub value_refused: bool,
}

impl KeyManager for Pkcs11Keys {
    fn describe(&self) -> String {
        format!("PKCS#11 token {:?}", self.token.label)
    }

    fn generate(&self, generation: &str, role: KeyRole) -> Result<Arc<dyn CaKey>, KeyError> {
        let label = self.label(generation, role);
        if !self.objects(&label)?.is_empty() {
            return Err(KeyError::Exists {
                manager: self.describe(),
                label,
            });
        }
        let id = label.as_bytes().to_vec();
        let public_template = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::KeyType(KeyType::EC),
            Attribute::EcParams(P256_PARAMS.to_vec()),
            Attribute::Label(id.clone()),
            Attribute::Id(id.clone()),
        ];
        let private_template = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::KeyType(KeyType::EC),
            Attribute::Label(id.clone()),
            Attribute::Id(id),
        ];
        let (public, private) = self.token.with_session("generating a P-256 key", |s| {
            s.generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &public_template,
                &private_template,
            )
        })?;
        let point = self.token.ec_point(public)?;
        let key = TokenKey {
            token: self.token.clone(),
            handle: private,
            public: point,
        };
        // the pair works before anything is signed with it
        let probe = b"meshward key check";
        if !super::verify(&key, probe, &key.sign(probe)?) {
            return Err(KeyError::Crypto {
                what: "the new token key",
                source: "its signature does not verify with its public key".into(),
            });
        }
        Ok(Arc::new(key))
    }

    fn find(&self, generation: &str, role: KeyRole) -> Result<Arc<dyn CaKey>, KeyError> {
        let label = self.label(generation, role).into_bytes();
        let not_found = || KeyError::NotFound {
            manager: self.describe(),
            generation: generation.to_owned(),
            role: role.name(),
        };
        let (private, public) = self.token.with_session("finding a key", |s| {
            let find = |class| {
                s.find_objects(&[Attribute::Class(class), Attribute::Label(label.clone())])
                    .map(|found| found.first().copied())
            };
            Ok((
                find(ObjectClass::PRIVATE_KEY)?,
                find(ObjectClass::PUBLIC_KEY)?,
            ))
        })?;
        let (Some(private), Some(public)) = (private, public) else {
            return Err(not_found());
        };
        Ok(Arc::new(TokenKey {
            token: self.token.clone(),
            handle: private,
            public: self.token.ec_point(public)?,
        }))
    }

    fn destroy(&self, generation: &str) -> Result<(), KeyError> {
        for role in [KeyRole::Ca, KeyRole::Jwt] {
            for handle in self.objects(&self.label(generation, role))? {
                self.token
                    .with_session("destroying a key", |s| s.destroy_object(handle))?;
            }
        }
        Ok(())
    }
}

/// A private key in the token: its handle, and the public point read once.
struct TokenKey {
    token: Arc<Token>,
    handle: ObjectHandle,
    public: Vec<u8>,
}

impl CaKey for TokenKey {
    fn public_key(&self) -> &[u8] {
        &self.public
    }

    fn sign(&self, message: &[u8]) -> Result<[u8; 64], KeyError> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message);
        let signature = self.token.with_session("signing", |s| {
            s.sign(&Mechanism::Ecdsa, self.handle, digest.as_ref())
        })?;
        signature
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::Crypto {
                what: "CKM_ECDSA signature",
                source: format!("{} bytes, not 64", signature.len()).into(),
            })
    }
}

impl Token {
    /// A logged-in session: an idle one, a new one while fewer than
    /// `MAX_SESSIONS` are open, else the next one returned.
    fn take(&self) -> Result<Session, KeyError> {
        let poisoned = || KeyError::Crypto {
            what: "PKCS#11 sessions",
            source: "lock poisoned".into(),
        };
        let mut sessions = self.sessions.lock().map_err(|_| poisoned())?;
        loop {
            if let Some(session) = sessions.idle.pop() {
                return Ok(session);
            }
            if sessions.open < MAX_SESSIONS {
                sessions.open += 1;
                break;
            }
            sessions = self.returned.wait(sessions).map_err(|_| poisoned())?;
        }
        drop(sessions);
        self.open_session().inspect_err(|_| self.forget())
    }

    /// A session closed (broken, or never opened): another may open.
    fn forget(&self) {
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.open = sessions.open.saturating_sub(1);
        }
        self.returned.notify_one();
    }

    #[cfg(test)]
    fn open_sessions(&self) -> usize {
        self.sessions.lock().map_or(0, |s| s.open)
    }

    fn open_session(&self) -> Result<Session, KeyError> {
        let error = |what| {
            let token = self.label.clone();
            move |source| KeyError::Token {
                token,
                what,
                source,
            }
        };
        let session = self
            .pkcs11
            .open_rw_session(self.slot)
            .map_err(error("opening a session"))?;
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(e) => Err(error("logging in with the user PIN")(e)),
        }
    }

    fn put_back(&self, session: Session) {
        match self.sessions.lock() {
            Ok(mut sessions) => sessions.idle.push(session),
            Err(_) => return,
        }
        self.returned.notify_one();
    }

    /// Runs `call` on a pooled session; a session the token calls broken is
    /// dropped and `call` runs once more on a new one.
    fn with_session<T>(
        &self,
        what: &'static str,
        call: impl Fn(&Session) -> Result<T, P11Error>,
    ) -> Result<T, KeyError> {
        let mut retried = false;
        loop {
            let session = self.take()?;
            match call(&session) {
                Ok(value) => {
                    self.put_back(session);
                    return Ok(value);
                }
                Err(e) if session_broken(&e) && !retried => {
                    tracing::warn!("PKCS#11 token {:?}: {what}: {e}; new session", self.label);
                    drop(session);
                    self.forget();
                    retried = true;
                }
                Err(source) => {
                    if session_broken(&source) {
                        drop(session);
                        self.forget();
                    } else {
                        self.put_back(session);
                    }
                    return Err(KeyError::Token {
                        token: self.label.clone(),
                        what,
                        source,
                    });
                }
            }
        }
    }

    /// The public key object's point, unwrapped from its DER OCTET STRING.
    fn ec_point(&self, public: ObjectHandle) -> Result<Vec<u8>, KeyError> {
        let attributes = self.with_session("reading a public key", |s| {
            s.get_attributes(public, &[AttributeType::EcPoint])
        })?;
        let Some(Attribute::EcPoint(der)) = attributes.first() else {
            return Err(KeyError::Crypto {
                what: "the token's public key",
                source: "no CKA_EC_POINT".into(),
            });
        };
        let point = match der.as_slice() {
            [0x04, 0x41, rest @ ..] if rest.len() == 65 => rest,
            raw if raw.len() == 65 => raw,
            _ => {
                return Err(KeyError::Crypto {
                    what: "the token's public key",
                    source: "CKA_EC_POINT is not an uncompressed P-256 point".into(),
                });
            }
        };
        if point[0] != 0x04 {
            return Err(KeyError::Crypto {
                what: "the token's public key",
                source: "CKA_EC_POINT is not an uncompressed P-256 point".into(),
            });
        }
        Ok(point.to_vec())
    }
}

fn session_broken(e: &P11Error) -> bool {
    matches!(
        e,
        P11Error::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::TokenNotPresent
                | RvError::UserNotLoggedIn,
            _
        )
    )
}

/// The library at `path`, loaded and initialised once per process: a second
/// `C_Initialize` is refused, and finalising one context would end the others.
fn library(path: &Path) -> Result<Pkcs11, KeyError> {
    static LIBRARIES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let error = |source| KeyError::Library {
        path: path.to_owned(),
        source,
    };
    let mut libraries =
        LIBRARIES
            .get_or_init(Mutex::default)
            .lock()
            .map_err(|_| KeyError::Crypto {
                what: "PKCS#11 libraries",
                source: "lock poisoned".into(),
            })?;
    if let Some(pkcs11) = libraries.get(path) {
        return Ok(pkcs11.clone());
    }
    let pkcs11 = Pkcs11::new(path).map_err(error)?;
    match pkcs11.initialize(CInitializeArgs::OsThreads) {
        Ok(()) | Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(error(e)),
    }
    libraries.insert(path.to_owned(), pkcs11.clone());
    Ok(pkcs11)
}

fn find_token(pkcs11: &Pkcs11, path: &Path, label: &str) -> Result<Slot, KeyError> {
    let error = |source| KeyError::Library {
        path: path.to_owned(),
        source,
    };
    let mut present = Vec::new();
    for slot in pkcs11.get_slots_with_token().map_err(error)? {
        let info = pkcs11.get_token_info(slot).map_err(error)?;
        let found = info.label().trim_end();
        if found == label {
            return Ok(slot);
        }
        present.push(format!("{found:?}"));
    }
    Err(KeyError::NoToken {
        label: label.to_owned(),
        present: if present.is_empty() {
            "none".into()
        } else {
            present.join(", ")
        },
    })
}

fn read_pin(config: &Pkcs11Config) -> Result<AuthPin, KeyError> {
    let pin = match (&config.pin_file, &config.pin_env) {
        (Some(file), _) => std::fs::read_to_string(file)
            .map_err(|e| KeyError::Pin {
                what: format!("{}: {e}", file.display()),
            })?
            .trim_end_matches(['\n', '\r'])
            .to_owned(),
        (None, Some(var)) => std::env::var(var).map_err(|e| KeyError::Pin {
            what: format!("environment variable {var}: {e}"),
        })?,
        (None, None) => {
            return Err(KeyError::Pin {
                what: "neither pin_file nor pin_env is set".into(),
            });
        }
    };
    if pin.is_empty() {
        return Err(KeyError::Pin {
            what: "the PIN is empty".into(),
        });
    }
    Ok(AuthPin::from(pin))
}
