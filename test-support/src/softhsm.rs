//! SoftHSM2 for the PKCS#11 tests: a private configuration (`SOFTHSM2_CONF`)
//! whose token directory is the test's own, a token initialised with
//! `softhsm2-util --init-token`, and the library path an operator would set
//! (`/usr/lib/softhsm/libsofthsm2.so` from Debian's `softhsm2`).
//!
//! Without SoftHSM2 a test prints `SKIPPED` and returns `None`; in CI (`CI=true`)
//! it panics instead (`scripts/test.sh` installs the package).
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` once, when the library is initialised, and a
//! threaded test process cannot change its environment safely: a test that loads
//! the library in its own process runs again in a child process that has the
//! variable ([`in_own_process`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The variable SoftHSM2 reads its configuration file's path from.
pub const CONF_VAR: &str = "SOFTHSM2_CONF";
/// Set in the child process: the directory of the token it was made for.
const DIR_VAR: &str = "MESHWARD_TEST_SOFTHSM_DIR";
const PIN: &str = "4321";
const SO_PIN: &str = "87654321";
pub const TOKEN_LABEL: &str = "meshward-test";

/// A token in a private SoftHSM2 token directory.
#[derive(Debug, Clone)]
pub struct SoftHsm {
    /// The PKCS#11 module, as an operator sets `library_path`.
    pub library: PathBuf,
    /// The configuration file: `SOFTHSM2_CONF` for every process using the token.
    pub conf: PathBuf,
    pub token_label: String,
    pub pin: String,
    /// A file holding the user PIN (`pin_file`).
    pub pin_file: PathBuf,
}

impl SoftHsm {
    /// Makes a configuration and a token under `dir`. `None` (after printing
    /// `SKIPPED <test>`) when SoftHSM2 is not installed, a panic in CI.
    pub fn init(test: &str, dir: &Path) -> Option<Self> {
        let library = match library() {
            Some(library) => library,
            None if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!(
                    "{test}: SoftHSM2 is not installed; CI must run the PKCS#11 tests (scripts/test.sh installs softhsm2)"
                )
            }
            None => {
                eprintln!("SKIPPED {test}: SoftHSM2 is not installed (apt-get install softhsm2)");
                return None;
            }
        };
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).expect("test setup: token directory");
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .expect("test setup: softhsm2.conf");
        let pin_file = dir.join("pin");
        std::fs::write(&pin_file, format!("{PIN}\n")).expect("test setup: pin file");
        let hsm = Self {
            library,
            conf,
            token_label: TOKEN_LABEL.into(),
            pin: PIN.into(),
            pin_file,
        };
        if std::env::var_os(DIR_VAR).is_none() {
            let out = Command::new("softhsm2-util")
                .env(CONF_VAR, &hsm.conf)
                .args(["--init-token", "--free", "--label", TOKEN_LABEL])
                .args(["--pin", PIN, "--so-pin", SO_PIN])
                .output()
                .expect("test setup: softhsm2-util runs");
            assert!(
                out.status.success(),
                "softhsm2-util --init-token: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Some(hsm)
    }

    /// The `ca_key_manager:` section of an issuer.yaml for this token.
    pub fn issuer_yaml(&self, key_label_prefix: &str) -> String {
        format!(
            "ca_key_manager:\n  pkcs11:\n    library_path: {}\n    token_label: {}\n    pin_file: {}\n    key_label_prefix: {key_label_prefix}\n",
            self.library.display(),
            self.token_label,
            self.pin_file.display()
        )
    }
}

/// The SoftHSM2 module: where Debian's package put it, else the usual paths.
pub fn library() -> Option<PathBuf> {
    let from_package = Command::new("dpkg")
        .args(["-L", "libsofthsm2"])
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .and_then(|files| {
            let mut found: Vec<&str> = files
                .lines()
                .filter(|l| l.ends_with("/libsofthsm2.so"))
                .collect();
            // /usr/lib/softhsm/libsofthsm2.so, the documented path, when present
            found.sort_by_key(|l| l.len());
            found.first().map(PathBuf::from)
        });
    from_package
        .into_iter()
        .chain(
            [
                "/usr/lib/softhsm/libsofthsm2.so",
                "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
                "/usr/lib64/pkcs11/libsofthsm2.so",
                "/usr/local/lib/softhsm/libsofthsm2.so",
            ]
            .map(PathBuf::from),
        )
        .find(|p| p.is_file())
        .filter(|_| which("softhsm2-util"))
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// For a test that loads the PKCS#11 library itself. As cargo runs it: makes a
/// token, runs `test` (its full path, e.g. `keys::tests::pkcs11_sign`) again in
/// a child process with `SOFTHSM2_CONF` set, fails if the child fails, and returns
/// `None`. In the child: returns the token.
pub fn in_own_process(test: &str) -> Option<SoftHsm> {
    run_in_child(
        test,
        [test, "--exact", "--nocapture", "--test-threads=1"]
            .map(OsString::from)
            .to_vec(),
    )
}

/// As [`in_own_process`], for a binary that is not a test (a benchmark): the
/// child gets `args`.
pub fn run_in_child(test: &str, args: Vec<OsString>) -> Option<SoftHsm> {
    if let Some(dir) = std::env::var_os(DIR_VAR) {
        let hsm = SoftHsm::init(test, Path::new(&dir))?;
        // the parent checks that the test it named ran here
        std::fs::write(Path::new(&dir).join("ran"), test).expect("test setup: marker");
        assert_eq!(
            std::env::var_os(CONF_VAR).as_deref(),
            Some(hsm.conf.as_os_str()),
            "the child runs with its own SoftHSM2 configuration"
        );
        return Some(hsm);
    }
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "meshward-softhsm-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let hsm = SoftHsm::init(test, &dir)?;
    let exe = std::env::current_exe().expect("test setup: own executable");
    let status = Command::new(exe)
        .args(args)
        .env(CONF_VAR, &hsm.conf)
        .env(DIR_VAR, &dir)
        .status()
        .expect("test setup: the child process starts");
    let ran = std::fs::read_to_string(dir.join("ran")).is_ok_and(|t| t == test);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success(), "{test} with SoftHSM2: {status}");
    assert!(
        ran,
        "{test}: the child process did not run it (is the name its full path?)"
    );
    None
}
