//! `meshward proxy status`: the daemon's `/config_dump`, for a person.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;

pub(super) fn run(admin: SocketAddr, raw: bool) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let body = runtime.block_on(fetch(admin, "/config_dump"))?;
    if raw {
        println!("{body}");
        return Ok(ExitCode::SUCCESS);
    }
    let dump: Value = serde_json::from_str(&body).context("the admin port did not answer JSON")?;
    print!("{}", render(&dump));
    Ok(ExitCode::SUCCESS)
}

async fn fetch(admin: SocketAddr, path: &str) -> anyhow::Result<String> {
    let work = async {
        let tcp = tokio::net::TcpStream::connect(admin).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        let request = http::Request::get(path)
            .header(http::header::HOST, admin.to_string())
            .body(Empty::<bytes::Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("{path}: {status}");
        }
        Ok::<_, anyhow::Error>(String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| anyhow::anyhow!("{admin} did not answer within 10s"))?
        .with_context(|| format!("is meshward proxy running with admin on {admin}?"))
}

fn render(dump: &Value) -> String {
    let mut out = String::new();
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    out.push_str(&format!(
        "node {} ({}), trust domain {}\n",
        text(&dump["node"]["name"]),
        text(&dump["node"]["spiffe_id"]),
        text(&dump["config"]["trust_domain"]),
    ));
    let certs = dump["certificates"].as_array().cloned().unwrap_or_default();
    let workloads = dump["workloads"].as_array().cloned().unwrap_or_default();
    out.push_str(&format!("\nworkloads ({}):\n", workloads.len()));
    for w in &workloads {
        let pod = format!("{}/{}", text(&w["namespace"]), text(&w["name"]));
        let ids: Vec<String> = w["identities"]
            .as_array()
            .map(|ids| ids.iter().map(text).collect())
            .unwrap_or_default();
        if ids.is_empty() {
            out.push_str(&format!("  {pod:<32} {:<15} no identity\n", text(&w["ip"])));
        }
        for id in ids {
            let left = certs
                .iter()
                .find(|c| c["spiffe_id"] == id.as_str() && c["pod"] == pod.as_str())
                .and_then(|c| c["seconds_to_expiry"].as_u64())
                .map_or_else(|| "-".to_owned(), |s| format!("{}m{:02}s", s / 60, s % 60));
            out.push_str(&format!(
                "  {pod:<32} {:<15} {id}  expires in {left}\n",
                text(&w["ip"])
            ));
        }
    }
    let policies = &dump["policies"];
    let list = policies["policies"].as_array().cloned().unwrap_or_default();
    out.push_str(&format!(
        "\npolicies ({}; default {}; from {}):\n",
        list.len(),
        text(&policies["default"]),
        policies["paths"]
    ));
    for p in &list {
        let flags = match (p["dry_run"].as_bool(), p["applies"].as_bool()) {
            (Some(true), _) => " (dry-run)",
            (_, Some(false)) => " (targetRef: not applied here)",
            _ => "",
        };
        out.push_str(&format!(
            "  {:<6} {}/{}{flags}   {}\n",
            text(&p["action"]),
            text(&p["namespace"]),
            text(&p["name"]),
            text(&p["origin"]),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_workloads_identities_and_policies() {
        let dump = serde_json::json!({
            "node": {"name": "node-1", "spiffe_id": "spiffe://td/node/node-1"},
            "config": {"trust_domain": "td"},
            "workloads": [
                {"name": "curl-spire", "namespace": "default", "ip": "10.0.1.2", "identities": ["spiffe://td/ns/default/sa/curl-spire"]},
                {"name": "curl", "namespace": "default", "ip": "10.0.1.3", "identities": []}
            ],
            "certificates": [{"spiffe_id": "spiffe://td/ns/default/sa/curl-spire", "pod": "default/curl-spire", "seconds_to_expiry": 125}],
            "policies": {"default": "deny", "paths": ["/p"], "policies": [
                {"namespace": "echoserver", "name": "allow", "action": "ALLOW", "dry_run": false, "applies": true, "origin": "/p/a.yaml: document 1"}
            ]}
        });
        let text = render(&dump);
        assert!(
            text.contains("node node-1 (spiffe://td/node/node-1), trust domain td"),
            "{text}"
        );
        assert!(
            text.contains("spiffe://td/ns/default/sa/curl-spire  expires in 2m05s"),
            "{text}"
        );
        assert!(
            text.contains("default/curl") && text.contains("no identity"),
            "{text}"
        );
        assert!(
            text.contains("ALLOW  echoserver/allow   /p/a.yaml: document 1"),
            "{text}"
        );
    }
}
