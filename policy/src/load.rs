//! Files and directories -> compiled policies, with every error and notice.
//!
//! A file holds one or more YAML documents (`---`); a `kind: List` holds `items`.
//! Documents of other kinds are skipped with a notice naming file, document and
//! kind. A directory contributes its `*.yaml`, `*.yml` and `*.json` files (not
//! recursively; hidden entries such as a ConfigMap mount's `..data` are skipped).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::authn::{self, RequestAuthentication, RequestAuthenticationDocument};
use crate::compile::compile;
use crate::engine::PolicySet;
use crate::error::{Notice, PolicyError};
use crate::model::{Origin, Policy};
use crate::options::EngineOptions;
use crate::spec::PolicyDocument;

const GROUP_VERSIONS: [&str; 2] = ["security.istio.io/v1", "security.istio.io/v1beta1"];
/// The most text one source (a file, or one Kubernetes object) may hold: far above
/// any real policy set, far below what would hurt a node to parse and keep.
pub const MAX_SOURCE_BYTES: usize = 512 * 1024;

/// Everything one load produced.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub(crate) policies: Vec<Policy>,
    pub(crate) authentications: Vec<RequestAuthentication>,
    pub notices: Vec<Notice>,
    pub errors: Vec<PolicyError>,
}

impl LoadReport {
    /// How many AuthorizationPolicies compiled.
    pub fn policy_count(&self) -> usize {
        self.policies.len()
    }

    /// How many RequestAuthentications compiled.
    pub fn authentication_count(&self) -> usize {
        self.authentications.len()
    }

    /// The policy set, or every error: one invalid policy fails the whole load, so a
    /// reload keeps the last good set rather than running with a policy missing.
    pub fn into_policy_set(self, options: &EngineOptions) -> Result<PolicySet, Vec<PolicyError>> {
        if self.errors.is_empty() {
            Ok(PolicySet::new(
                self.policies,
                self.authentications,
                options.clone(),
            ))
        } else {
            Err(self.errors)
        }
    }

    /// Adds another load's results (e.g. files plus the Kubernetes API).
    pub fn merge(&mut self, other: LoadReport) {
        self.policies.extend(other.policies);
        self.authentications.extend(other.authentications);
        self.notices.extend(other.notices);
        self.errors.extend(other.errors);
        self.check_duplicates();
    }

    /// Two objects of one kind with one namespace and name: the load fails.
    fn check_duplicates(&mut self) {
        let mut duplicates = Vec::new();
        let policies = self.policies.iter().map(|p| (&p.id, &p.origin));
        let authentications = self.authentications.iter().map(|a| (&a.id, &a.origin));
        for objects in [
            policies.collect::<Vec<_>>(),
            authentications.collect::<Vec<_>>(),
        ] {
            let mut seen: std::collections::HashMap<_, &Origin> = std::collections::HashMap::new();
            for (id, origin) in objects {
                if let Some(first) = seen.insert(id, origin) {
                    duplicates.push(PolicyError::Duplicate {
                        origin: origin.clone(),
                        policy: id.clone(),
                        first: first.clone(),
                    });
                    seen.insert(id, first);
                }
            }
        }
        for d in duplicates {
            if !self.errors.contains(&d) {
                self.errors.push(d);
            }
        }
    }
}

/// Loads files and directories.
pub fn load_paths<P: AsRef<Path>>(paths: &[P], options: &EngineOptions) -> LoadReport {
    let mut report = LoadReport::default();
    for path in paths {
        for file in expand(path.as_ref(), &mut report) {
            let size = std::fs::metadata(&file).map_or(0, |m| m.len());
            if size > MAX_SOURCE_BYTES as u64 {
                report
                    .errors
                    .push(too_big(&file.display().to_string(), size));
                continue;
            }
            match std::fs::read_to_string(&file) {
                Ok(text) => load_into(&text, &file.display().to_string(), 0, options, &mut report),
                Err(e) => report.errors.push(PolicyError::Read {
                    path: file.display().to_string(),
                    reason: e.to_string(),
                }),
            }
        }
    }
    report.check_duplicates();
    report
}

/// Loads YAML text; `source` names it in errors (a file path, or e.g. `kubernetes`).
pub fn load_str(text: &str, source: &str, options: &EngineOptions) -> LoadReport {
    let mut report = LoadReport::default();
    load_into(text, source, 0, options, &mut report);
    report.check_duplicates();
    report
}

/// Loads objects that arrive one by one (the Kubernetes API's), each bounded by
/// [`MAX_SOURCE_BYTES`] on its own; errors name `source` and the object's number.
pub fn load_objects(objects: &[String], source: &str, options: &EngineOptions) -> LoadReport {
    let mut report = LoadReport::default();
    for (index, text) in objects.iter().enumerate() {
        if text.len() > MAX_SOURCE_BYTES {
            let name = format!("{source}: document {}", index + 1);
            report.errors.push(too_big(&name, text.len() as u64));
            continue;
        }
        load_into(text, source, index, options, &mut report);
    }
    report.check_duplicates();
    report
}

fn expand(path: &Path, report: &mut LoadReport) -> Vec<PathBuf> {
    let read_error = |e: std::io::Error| PolicyError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    if !path.is_dir() {
        return vec![path.to_owned()];
    }
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) => {
            report.errors.push(read_error(e));
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or(".");
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            !name.starts_with('.') && matches!(ext, "yaml" | "yml" | "json") && p.is_file()
        })
        .collect();
    files.sort();
    files
}

fn too_big(source: &str, size: u64) -> PolicyError {
    PolicyError::TooLarge {
        path: source.to_owned(),
        size,
        limit: MAX_SOURCE_BYTES,
    }
}

/// Loads the documents of `text`, numbered from `first_document + 1`.
fn load_into(
    text: &str,
    source: &str,
    first_document: usize,
    options: &EngineOptions,
    report: &mut LoadReport,
) {
    if text.len() > MAX_SOURCE_BYTES {
        report.errors.push(too_big(source, text.len() as u64));
        return;
    }
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let origin = Origin {
            source: source.to_owned(),
            document: first_document + index + 1,
        };
        match serde_yaml::Value::deserialize(document) {
            Ok(serde_yaml::Value::Null) => {} // an empty document, e.g. after a trailing `---`
            Ok(value) => load_value(value, origin, options, report),
            Err(e) => {
                let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
                report.errors.push(PolicyError::Syntax {
                    origin,
                    line,
                    column,
                    reason: strip_location(&e.to_string()),
                });
                // The stream cannot be resynchronised after a syntax error.
                return;
            }
        }
    }
}

fn load_value(
    value: serde_yaml::Value,
    origin: Origin,
    options: &EngineOptions,
    report: &mut LoadReport,
) {
    let invalid = |field: &str, reason: String| PolicyError::Invalid {
        origin: origin.clone(),
        policy: None,
        field: field.into(),
        reason,
    };
    let text = |key: &str| {
        value
            .get(key)
            .and_then(serde_yaml::Value::as_str)
            .unwrap_or("")
    };
    let (api_version, kind) = (text("apiVersion"), text("kind"));
    if !value.is_mapping() {
        report.errors.push(invalid(
            "(document)",
            "expected a Kubernetes object (a mapping)".into(),
        ));
        return;
    }
    if kind.is_empty() {
        report.errors.push(invalid("kind", "is required".into()));
        return;
    }
    if matches!(
        kind,
        "List" | "AuthorizationPolicyList" | "RequestAuthenticationList"
    ) {
        let items = value
            .get("items")
            .and_then(serde_yaml::Value::as_sequence)
            .cloned();
        for item in items.unwrap_or_default() {
            load_value(item, origin.clone(), options, report);
        }
        return;
    }
    let istio = GROUP_VERSIONS.contains(&api_version);
    let at = origin.clone();
    let result = match kind {
        "AuthorizationPolicy" if istio => {
            serde_path_to_error::deserialize::<_, PolicyDocument>(value).map(|doc| {
                match compile(doc, origin, options, &mut report.notices) {
                    Ok(policy) => report.policies.push(policy),
                    Err(errors) => report.errors.extend(errors),
                }
            })
        }
        "RequestAuthentication" if istio => {
            serde_path_to_error::deserialize::<_, RequestAuthenticationDocument>(value).map(|doc| {
                match authn::compile(doc, origin, options, &mut report.notices) {
                    Ok(authentication) => report.authentications.push(authentication),
                    Err(errors) => report.errors.extend(errors),
                }
            })
        }
        _ => {
            report.notices.push(Notice {
                origin,
                message: format!("skipped: kind {kind} (apiVersion {api_version}) is neither a security.istio.io AuthorizationPolicy nor a RequestAuthentication"),
            });
            Ok(())
        }
    };
    if let Err(e) = result {
        report.errors.push(PolicyError::Invalid {
            origin: at,
            policy: None,
            field: e.path().to_string(),
            reason: strip_location(&e.into_inner().to_string()),
        });
    }
}

/// serde_yaml appends " at line L column C" to messages; the location is reported
/// separately (and is meaningless for a re-parsed value).
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}
