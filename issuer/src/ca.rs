//! The certificate authority: signing CA generations, their rotation, and the keys
//! on disk.
//!
//! A generation is one signing CA (ECDSA P-256) plus one JWT signing key. Without an
//! upstream CA each generation is a self-signed root (SPIRE's default); with one, it
//! is an intermediate signed by the upstream key and the bundle carries the upstream
//! root. Rotation follows SPIRE: the next generation is *prepared* (and published in
//! the bundle) at 1/2 of the active one's life, and *activated* at 5/6; a generation
//! stays in the bundle until it expires, so verification never breaks.
//!
//! Which generation is active is derived from the generations' validity alone
//! (generation i becomes active at 5/6 of generation i-1's life), so a restart
//! needs nothing but the files `<data_dir>/ca/<id>/{ca.pem, jwt.kid}` and the
//! generation's two keys, which its [`KeyManager`] keeps: `ca.key` and `jwt.key`
//! beside them (files, mode 0600), or in a PKCS#11 token, where they are made and
//! sign and which destroys them when the generation expires.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;

use crate::error::CaError;
use crate::jwt::JwtKey;
use crate::keys::files::FileKeys;
use crate::keys::{CaSigner, KeyManager, KeyRole};
use meshward_spiffe::{TrustDomain, pem};

/// Certificates are backdated this much to absorb clock skew between machines.
pub(crate) const BACKDATE: Duration = Duration::from_secs(10);

/// An upstream CA given as files (where AWS Private CA or an enterprise CA plugs in).
pub struct UpstreamCa {
    /// The upstream signing certificate first, then its issuers up to the root.
    chain: Vec<CertificateDer<'static>>,
    key: KeyPair,
    not_after: SystemTime,
}

impl UpstreamCa {
    /// Reads a PEM chain (signing certificate first, root last) and its PKCS#8 key.
    pub fn from_files(chain_path: &Path, key_path: &Path) -> Result<Self, CaError> {
        let read = |p: &Path| fs::read_to_string(p).map_err(|e| CaError::io(p, e));
        let chain = pem::certificates(&read(chain_path)?)
            .map_err(|e| CaError::upstream(chain_path)(e.into()))?;
        let key = KeyPair::from_pem(&read(key_path)?)
            .map_err(|e| CaError::upstream(key_path)(e.into()))?;
        let first = chain
            .first()
            .ok_or_else(|| CaError::upstream(chain_path)("no certificate".into()))?;
        let parsed = x509_parser::parse_x509_certificate(first)
            .map(|(_, c)| c)
            .map_err(|e| CaError::upstream(chain_path)(e.into()))?;
        if !parsed.is_ca() {
            return Err(CaError::upstream(chain_path)(
                "the first certificate is not a CA".into(),
            ));
        }
        if parsed.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice()
        {
            return Err(CaError::upstream(key_path)(
                format!(
                    "the key does not belong to the first certificate of {}",
                    chain_path.display()
                )
                .into(),
            ));
        }
        let not_after = to_system_time(parsed.validity().not_after.timestamp());
        Ok(Self {
            chain,
            key,
            not_after,
        })
    }

    /// The root (last) certificate: what the bundle carries in upstream mode.
    fn root(&self) -> &CertificateDer<'static> {
        // from_files guarantees a non-empty chain
        &self.chain[self.chain.len() - 1]
    }
}

/// One signing CA generation.
pub struct SigningCa {
    id: String,
    cert: CertificateDer<'static>,
    /// Certificates an SVID chain carries after the leaf: this CA when it is an
    /// intermediate, and the upstream intermediates (never the root).
    chain_tail: Vec<CertificateDer<'static>>,
    /// The signing key with the subject and key ID, parsed once.
    issuer: Issuer<'static, CaSigner>,
    jwt: JwtKey,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl SigningCa {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    pub(crate) fn chain_tail(&self) -> &[CertificateDer<'static>] {
        &self.chain_tail
    }

    pub(crate) fn issuer(&self) -> &Issuer<'static, CaSigner> {
        &self.issuer
    }

    pub fn jwt_key(&self) -> &JwtKey {
        &self.jwt
    }

    fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }

    fn at_fraction(&self, numerator: u32, denominator: u32) -> SystemTime {
        self.not_before + self.lifetime() * numerator / denominator
    }
}

/// What `rotate` did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rotation {
    pub prepared: Option<String>,
    pub removed: Vec<String>,
}

impl Rotation {
    /// Whether the bundle changed.
    pub fn changed(&self) -> bool {
        self.prepared.is_some() || !self.removed.is_empty()
    }
}

/// Every unexpired generation, oldest first, and how new ones are made.
pub struct Authority {
    maker: Arc<GenerationMaker>,
    /// Shared with signers on other threads; each lives until the last one is done.
    generations: Vec<Arc<SigningCa>>,
}

/// What makes and discards generations: the trust domain, the CA's life, where
/// certificates go, the upstream CA, the key manager. Its calls may block (a token
/// makes the keys): a caller on an async runtime runs them on its blocking pool,
/// without holding the [`Authority`].
pub struct GenerationMaker {
    trust_domain: TrustDomain,
    ttl: Duration,
    dir: PathBuf,
    upstream: Option<UpstreamCa>,
    keys: Arc<dyn KeyManager>,
}

impl Authority {
    /// Loads the generations under `<data_dir>/ca`, drops expired ones, and makes the
    /// first generation when there is none; keys as files beside them.
    pub fn load_or_init(
        data_dir: &Path,
        trust_domain: &TrustDomain,
        ttl: Duration,
        upstream: Option<UpstreamCa>,
        now: SystemTime,
    ) -> Result<Self, CaError> {
        let keys = Arc::new(FileKeys::new(&data_dir.join("ca")));
        Self::load_or_init_with(data_dir, trust_domain, ttl, upstream, keys, now)
    }

    /// As [`Authority::load_or_init`], the keys kept by `keys`.
    pub fn load_or_init_with(
        data_dir: &Path,
        trust_domain: &TrustDomain,
        ttl: Duration,
        upstream: Option<UpstreamCa>,
        keys: Arc<dyn KeyManager>,
        now: SystemTime,
    ) -> Result<Self, CaError> {
        let dir = data_dir.join("ca");
        fs::create_dir_all(&dir).map_err(|e| CaError::io(&dir, e))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| CaError::io(&dir, e))?;
        let mut generations = Vec::new();
        let mut entries: Vec<PathBuf> = fs::read_dir(&dir)
            .map_err(|e| CaError::io(&dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("ca.pem").exists())
            .collect();
        entries.sort();
        for path in entries {
            if let Some(generation) = load_generation(&path, keys.as_ref(), now)? {
                generations.push(Arc::new(generation));
            }
        }
        generations.sort_by_key(|g| g.not_before);
        let mut authority = Self {
            maker: Arc::new(GenerationMaker {
                trust_domain: trust_domain.clone(),
                ttl,
                dir,
                upstream,
                keys,
            }),
            generations,
        };
        let expired = authority.take_expired(now);
        authority.maker.discard_all(&expired);
        if authority.generations.is_empty() {
            let first = authority.maker.create(now)?;
            authority.add_generation(first);
        }
        Ok(authority)
    }

    /// Prepares the next generation at 1/2 of the active one's life; drops expired
    /// ones. Activation at 5/6 needs no action: `active` derives it from the clock.
    /// The same steps one by one, for a caller that must not hold the authority
    /// while keys are made: [`Authority::take_expired`],
    /// [`Authority::preparation_due`], [`GenerationMaker`], [`Authority::add_generation`].
    pub fn rotate(&mut self, now: SystemTime) -> Result<Rotation, CaError> {
        let expired = self.take_expired(now);
        let mut rotation = Rotation {
            removed: self.maker.discard_all(&expired),
            ..Rotation::default()
        };
        if self.preparation_due(now) {
            let next = self.maker.create(now)?;
            rotation.prepared = Some(next.id.clone());
            self.add_generation(next);
        }
        Ok(rotation)
    }

    /// Whether the next generation is due: none left, or the newest is half way.
    pub fn preparation_due(&self, now: SystemTime) -> bool {
        self.generations
            .last()
            .is_none_or(|newest| now >= newest.at_fraction(1, 2))
    }

    /// Removes the expired generations; their keys are still to be discarded
    /// ([`GenerationMaker::discard_all`]).
    pub fn take_expired(&mut self, now: SystemTime) -> Vec<Arc<SigningCa>> {
        let (expired, live): (Vec<_>, Vec<_>) = std::mem::take(&mut self.generations)
            .into_iter()
            .partition(|g| g.not_after <= now);
        self.generations = live;
        expired
    }

    /// Adds a generation made by [`GenerationMaker::create`].
    pub fn add_generation(&mut self, generation: SigningCa) {
        self.generations.push(Arc::new(generation));
        self.generations.sort_by_key(|g| g.not_before);
    }

    /// What makes this authority's generations.
    pub fn maker(&self) -> Arc<GenerationMaker> {
        self.maker.clone()
    }

    /// The generation that signs now.
    pub fn active(&self, now: SystemTime) -> Result<&Arc<SigningCa>, CaError> {
        self.active_among(now, |_| true)
    }

    /// The generation that signs now among those `usable` admits: a generation
    /// not yet published in the shared bundle must not sign (verifiers would not
    /// know it), so the one before it goes on signing until it expires.
    pub fn active_among(
        &self,
        now: SystemTime,
        usable: impl Fn(&SigningCa) -> bool,
    ) -> Result<&Arc<SigningCa>, CaError> {
        let candidates: Vec<&Arc<SigningCa>> =
            self.generations.iter().filter(|g| usable(g)).collect();
        let mut active = *candidates.first().ok_or(CaError::NoActiveCa)?;
        for pair in candidates.windows(2) {
            if now >= pair[0].at_fraction(5, 6) {
                active = pair[1];
            }
        }
        if now >= active.not_after {
            return Err(CaError::NoActiveCa);
        }
        Ok(active)
    }

    /// Every generation (prepared, active, and older unexpired ones).
    pub fn generations(&self) -> &[Arc<SigningCa>] {
        &self.generations
    }

    /// The X.509 authorities of the bundle: every unexpired generation, or the
    /// upstream root in upstream mode.
    pub fn x509_authorities(&self) -> Vec<CertificateDer<'static>> {
        match &self.maker.upstream {
            Some(upstream) => vec![upstream.root().clone()],
            None => self.generations.iter().map(|g| g.cert.clone()).collect(),
        }
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.maker.trust_domain
    }

    /// Whether the generations are intermediates under an upstream CA.
    pub fn is_upstream(&self) -> bool {
        self.maker.upstream.is_some()
    }
}

impl GenerationMaker {
    /// Destroys the keys of `expired` generations, then their directories; returns
    /// their IDs.
    pub fn discard_all(&self, expired: &[Arc<SigningCa>]) -> Vec<String> {
        expired
            .iter()
            .map(|g| {
                // the keys first (a token's are gone only when destroyed), then the directory
                discard(self.keys.as_ref(), &self.dir.join(&g.id), &g.id);
                g.id.clone()
            })
            .collect()
    }

    /// A new generation: its keys, its certificate, its files.
    pub fn create(&self, now: SystemTime) -> Result<SigningCa, CaError> {
        let serial = crate::random::serial()?;
        let id = format!(
            "{}-{}",
            now.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
            &crate::random::hex(&serial)[..8]
        );
        match self.make_generation(&id, &serial, now) {
            Ok(generation) => Ok(generation),
            Err(e) => {
                // no half-made generation stays behind: keys made so far, its directory
                discard(self.keys.as_ref(), &self.dir.join(&id), &id);
                Err(e)
            }
        }
    }

    /// Generation `id`: its keys (from the key manager), certificate and files.
    fn make_generation(
        &self,
        id: &str,
        serial: &[u8],
        now: SystemTime,
    ) -> Result<SigningCa, CaError> {
        let not_before = now - BACKDATE;
        let mut not_after = now + self.ttl;
        if let Some(upstream) = &self.upstream {
            not_after = not_after.min(upstream.not_after);
        }
        if not_after <= now {
            let path = self.dir.clone();
            return Err(CaError::Upstream {
                path,
                source: "the upstream CA has expired".into(),
            });
        }
        let key = CaSigner(
            self.keys
                .generate(id, KeyRole::Ca)
                .map_err(CaError::keys(id))?,
        );
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, "US");
        dn.push(DnType::OrganizationName, "meshward");
        dn.push(DnType::CommonName, format!("meshward CA {id}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let td_id = self.trust_domain.id();
        params.subject_alt_names =
            vec![SanType::URI(td_id.as_str().try_into().map_err(
                |e: rcgen::Error| CaError::crypto("the CA's URI SAN")(e.into()),
            )?)];
        params.serial_number = Some(SerialNumber::from_slice(serial));
        params.not_before = to_offset(not_before);
        params.not_after = to_offset(not_after);
        params.use_authority_key_identifier_extension = self.upstream.is_some();
        let (cert, chain_tail) = match &self.upstream {
            None => {
                let cert = params
                    .self_signed(&key)
                    .map_err(|e| CaError::crypto("self-signing the CA")(e.into()))?;
                (cert.der().clone(), Vec::new())
            }
            Some(upstream) => {
                let issuer = Issuer::from_ca_cert_der(&upstream.chain[0], &upstream.key)
                    .map_err(|e| CaError::crypto("reading the upstream CA")(e.into()))?;
                let cert = params
                    .signed_by(&key, &issuer)
                    .map_err(|e| CaError::crypto("the upstream CA signing ours")(e.into()))?;
                let mut tail = vec![cert.der().clone()];
                // upstream intermediates, without the root
                tail.extend(upstream.chain[..upstream.chain.len() - 1].iter().cloned());
                (cert.der().clone(), tail)
            }
        };
        let jwt = JwtKey::new(
            self.keys
                .generate(id, KeyRole::Jwt)
                .map_err(CaError::keys(id))?,
            &crate::random::hex_token(16)?,
        )?;
        let generation = SigningCa {
            id: id.to_owned(),
            issuer: Issuer::from_ca_cert_der(&cert, key)
                .map_err(|e| CaError::crypto("reading the new CA")(e.into()))?,
            cert,
            chain_tail,
            jwt,
            not_before,
            not_after,
        };
        store_generation(&self.dir.join(id), &generation)?;
        Ok(generation)
    }
}

fn store_generation(dir: &Path, g: &SigningCa) -> Result<(), CaError> {
    fs::create_dir_all(dir).map_err(|e| CaError::io(dir, e))?;
    let mut chain_pem = pem::certificate(&g.cert);
    for c in &g.chain_tail[usize::from(!g.chain_tail.is_empty())..] {
        chain_pem.push_str(&pem::certificate(c));
    }
    write_file(&dir.join("ca.pem"), chain_pem.as_bytes(), 0o644)?;
    write_file(&dir.join("jwt.kid"), g.jwt.kid().as_bytes(), 0o644)
}

/// The generation in `dir`, or `None` when it has expired: then its keys are
/// destroyed and the directory removed (best effort), before its keys are looked
/// for, so a generation whose keys went first does not stop a start.
fn load_generation(
    dir: &Path,
    keys: &dyn KeyManager,
    now: SystemTime,
) -> Result<Option<SigningCa>, CaError> {
    let read = |name: &str| {
        let p = dir.join(name);
        fs::read_to_string(&p).map_err(|e| CaError::io(&p, e))
    };
    let chain = pem::certificates(&read("ca.pem")?)
        .map_err(|e| CaError::corrupt(&dir.join("ca.pem"))(e.into()))?;
    let id = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    let cert = chain
        .first()
        .cloned()
        .ok_or_else(|| CaError::corrupt(&dir.join("ca.pem"))("no certificate".into()))?;
    let parsed = parse(&cert, &dir.join("ca.pem"))?;
    if to_system_time(parsed.validity().not_after.timestamp()) <= now {
        discard(keys, dir, &id);
        return Ok(None);
    }
    let key = CaSigner(keys.find(&id, KeyRole::Ca).map_err(CaError::keys(&id))?);
    let jwt = JwtKey::new(
        keys.find(&id, KeyRole::Jwt).map_err(CaError::keys(&id))?,
        read("jwt.kid")?.trim(),
    )
    .map_err(|e| CaError::corrupt(&dir.join("jwt.kid"))(e.into()))?;
    let self_signed = parsed.subject() == parsed.issuer();
    let chain_tail = if self_signed { Vec::new() } else { chain };
    if parsed.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice() {
        return Err(CaError::corrupt(&dir.join("ca.pem"))(
            format!("its key is not the CA key the {} holds", keys.describe()).into(),
        ));
    }
    Ok(Some(SigningCa {
        id,
        not_before: to_system_time(parsed.validity().not_before.timestamp()),
        not_after: to_system_time(parsed.validity().not_after.timestamp()),
        issuer: Issuer::from_ca_cert_der(&cert, key)
            .map_err(|e| CaError::corrupt(&dir.join("ca.pem"))(e.into()))?,
        cert,
        chain_tail,
        jwt,
    }))
}

/// Destroys generation `id`'s keys, then its directory `dir`; best effort (what
/// is left of an expired generation is dropped again at the next load).
fn discard(keys: &dyn KeyManager, dir: &Path, id: &str) {
    match keys.destroy(id) {
        Ok(()) => {
            let _ = fs::remove_dir_all(dir);
        }
        Err(e) => tracing::warn!("CA generation {id}: its keys stay: {e}"),
    }
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| CaError::io(&tmp, e))?;
    file.write_all(contents).map_err(|e| CaError::io(&tmp, e))?;
    file.sync_all().map_err(|e| CaError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| CaError::io(path, e))
}

/// A certificate read from `path`.
fn parse<'a>(
    der: &'a CertificateDer<'_>,
    path: &Path,
) -> Result<x509_parser::certificate::X509Certificate<'a>, CaError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c)
        .map_err(|e| CaError::corrupt(path)(e.into()))
}

pub(crate) fn to_offset(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

pub(crate) fn to_system_time(unix: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64)
}

#[cfg(test)]
mod tests;
