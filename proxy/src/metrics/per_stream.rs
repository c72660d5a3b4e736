//! The metric handles one inbound stream has used, found again by their labels'
//! values. A connection's requests mostly share their labels (one or two codes,
//! one deciding policy), and building the labels and looking them up in the
//! registry cost more than recording (4.7 k and 2.9 k instructions per request).

use std::time::Duration;

use metrics::{Counter, Histogram, counter, histogram};
use parking_lot::Mutex;

use super::Principal;

/// Label sets remembered per stream; past them the oldest is looked up again.
const REMEMBERED: usize = 4;

/// Handles `H` by the label values `K` they were built with.
#[derive(Debug)]
struct Remembered<K, H> {
    seen: Mutex<Vec<(K, H)>>,
}

impl<K, H> Default for Remembered<K, H> {
    fn default() -> Self {
        Self {
            seen: Mutex::new(Vec::new()),
        }
    }
}

impl<K, H> Remembered<K, H> {
    /// Uses the handle whose labels `is` recognizes, built by `make` the first time.
    fn with(&self, is: impl Fn(&K) -> bool, make: impl FnOnce() -> (K, H), used: impl FnOnce(&H)) {
        let mut seen = self.seen.lock();
        let index = match seen.iter().position(|(key, _)| is(key)) {
            Some(index) => index,
            None => {
                if seen.len() == REMEMBERED {
                    seen.remove(0);
                } else {
                    // one slot per label set seen: a first push would make room
                    // for four, and most streams only ever see one (a TCP
                    // stream's one decision: 240 bytes per idle connection)
                    seen.reserve_exact(1);
                }
                seen.push(make());
                seen.len() - 1
            }
        };
        used(&seen[index].1);
    }
}

/// `istio_requests_total` and `istio_request_duration_seconds` of one stream,
/// whose principals are fixed, by response code and protocol.
#[derive(Debug, Default)]
pub(crate) struct RequestMetrics {
    handles: Remembered<(u16, bool), (Counter, Histogram)>,
}

impl RequestMetrics {
    /// One HTTP request served on the destination side.
    pub(crate) fn record(
        &self,
        source_principal: Principal<'_>,
        destination_principal: Principal<'_>,
        code: u16,
        grpc: bool,
        duration: Duration,
    ) {
        let make = || {
            let response_code = code.to_string();
            let requests = counter!(
                "istio_requests_total",
                "reporter" => "destination",
                "source_principal" => source_principal.to_string(),
                "destination_principal" => destination_principal.to_string(),
                "response_code" => response_code.clone(),
                "request_protocol" => if grpc { "grpc" } else { "http" },
            );
            let duration =
                histogram!("istio_request_duration_seconds", "response_code" => response_code);
            ((code, grpc), (requests, duration))
        };
        self.handles.with(
            |&seen| seen == (code, grpc),
            make,
            |(requests, histogram)| {
                requests.increment(1);
                histogram.record(duration.as_secs_f64());
            },
        );
    }
}

/// `meshward_authz_decisions_total` of one stream's decisions.
#[derive(Debug, Default)]
pub(crate) struct DecisionMetrics {
    counters: Remembered<Decided, Counter>,
}

/// A decision's labels.
#[derive(Debug, PartialEq)]
struct Decided {
    layer: &'static str,
    allowed: bool,
    /// The deciding policy, `namespace/name`, or `-`.
    policy: String,
    action: &'static str,
}

impl DecisionMetrics {
    /// One authorization decision, by layer (`l4`, `l7`), deciding policy and
    /// its action (`ALLOW`, `DENY`, `CUSTOM`, `-`).
    pub(crate) fn count(
        &self,
        layer: &'static str,
        allowed: bool,
        policy: &str,
        action: &'static str,
    ) {
        let make = || {
            let counter = counter!(
                "meshward_authz_decisions_total",
                "layer" => layer,
                "decision" => if allowed { "allow" } else { "deny" },
                "policy" => policy.to_owned(),
                "action" => action,
            );
            let decided = Decided {
                layer,
                allowed,
                policy: policy.to_owned(),
                action,
            };
            (decided, counter)
        };
        self.counters.with(
            |seen| {
                seen.allowed == allowed
                    && seen.layer == layer
                    && seen.action == action
                    && seen.policy == policy
            },
            make,
            |counter| counter.increment(1),
        );
    }
}

#[cfg(test)]
mod tests {
    use meshward_spiffe::SpiffeId;
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;

    /// The value of the one line of `text` that starts with `name{` and holds
    /// every label of `labels`.
    fn value(text: &str, name: &str, labels: &[&str]) -> Option<String> {
        let prefix = format!("{name}{{");
        let line = text
            .lines()
            .find(|l| l.starts_with(&prefix) && labels.iter().all(|label| l.contains(label)))?;
        line.rsplit(' ').next().map(str::to_owned)
    }

    /// Each request counted under its own code, on one stream, past the codes
    /// it remembers (the oldest found again through the registry).
    #[test]
    fn a_streams_requests_are_counted_by_code() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let source: SpiffeId = "spiffe://td.example/ns/a/sa/client".parse().unwrap();
        let stream = RequestMetrics::default();
        let codes = [200, 200, 404, 500, 503, 403, 200, 200];
        metrics::with_local_recorder(&recorder, || {
            for code in codes {
                let (from, to) = (Principal(Some(&source)), Principal(None));
                stream.record(from, to, code, false, Duration::from_millis(1));
            }
        });
        let text = handle.render();
        for (code, count) in [(200, 4), (404, 1), (500, 1), (503, 1), (403, 1)] {
            let labels = [
                &format!("response_code=\"{code}\"") as &str,
                "source_principal=\"spiffe://td.example/ns/a/sa/client\"",
                "destination_principal=\"unknown\"",
            ];
            let got = value(&text, "istio_requests_total", &labels);
            assert_eq!(got.as_deref(), Some(&*count.to_string()), "{code}:\n{text}");
        }
    }

    /// Each decision under its own policy, action and outcome, past the label
    /// sets a stream remembers.
    #[test]
    fn a_streams_decisions_are_counted_by_policy_and_outcome() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let stream = DecisionMetrics::default();
        let decisions = [
            ("l7", true, "ns/allow-get", "ALLOW"),
            ("l7", true, "ns/allow-get", "ALLOW"),
            ("l7", true, "ns/allow-post", "ALLOW"),
            ("l7", false, "ns/deny-admin", "DENY"),
            ("l7", false, "-", "-"),
            ("l4", true, "ns/allow-get", "ALLOW"),
            ("l7", false, "ns/ext", "CUSTOM"),
            ("l7", true, "ns/allow-get", "ALLOW"),
        ];
        metrics::with_local_recorder(&recorder, || {
            for (layer, allowed, policy, action) in decisions {
                stream.count(layer, allowed, policy, action);
            }
        });
        let text = handle.render();
        for (labels, count) in [
            (
                [
                    "layer=\"l7\"",
                    "decision=\"allow\"",
                    "policy=\"ns/allow-get\"",
                ],
                3,
            ),
            (
                [
                    "layer=\"l7\"",
                    "decision=\"deny\"",
                    "policy=\"ns/deny-admin\"",
                ],
                1,
            ),
            (["layer=\"l7\"", "decision=\"deny\"", "policy=\"-\""], 1),
            (
                [
                    "layer=\"l7\"",
                    "action=\"ALLOW\"",
                    "policy=\"ns/allow-post\"",
                ],
                1,
            ),
            (
                [
                    "layer=\"l4\"",
                    "decision=\"allow\"",
                    "policy=\"ns/allow-get\"",
                ],
                1,
            ),
            (
                ["layer=\"l7\"", "action=\"CUSTOM\"", "policy=\"ns/ext\""],
                1,
            ),
        ] {
            let got = value(&text, "meshward_authz_decisions_total", &labels);
            assert_eq!(
                got.as_deref(),
                Some(&*count.to_string()),
                "{labels:?}:\n{text}"
            );
        }
    }
}
