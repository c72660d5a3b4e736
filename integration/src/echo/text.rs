//! The plain text of Kubernetes' e2e `echoserver` (nginx + lua template): header
//! names lower-case and sorted, one line per value ending in two spaces, values
//! HTML-escaped (so `Subject=""` reads `Subject=&quot;&quot;`).

use std::fmt::Write;

use super::{PodEnv, Seen};

pub(super) fn render(seen: &Seen, env: &PodEnv) -> String {
    let na = |v: &Option<String>| v.clone().unwrap_or_else(|| "N/A".into());
    let mut out = String::from("\n\n");
    let _ = writeln!(out, "Hostname: {}\n", na(&env.hostname));
    out.push_str("Pod Information:\n");
    if env.pod_name.is_some() {
        let _ = writeln!(out, "\tnode name:\t{}", na(&env.node_name));
        let _ = writeln!(out, "\tpod name:\t{}", na(&env.pod_name));
        let _ = writeln!(out, "\tpod namespace:\t{}", na(&env.pod_namespace));
        let _ = writeln!(out, "\tpod IP:\t{}", na(&env.pod_ip));
    } else {
        out.push_str("\t-no pod information available-\n");
    }
    let _ = writeln!(
        out,
        "\nServer values:\n\tserver_version=meshward-echoserver {}\n",
        env!("CARGO_PKG_VERSION")
    );
    out.push_str("Request Information:\n");
    let _ = writeln!(out, "\tclient_address={}", seen.client.ip());
    let _ = writeln!(out, "\tmethod={}", escape(&seen.method));
    let _ = writeln!(out, "\treal path={}", escape(&seen.uri));
    let _ = writeln!(out, "\tquery={}", escape(&seen.query));
    let _ = writeln!(out, "\trequest_version={}", seen.version);
    out.push_str("\trequest_scheme=http\n");
    let _ = writeln!(
        out,
        "\trequest_uri=http://{}{}\n",
        escape(&seen.host),
        escape(&seen.uri)
    );
    out.push_str("Request Headers:\n");
    let mut headers = seen.headers.clone();
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, value) in &headers {
        let _ = writeln!(out, "\t{name}={}  ", escape(value));
    }
    out.push_str("\nRequest Body:\n");
    if seen.body.is_empty() {
        out.push_str("\t-no body in request-\n");
    } else {
        out.push_str(&escape(&String::from_utf8_lossy(&seen.body)));
        out.push('\n');
    }
    out
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
