//! The access log: one line on target `access` per HTTP request and per TCP
//! connection, with both identities, the pod, the decision, the deciding policy
//! and why.
//!
//! The JSON format gets one field per value. The text format gets the same line
//! as those fields would make (`logging::PlainFields`; a test compares the two),
//! written as one message: field by field through `tracing`'s visitors, a
//! request's line was 8.6k instructions, a tenth of the inbound daemon's work
//! per HTTP/1.1 request. The stream's part of it (addresses, identities, pod) is
//! rendered once per stream.

use std::fmt::{self, Write as _};
use std::time::Duration;

use super::stream::{DecisionRecord, InboundStream};
use crate::logging;

/// What the line is about, past the stream and the decision.
enum Outcome<'a> {
    Request {
        method: &'a str,
        path: &'a str,
        status: u16,
    },
    /// A TCP connection, when it ends.
    Connection {
        sent: u64,
        received: u64,
        error: Option<&'a str>,
    },
}

/// The access log line of one HTTP request.
pub(crate) fn request(
    stream: &InboundStream,
    method: &str,
    path: &str,
    status: u16,
    record: &DecisionRecord,
    duration: Duration,
) {
    let outcome = Outcome::Request {
        method,
        path,
        status,
    };
    log(stream, record, &outcome, duration);
}

/// The access log line of one TCP connection, when it ends.
pub(crate) fn connection(
    stream: &InboundStream,
    record: &DecisionRecord,
    (sent, received): (u64, u64),
    duration: Duration,
    error: Option<&str>,
) {
    let outcome = Outcome::Connection {
        sent,
        received,
        error,
    };
    log(stream, record, &outcome, duration);
}

/// Writes the access log line of `outcome` on `stream`.
fn log(stream: &InboundStream, record: &DecisionRecord, outcome: &Outcome<'_>, duration: Duration) {
    if logging::structured() {
        log_fields(stream, record, outcome, duration);
    } else {
        let line = TextLine {
            peers: stream.peers_text(|| peers_text(stream)),
            record,
            outcome,
            duration,
        };
        tracing::info!(target: "access", "{line}");
    }
}

/// ` src_addr=.. src_principal=.. dst_addr=.. dst_workload=.. dst_namespace=..
/// dst_principal=..`: the stream's fields in the text line.
fn peers_text(stream: &InboundStream) -> String {
    let mut text = String::with_capacity(200);
    let _ = write!(
        text,
        " src_addr={} src_principal={} dst_addr={} dst_workload={} dst_namespace={} dst_principal={}",
        stream.source,
        stream.source_principal(),
        stream.destination,
        stream.pod.info.name,
        stream.pod.info.namespace,
        stream.destination_principal(),
    );
    text
}

/// The text line's message: what the fields would write, in their order.
struct TextLine<'a> {
    peers: &'a str,
    record: &'a DecisionRecord,
    outcome: &'a Outcome<'a>,
    duration: Duration,
}

impl fmt::Display for TextLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // made whole, then written once: each write through the formatter and the
        // escaping writer behind it costs ~100 instructions
        let mut line = String::with_capacity(self.peers.len() + 256);
        self.render(&mut line)?;
        f.write_str(&line)
    }
}

impl TextLine<'_> {
    fn render(&self, line: &mut String) -> fmt::Result {
        let decision = if self.record.allowed {
            " decision=\"allow\" policy="
        } else {
            " decision=\"deny\" policy="
        };
        match *self.outcome {
            Outcome::Request {
                method,
                path,
                status,
            } => {
                line.push_str(&self.record.reason);
                line.push_str(self.peers);
                line.push_str(" method=");
                logging::write_quoted(line, method)?;
                line.push_str(" path=");
                logging::write_quoted(line, path)?;
                write!(line, " status={status}")?;
                line.push_str(decision);
                line.push_str(&self.record.policy);
                write!(line, " duration_ms={:?}", millis(self.duration))
            }
            Outcome::Connection {
                sent,
                received,
                error,
            } => {
                line.push_str("connection complete: ");
                line.push_str(&self.record.reason);
                line.push_str(self.peers);
                line.push_str(decision);
                line.push_str(&self.record.policy);
                write!(
                    line,
                    " bytes_sent={sent} bytes_received={received} duration_ms={:?} error=",
                    millis(self.duration)
                )?;
                logging::write_quoted(line, error.unwrap_or("-"))
            }
        }
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// The line as `tracing` fields: the JSON format's, and what the text line reads as.
fn log_fields(
    stream: &InboundStream,
    record: &DecisionRecord,
    outcome: &Outcome<'_>,
    duration: Duration,
) {
    let decision = if record.allowed { "allow" } else { "deny" };
    match *outcome {
        Outcome::Request {
            method,
            path,
            status,
        } => tracing::info!(
            target: "access",
            src_addr = %stream.source,
            src_principal = %stream.source_principal(),
            dst_addr = %stream.destination,
            dst_workload = %stream.pod.info.name,
            dst_namespace = %stream.pod.info.namespace,
            dst_principal = %stream.destination_principal(),
            method,
            path,
            status,
            decision,
            policy = %record.policy,
            duration_ms = millis(duration),
            "{}",
            record.reason
        ),
        Outcome::Connection {
            sent,
            received,
            error,
        } => tracing::info!(
            target: "access",
            src_addr = %stream.source,
            src_principal = %stream.source_principal(),
            dst_addr = %stream.destination,
            dst_workload = %stream.pod.info.name,
            dst_namespace = %stream.pod.info.namespace,
            dst_principal = %stream.destination_principal(),
            decision,
            policy = %record.policy,
            bytes_sent = sent,
            bytes_received = received,
            duration_ms = millis(duration),
            error = error.unwrap_or("-"),
            "connection complete: {}",
            record.reason
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::PodInfo;
    use crate::datapath::state::LocalPod;
    use crate::datapath::stream::Peer;
    use meshward_policy::Workload;

    fn stream() -> InboundStream {
        let info: PodInfo = serde_yaml::from_str(
            "{name: echoserver-1, namespace: echoserver, uid: u1, ip: 10.0.2.7}",
        )
        .unwrap();
        let pod = LocalPod {
            workload: Workload {
                namespace: info.namespace.clone(),
                labels: info.labels.clone(),
            },
            info,
            tls: None,
        };
        let peer = Peer {
            spiffe_id: "spiffe://example.org/ns/default/sa/curl".parse().unwrap(),
            leaf_hash: String::new(),
            expires_at: std::time::SystemTime::UNIX_EPOCH,
        };
        InboundStream::new(
            Some(Arc::new(peer)),
            "10.0.1.5:40112".parse().unwrap(),
            "10.0.2.7:8080".parse().unwrap(),
            Arc::new(pod),
        )
    }

    /// Each outcome's text line, and the line its fields make.
    fn both_ways(outcome: &Outcome<'_>, record: &DecisionRecord, duration: Duration) {
        let stream = stream();
        let text = logging::text_line_of(|| {
            let line = TextLine {
                peers: stream.peers_text(|| peers_text(&stream)),
                record,
                outcome,
                duration,
            };
            tracing::info!(target: "access", "{line}");
        });
        let fields = logging::text_line_of(|| log_fields(&stream, record, outcome, duration));
        assert_eq!(text, fields);
        assert!(text.contains(" src_addr=10.0.1.5:40112 src_principal=spiffe://example.org/ns/default/sa/curl dst_addr=10.0.2.7:8080 dst_workload=echoserver-1 dst_namespace=echoserver dst_principal=unknown "), "{text}");
    }

    #[test]
    fn the_text_line_reads_as_its_fields_would() {
        let allowed = DecisionRecord {
            allowed: true,
            policy: "echoserver/allow-get".into(),
            action: "ALLOW",
            reason: "allowed by ALLOW policy echoserver/allow-get rule 0".into(),
            approved_by: None,
        };
        let denied = DecisionRecord::refused("-", "denied: no ALLOW policy matched");
        for duration in [
            Duration::from_micros(532),
            Duration::from_nanos(1),
            Duration::from_secs(3),
        ] {
            for record in [&allowed, &denied] {
                for (method, path) in [("GET", "/api"), ("PATCH", "/a b\"c\\\u{1b}[2J\n")] {
                    let request = Outcome::Request {
                        method,
                        path,
                        status: 403,
                    };
                    both_ways(&request, record, duration);
                }
                for error in [None, Some("reset by \"peer\"")] {
                    let connection = Outcome::Connection {
                        sent: 12,
                        received: 345,
                        error,
                    };
                    both_ways(&connection, record, duration);
                }
            }
        }
    }
}
