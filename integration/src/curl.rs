//! Real curl inside a namespace, its answer parsed into status, headers and body.

use std::time::Duration;

use crate::error::Result;
use crate::netns::Netns;
use crate::process::exec;

/// What curl saw. `exit_code` tells refusals apart: 7 = connection refused,
/// 28 = timeout, 52 = empty reply, 56 = connection reset.
#[derive(Debug, Clone)]
pub struct CurlResponse {
    pub exit_code: Option<i32>,
    /// The final response's status (after any `100 Continue`), if one arrived.
    pub status: Option<u16>,
    /// Header names lower-cased, in order, repeated headers repeated.
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub stderr: String,
}

impl CurlResponse {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (the echoserver's default format).
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.body).ok()
    }
}

/// Overall bound on one curl run, above curl's own `--max-time`.
const HARD_LIMIT: Duration = Duration::from_secs(30);

pub(crate) fn curl(ns: &Netns, args: &[&str]) -> Result<CurlResponse> {
    let mut full = vec!["-sS", "-i", "--max-time", "10"];
    full.extend_from_slice(args);
    let out = exec(ns, "curl", &full, HARD_LIMIT)?;
    let (status, headers, body) = parse_response(&out.stdout);
    Ok(CurlResponse {
        exit_code: out.code,
        status,
        headers,
        body,
        stderr: out.stderr,
    })
}

type Parsed = (Option<u16>, Vec<(String, String)>, String);

/// `curl -i` output: one or more header blocks (1xx first), then the body.
fn parse_response(raw: &str) -> Parsed {
    let mut rest = raw;
    let mut result = (None, Vec::new(), String::new());
    while rest.starts_with("HTTP/") {
        let (head, body) = match rest.split_once("\r\n\r\n") {
            Some(split) => split,
            None => (rest, ""),
        };
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok());
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        result = (status, headers, body.to_owned());
        rest = body;
        if !status.is_some_and(|s: u16| (100..200).contains(&s)) {
            break;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_final_response_after_continue() {
        let raw = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 403 Forbidden\r\ncontent-length: 19\r\nX-A: 1\r\nx-a: 2\r\n\r\nRBAC: access denied";
        let (status, headers, body) = parse_response(raw);
        assert_eq!(status, Some(403));
        assert_eq!(
            headers,
            [
                ("content-length".into(), "19".into()),
                ("x-a".into(), "1".into()),
                ("x-a".into(), "2".into())
            ]
        );
        assert_eq!(body, "RBAC: access denied");
    }

    #[test]
    fn http2_status_line_and_nothing() {
        assert_eq!(
            parse_response("HTTP/2 200\r\nserver: x\r\n\r\n{}").0,
            Some(200)
        );
        assert_eq!(parse_response(""), (None, Vec::new(), String::new()));
    }
}
