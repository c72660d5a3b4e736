//! Request-target normalization: what `paths` is matched against, and what the
//! backend receives (reference §7, Envoy `path_utility.cc`).
//!
//! Always, whatever the option: the fragment is stripped (CVE-2021-39156), the query
//! never takes part in `paths` (CVE-2020-8595), `%00` and malformed percent-escapes are
//! a bad request, and path parameters (`/admin;x=1`, RFC 3986 §3.3) are removed from
//! every segment before anything else, since servers such as Tomcat route
//! `/admin;x=1` and `/..;/admin` as if they were not there. The result is what
//! policy judges and what the backend receives: one normalization, applied once,
//! idempotent. meshward's default is [`PathNormalization::DecodeAndMergeSlashes`]:
//! the strictest option, the one Istio's best-practice page recommends, and the only
//! one under which `//admin`, `/admin%2Fx` and `\admin` cannot slip past a policy
//! written for `/admin` (CVE-2021-31920).

use std::fmt;
use std::str::FromStr;

/// Istio MeshConfig `pathNormalization.normalization`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PathNormalization {
    /// Raw path (query and fragment still ignored by `paths`).
    None,
    /// RFC 3986 dot segments, `\` to `/`, unreserved escapes decoded once.
    Base,
    /// `Base`, then runs of `/` merged.
    MergeSlashes,
    /// `%2F` and `%5C` decoded first, then `MergeSlashes`.
    #[default]
    DecodeAndMergeSlashes,
}

impl PathNormalization {
    pub const ALL: [Self; 4] = [
        Self::None,
        Self::Base,
        Self::MergeSlashes,
        Self::DecodeAndMergeSlashes,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Base => "BASE",
            Self::MergeSlashes => "MERGE_SLASHES",
            Self::DecodeAndMergeSlashes => "DECODE_AND_MERGE_SLASHES",
        }
    }
}

impl fmt::Display for PathNormalization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PathNormalization {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|o| o.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown path normalization {s:?}: expected NONE, BASE, MERGE_SLASHES or DECODE_AND_MERGE_SLASHES")
            })
    }
}

/// Why a request-target cannot be normalized; the request gets `400`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTarget {
    #[error("the request target contains an encoded NUL (%00)")]
    EncodedNul,
    #[error("the request target contains a control character")]
    ControlCharacter,
    #[error("the request target has a malformed percent-escape at byte {0}")]
    MalformedEscape(usize),
    #[error("the request target is neither an absolute path nor an absolute URI")]
    NotAPath,
}

/// A normalized request target: `path()` for policy matching, `query()` forwarded as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedTarget {
    path: String,
    query: Option<String>,
}

impl NormalizedTarget {
    /// The normalized path, never with query or fragment.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The query, without `?`, unchanged.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// Path and query as they go to the backend.
    pub fn to_request_target(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

/// Normalizes an HTTP request-target (origin form `/a?b`, absolute form
/// `http://h/a`, or `*` for `OPTIONS *`).
pub fn normalize_target(
    target: &str,
    option: PathNormalization,
) -> Result<NormalizedTarget, InvalidTarget> {
    if target.bytes().any(|b| b.is_ascii_control()) {
        return Err(InvalidTarget::ControlCharacter);
    }
    check_escapes(target)?;
    let without_fragment = target.split_once('#').map_or(target, |(before, _)| before);
    let (raw_path, query) = match without_fragment.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (without_fragment, None),
    };
    let raw_path = strip_scheme_and_authority(raw_path)?;
    if raw_path == "*" {
        return Ok(NormalizedTarget {
            path: raw_path.to_owned(),
            query,
        });
    }
    Ok(NormalizedTarget {
        path: normalize_path(raw_path, option),
        query,
    })
}

/// Normalizes a path that has no query or fragment. Idempotent.
pub fn normalize_path(path: &str, option: PathNormalization) -> String {
    let stripped = strip_path_parameters(path);
    let path = stripped.as_ref();
    let mut out = match option {
        PathNormalization::None => return path.to_owned(),
        PathNormalization::DecodeAndMergeSlashes => {
            decode(path, |b| matches!(b, b'/' | b'\\') || is_unreserved(b))
        }
        PathNormalization::Base | PathNormalization::MergeSlashes => decode(path, is_unreserved),
    }
    .replace('\\', "/");
    out = remove_dot_segments(&out);
    if matches!(
        option,
        PathNormalization::MergeSlashes | PathNormalization::DecodeAndMergeSlashes
    ) {
        out = merge_slashes(&out);
    }
    out
}

/// Every `%` must start a two-hex-digit escape, and `%00` is never allowed: a lone
/// `%` could otherwise combine with a decoded neighbour into a new escape (`%%32e`
/// -> `%2e`), which would make normalization non-idempotent and open a double-decode.
fn check_escapes(target: &str) -> Result<(), InvalidTarget> {
    let bytes = target.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            match (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                (Some(0), Some(0)) => return Err(InvalidTarget::EncodedNul),
                (Some(_), Some(_)) => i += 3,
                _ => return Err(InvalidTarget::MalformedEscape(i)),
            }
        } else {
            i += 1;
        }
    }
    Ok(())
}

fn hex(b: Option<&u8>) -> Option<u8> {
    (*b? as char).to_digit(16).map(|d| d as u8)
}

fn strip_scheme_and_authority(path: &str) -> Result<&str, InvalidTarget> {
    if path.starts_with('/') || path == "*" {
        return Ok(path);
    }
    // absolute-form (RFC 9112 §3.2.2): scheme "://" authority path-abempty
    let after_scheme = path
        .split_once("://")
        .filter(|(scheme, _)| {
            !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        })
        .map(|(_, rest)| rest)
        .ok_or(InvalidTarget::NotAPath)?;
    Ok(after_scheme.find('/').map_or("/", |i| &after_scheme[i..]))
}

/// `/a;p=1/b;q` -> `/a/b`: each segment cut at its first `;`.
fn strip_path_parameters(path: &str) -> std::borrow::Cow<'_, str> {
    if !path.contains(';') {
        return std::borrow::Cow::Borrowed(path);
    }
    let segments: Vec<&str> = path
        .split('/')
        .map(|segment| segment.split(';').next().unwrap_or_default())
        .collect();
    std::borrow::Cow::Owned(segments.join("/"))
}

/// RFC 3986 §2.3 unreserved characters: the escapes Envoy's BASE decodes.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decodes, once, the escapes whose decoded byte satisfies `decode_byte`.
fn decode(path: &str, decode_byte: impl Fn(u8) -> bool) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let (Some(hi), Some(lo)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                let decoded = hi << 4 | lo;
                if decode_byte(decoded) {
                    out.push(decoded);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    // Only ASCII bytes are ever decoded, so valid UTF-8 stays valid UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// RFC 3986 §5.2.4 on a path, always returning an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let relative = path.strip_prefix('/').unwrap_or(path);
    let mut parts = relative.split('/').peekable();
    // A trailing `.` or `..` leaves a trailing slash: "/a/b/.." -> "/a/".
    let mut trailing_slash = false;
    while let Some(seg) = parts.next() {
        let last = parts.peek().is_none();
        match seg {
            "." => trailing_slash = last,
            ".." => {
                segments.pop();
                trailing_slash = last;
            }
            _ => {
                segments.push(seg);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    for seg in &segments {
        out.push('/');
        out.push_str(seg);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    out
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut previous_slash = false;
    for c in path.chars() {
        if c == '/' && previous_slash {
            continue;
        }
        previous_slash = c == '/';
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests;
