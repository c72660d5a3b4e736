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
    pub fn invalid(source: &str, field: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            source_name: source.into(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A configuration file's text, or an error naming the file.
pub fn read_file(path: &std::path::Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// YAML -> `T`, with the field path of a type error and the line of a syntax error.
pub fn parse_yaml<T: DeserializeOwned>(text: &str, source: &str) -> Result<T, ConfigError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        outer: Outer,
    }

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[serde(default)]
        port: u16,
    }

    #[test]
    fn a_type_error_names_the_field_path() {
        let err = parse_yaml::<File>("outer:\n  port: many\n", "f.yaml").unwrap_err();
        let ConfigError::Invalid { field, reason, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(field, "outer.port");
        assert!(!reason.contains(" at line "), "{reason}");
        assert!(err.to_string().starts_with("f.yaml: outer.port: "), "{err}");
    }

    #[test]
    fn a_syntax_error_names_the_line_and_an_empty_file_is_all_defaults() {
        let err = parse_yaml::<File>("outer: [\n", "f.yaml").unwrap_err();
        assert!(
            matches!(err, ConfigError::Syntax { line: 2, .. }),
            "{err:?}"
        );
        assert_eq!(parse_yaml::<File>(" \n", "f.yaml").unwrap().outer.port, 0);
    }
}
