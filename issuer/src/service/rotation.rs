//! The CA rotation step off the async workers: a key manager's calls block (a
//! token makes and destroys keys, perhaps over the network), so they run on the
//! blocking pool, and the authority's lock is held only to take and add
//! generations, never while keys are made: signing goes on meanwhile.

use std::sync::RwLockWriteGuard;
use std::time::SystemTime;

use super::{Issuer, Result, ServiceError};
use crate::ca::{Authority, Rotation};
use crate::datastore::Datastore;

impl<D: Datastore> Issuer<D> {
    /// [`Authority::rotate`], its blocking calls on the blocking pool.
    pub(super) async fn rotate_authority(&self, now: SystemTime) -> Result<Rotation> {
        let (expired, due, maker) = {
            let mut authority = self.write_authority()?;
            let expired = authority.take_expired(now);
            (expired, authority.preparation_due(now), authority.maker())
        };
        let (removed, prepared) = tokio::task::spawn_blocking(move || {
            let removed = maker.discard_all(&expired);
            let prepared = if due { Some(maker.create(now)) } else { None };
            (removed, prepared)
        })
        .await
        .map_err(|e| ServiceError::Internal(Box::new(e)))?;
        let mut rotation = Rotation {
            removed,
            prepared: None,
        };
        if let Some(prepared) = prepared {
            let generation = prepared?;
            rotation.prepared = Some(generation.id().to_owned());
            self.write_authority()?.add_generation(generation);
        }
        Ok(rotation)
    }

    fn write_authority(&self) -> Result<RwLockWriteGuard<'_, Authority>> {
        self.authority
            .write()
            .map_err(|_| ServiceError::Internal("CA state lock poisoned".into()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::datastore::SqlStore;
    use crate::keys::files::FileKeys;
    use crate::keys::{CaKey, KeyError, KeyManager, KeyRole};
    use crate::service::Settings;
    use crate::x509::SvidTemplate;

    /// File keys whose generation, once armed, waits until the gate opens: a slow
    /// token.
    struct Gated {
        files: FileKeys,
        armed: AtomicBool,
        entered: AtomicBool,
        gate: (Mutex<bool>, Condvar),
    }

    impl KeyManager for Gated {
        fn describe(&self) -> String {
            "gated".into()
        }

        fn generate(
            &self,
            generation: &str,
            role: KeyRole,
        ) -> std::result::Result<Arc<dyn CaKey>, KeyError> {
            if self.armed.load(Ordering::SeqCst) {
                self.entered.store(true, Ordering::SeqCst);
                let mut open = self.gate.0.lock().unwrap();
                while !*open {
                    open = self.gate.1.wait(open).unwrap();
                }
            }
            self.files.generate(generation, role)
        }

        fn find(
            &self,
            generation: &str,
            role: KeyRole,
        ) -> std::result::Result<Arc<dyn CaKey>, KeyError> {
            self.files.find(generation, role)
        }

        fn destroy(&self, generation: &str) -> std::result::Result<(), KeyError> {
            self.files.destroy(generation)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn signing_goes_on_while_the_next_generation_s_keys_are_made() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(Gated {
            files: FileKeys::new(&dir.path().join("ca")),
            armed: AtomicBool::new(false),
            entered: AtomicBool::new(false),
            gate: (Mutex::new(false), Condvar::new()),
        });
        let day = Duration::from_secs(86_400);
        let td = meshward_spiffe::TrustDomain::parse("td").unwrap();
        let now = SystemTime::now();
        let authority =
            Authority::load_or_init_with(dir.path(), &td, day, None, keys.clone(), now).unwrap();
        let store = SqlStore::connect(&format!("sqlite://{}/db.sqlite3", dir.path().display()))
            .await
            .unwrap();
        let settings = Settings {
            trust_domain: td,
            instance: "issuer-0".into(),
            default_x509_svid_ttl: Duration::from_secs(3600),
            default_jwt_svid_ttl: Duration::from_secs(300),
            jwt_issuer: None,
            agent_svid_ttl: Duration::from_secs(3600),
            join_token_ttl: Duration::from_secs(600),
            bundle_refresh_hint: Duration::from_secs(300),
        };
        let issuer = Arc::new(Issuer::new(settings, authority, store).await.unwrap());

        keys.armed.store(true, Ordering::SeqCst);
        let rotating = tokio::spawn({
            let issuer = issuer.clone();
            async move { issuer.rotate(now + day / 2).await }
        });
        while !keys.entered.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // the next generation's keys are being made: the authority is free, and
        // an SVID is signed meanwhile
        let free = issuer.authority.try_read().is_ok();
        let id = meshward_spiffe::SpiffeId::parse("spiffe://td/w").unwrap();
        let template = SvidTemplate {
            spiffe_id: &id,
            dns_names: &[],
            ip_addresses: &[],
            ttl: Duration::from_secs(60),
        };
        let signed = if free {
            Some(
                issuer
                    .sign(&meshward_test_support::p256_csr().1, &template)
                    .await,
            )
        } else {
            None
        };
        *keys.gate.0.lock().unwrap() = true;
        keys.gate.1.notify_all();
        assert!(free, "the authority is locked while keys are made");
        signed.unwrap().unwrap();
        assert!(
            rotating.await.unwrap().unwrap(),
            "a generation was prepared"
        );
        assert_eq!(issuer.read_authority().unwrap().generations().len(), 2);
    }
}
