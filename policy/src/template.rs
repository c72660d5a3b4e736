//! `paths` values: the generic exact/prefix/suffix/presence forms, or an Envoy URI
//! template with `{*}` (exactly one non-empty segment) and `{**}` (zero or more
//! characters across segments; the last operator) (reference §7).

use crate::value::{InvalidValue, StringMatch};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathMatch {
    Plain(StringMatch),
    Template(Template),
}

impl PathMatch {
    pub(crate) fn parse(value: &str) -> Result<Self, InvalidValue> {
        if value.contains('{') || value.contains('}') {
            Template::parse(value).map(Self::Template)
        } else {
            StringMatch::parse(value, false).map(Self::Plain)
        }
    }

    pub(crate) fn matches(&self, path: &str) -> bool {
        match self {
            Self::Plain(m) => m.matches(path.as_bytes()),
            Self::Template(t) => t.matches(path),
        }
    }
}

impl std::fmt::Display for PathMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Plain(m) => m.fmt(f),
            Self::Template(t) => f.write_str(&t.source),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// `{*}`: one non-empty segment.
    Segment,
    /// `{**}`: anything, `/` included; only literals may follow it.
    Rest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    source: String,
    parts: Vec<Part>,
}

impl Template {
    fn parse(value: &str) -> Result<Self, InvalidValue> {
        let bad = |why: &str| InvalidValue(format!("path template {value:?}: {why}"));
        if !value.starts_with('/') {
            return Err(bad("must start with `/`"));
        }
        if value.contains('*') && value.replace("{*}", "").replace("{**}", "").contains('*') {
            return Err(bad("`*` may appear only inside `{*}` or `{**}`"));
        }
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut seen_rest = false;
        for segment in value.split('/').skip(1) {
            literal.push('/');
            let operator = match segment {
                "{*}" => Part::Segment,
                "{**}" => Part::Rest,
                s if s.contains('{') || s.contains('}') => {
                    return Err(bad("an operator must be a whole segment: `{*}` or `{**}`"));
                }
                s => {
                    literal.push_str(s);
                    continue;
                }
            };
            if seen_rest {
                return Err(bad("`{**}` must be the last operator"));
            }
            seen_rest = operator == Part::Rest;
            parts.push(Part::Literal(std::mem::take(&mut literal)));
            parts.push(operator);
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Self {
            source: value.to_owned(),
            parts,
        })
    }

    fn matches(&self, path: &str) -> bool {
        let mut rest = path;
        let mut parts = self.parts.iter();
        while let Some(part) = parts.next() {
            match part {
                Part::Literal(lit) => match rest.strip_prefix(lit.as_str()) {
                    Some(r) => rest = r,
                    None => return false,
                },
                Part::Segment => {
                    let end = rest.find('/').unwrap_or(rest.len());
                    if end == 0 {
                        return false;
                    }
                    rest = &rest[end..];
                }
                Part::Rest => {
                    // Only literals follow `{**}`: their concatenation must end the path.
                    let tail: String = parts
                        .by_ref()
                        .map(|p| match p {
                            Part::Literal(l) => l.as_str(),
                            _ => "",
                        })
                        .collect();
                    return rest.ends_with(&tail);
                }
            }
        }
        rest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(template: &str, path: &str) -> bool {
        PathMatch::parse(template).unwrap().matches(path)
    }

    /// Istio's integration test cases (tests/integration/security/authz path-templating).
    #[test]
    fn istio_path_template_cases() {
        assert!(m("/allow/admin/{**}", "/allow/admin/"));
        assert!(m("/allow/admin/{**}", "/allow/admin/temp"));
        assert!(m("/allow/admin/{**}", "/allow/admin/foo/temp.txt"));
        assert!(!m("/allow/admin/{**}", "/allow/admin"));
        assert!(m("/foo/{*}/bar/{**}", "/foo/buzz/bar/bat"));
        assert!(!m("/foo/{*}/bar/{**}", "/foo/bar/bat.txt"));
        assert!(!m("/foo/{*}/bar/{**}", "/foo//bar/bat.txt"));
        assert!(m("/store/{**}/cart", "/store//cart"));
        assert!(m("/store/{**}/cart", "/store/foo/bar/cart"));
        assert!(!m("/store/{**}/cart", "/store/cart"));
    }

    #[test]
    fn single_segment_operator() {
        assert!(m("/api/{*}", "/api/v1"));
        assert!(!m("/api/{*}", "/api/v1/x"));
        assert!(!m("/api/{*}", "/api/"));
        assert!(m("/api/{*}/items", "/api/v1/items"));
        assert!(!m("/api/{*}/items", "/api/v1/items/2"));
    }

    #[test]
    fn invalid_templates_are_rejected() {
        for bad in [
            "/a/{**}/b/{*}",
            "/a/{**}/{**}",
            "/a/x{*}",
            "/a/{*}.txt",
            "a/{*}",
            "/a/{*}/b*",
            "/a/{x}",
        ] {
            assert!(PathMatch::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn plain_paths_use_generic_matching() {
        assert!(m("/admin*", "/admin/x"));
        assert!(m("*.txt", "/a/b.txt"));
        assert!(!m("/admin", "/admin/"));
    }
}
