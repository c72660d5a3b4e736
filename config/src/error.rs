//! Configuration errors: file, field path, reason.

use serde::de::DeserializeOwned;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {reason}")]
    Read { path: String, reason: String },
    #[error("{source_name}: invalid YAML at line {line}, column {column}: {reason}")]
    Syntax {
        source_name: String,
        line: usize,
        column: usize,
        reason: String,
    },
    #[error("{source_name}: {field}: {reason}")]
    Invalid {
        source_name: String,
        field: String,
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(source: &str, field: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            source_name: source.into(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A configuration file's text, or an error naming the file.
pub(crate) fn read_file(path: &std::path::Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// YAML -> `T`, with the field path of a type error and the line of a syntax error.
pub(crate) fn parse_yaml<T: DeserializeOwned>(text: &str, source: &str) -> Result<T, ConfigError> {
    // An empty file is an empty mapping: every field takes its default.
    let text = if text.trim().is_empty() { "{}" } else { text };
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        ConfigError::Syntax {
            source_name: source.into(),
            line,
            column,
            reason: strip_location(&e.to_string()),
        }
    })?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        ConfigError::invalid(source, &field, strip_location(&e.into_inner().to_string()))
    })
}

fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}
