//! A fresh PostgreSQL database per test, dropped afterwards.
//!
//! `scripts/test.sh` starts Debian's PostgreSQL and exports
//! `MESHWARD_TEST_POSTGRES_URL` (an admin URL). Without it, tests skip with a line
//! saying so; in CI (`CI=true`) that is a failure.

use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::Connection;

pub const URL_VAR: &str = "MESHWARD_TEST_POSTGRES_URL";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A database that exists for one test.
pub struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// `None` (after printing why) when no server is configured outside CI.
    pub async fn create(test: &str) -> Option<Self> {
        let admin_url = match std::env::var(URL_VAR) {
            Ok(url) => url,
            Err(_) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!(
                    "{test}: {URL_VAR} is not set; CI must run the PostgreSQL tests (scripts/test.sh starts the server)"
                )
            }
            Err(_) => {
                eprintln!(
                    "SKIPPED {test} on PostgreSQL: {URL_VAR} is not set (scripts/test.sh sets it)"
                );
                return None;
            }
        };
        let name = format!(
            "mwt_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("{test}: cannot reach PostgreSQL at {URL_VAR}: {e}"));
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
            .execute(&mut admin)
            .await
            .expect("drop a stale test database");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        Some(Self {
            admin_url,
            name,
            url,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop may run inside a runtime: do the async work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&admin_url).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .ok()
            })
        })
        .join();
    }
}
