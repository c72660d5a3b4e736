//! Errors and notices from loading and compiling policies.
//!
//! Every error names where (file and 1-based document number, the policy when its
//! name is known), which field (a path such as
//! `spec.rules[0].from[0].source.principals[1]`) and why.

use std::fmt;

use crate::model::{Origin, PolicyId};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{path}: cannot read: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: {size} bytes: a policy source holds at most {limit}")]
    TooLarge {
        path: String,
        size: u64,
        limit: usize,
    },
    #[error("{origin}: invalid YAML{}: {reason}", location(*line, *column))]
    Syntax {
        origin: Origin,
        line: usize,
        column: usize,
        reason: String,
    },
    #[error("{origin}{}: {field}: {reason}", policy_suffix(policy.as_ref()))]
    Invalid {
        origin: Origin,
        policy: Option<PolicyId>,
        field: String,
        reason: String,
    },
    #[error("{origin}: policy {policy} is defined twice; the first is in {first}")]
    Duplicate {
        origin: Origin,
        policy: PolicyId,
        first: Origin,
    },
}

fn location(line: usize, column: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(" at line {line}, column {column}")
    }
}

fn policy_suffix(policy: Option<&PolicyId>) -> String {
    policy.map(|p| format!(" (policy {p})")).unwrap_or_default()
}

/// Something worth telling the author that does not make a policy invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub origin: Origin,
    pub message: String,
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.message)
    }
}
