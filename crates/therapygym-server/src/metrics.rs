//! Counters and latency histograms, rendered in the Prometheus text format (`GET /metrics`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    120.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }
}

/// Counters not tied to a route.
#[derive(Debug, Default)]
pub struct Counters {
    pub episodes_created: AtomicU64,
    pub episodes_finished: AtomicU64,
    pub episodes_expired: AtomicU64,
    pub episodes_deleted: AtomicU64,
    pub episodes_abandoned: AtomicU64,
    pub rollouts_finished: AtomicU64,
    pub rollouts_failed: AtomicU64,
    pub steps: AtomicU64,
    pub judge_calls: AtomicU64,
    pub judge_failures: AtomicU64,
    pub judge_cache_hits: AtomicU64,
    pub scored: AtomicU64,
    pub overloaded: AtomicU64,
    pub circuit_rejections: AtomicU64,
    pub group_overflows: AtomicU64,
    pub store_errors: AtomicU64,
    /// Retries of per-request policy models (driver mode), added when each rollout ends.
    pub policy_calls: AtomicU64,
    pub policy_retries: AtomicU64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub counters: Counters,
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    unscored: Mutex<BTreeMap<String, u64>>,
}

/// Values read at scrape time from elsewhere (gauges and model statistics).
#[derive(Debug, Default)]
pub struct Gauges {
    pub live_episodes: u64,
    pub done_episodes_held: u64,
    pub live_rollouts: u64,
    pub groups: u64,
    pub circuit_open: bool,
    pub circuit_opened_total: u64,
    /// (role, calls, retries, failures) of the service's own models.
    pub models: Vec<(&'static str, u64, u64, u64)>,
}

/// The method label: the methods HTTP defines, anything else `other` — a client choosing
/// method names must not grow the label set (and memory).
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    const KNOWN: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::POST, "POST"),
        (Method::DELETE, "DELETE"),
        (Method::PUT, "PUT"),
        (Method::PATCH, "PATCH"),
        (Method::HEAD, "HEAD"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::CONNECT, "CONNECT"),
        (Method::TRACE, "TRACE"),
    ];
    KNOWN
        .iter()
        .find(|(k, _)| k == m)
        .map(|(_, s)| *s)
        .unwrap_or("other")
}

impl Metrics {
    /// Counts a request. `route` is a route pattern of the router (or `unmatched`), so the
    /// label sets stay bounded by routes × methods × statuses.
    pub fn observe_request(
        &self,
        route: &str,
        method: &axum::http::Method,
        status: u16,
        elapsed: Duration,
    ) {
        let method = method_label(method);
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((route.to_string(), method.to_string(), status))
                .or_insert(0) += 1;
        }
        if let Ok(mut m) = self.latency.lock() {
            match m.get_mut(route) {
                Some(h) => h.observe(elapsed.as_secs_f64()),
                None => {
                    let mut h = Histogram::default();
                    h.observe(elapsed.as_secs_f64());
                    m.insert(route.to_string(), h);
                }
            }
        }
    }

    pub fn unscored(&self, reason: &str) {
        if let Ok(mut m) = self.unscored.lock() {
            *m.entry(reason.to_string()).or_insert(0) += 1;
        }
    }

    /// The Prometheus text exposition (version 0.0.4).
    pub fn render(&self, g: &Gauges) -> String {
        let mut o = String::with_capacity(4096);
        self.render_http(&mut o);
        render_gauges(&mut o, g);
        self.render_sessions(&mut o);
        self.render_models(&mut o, g);
        self.render_guards(&mut o, g);
        o
    }

    /// Requests by route, method and status, and latency histograms per route.
    fn render_http(&self, o: &mut String) {
        header(
            o,
            "therapygym_http_requests_total",
            "counter",
            "HTTP requests by route, method and status.",
        );
        if let Ok(m) = self.requests.lock() {
            for ((route, method, status), n) in m.iter() {
                let _ = writeln!(
                    o,
                    "therapygym_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                    esc(route),
                    esc(method)
                );
            }
        }
        header(
            o,
            "therapygym_http_request_duration_seconds",
            "histogram",
            "Service latency per route (includes patient and judge calls made during the request).",
        );
        let Ok(m) = self.latency.lock() else {
            return;
        };
        let name = "therapygym_http_request_duration_seconds";
        for (route, h) in m.iter() {
            let r = esc(route);
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "{name}_bucket{{route=\"{r}\",le=\"{le}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(o, "{name}_bucket{{route=\"{r}\",le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(o, "{name}_sum{{route=\"{r}\"}} {}", h.sum);
            let _ = writeln!(o, "{name}_count{{route=\"{r}\"}} {}", h.count);
        }
    }

    /// Episodes, rollouts, turns, judge calls and scoring outcomes.
    fn render_sessions(&self, o: &mut String) {
        let c = &self.counters;
        labelled(
            o,
            "therapygym_episodes_total",
            "Episode life-cycle events.",
            "event",
            [
                ("created", get(&c.episodes_created)),
                ("finished", get(&c.episodes_finished)),
                ("expired", get(&c.episodes_expired)),
                ("deleted", get(&c.episodes_deleted)),
                ("abandoned", get(&c.episodes_abandoned)),
            ],
        );
        labelled(
            o,
            "therapygym_rollouts_total",
            "Driver rollouts by outcome.",
            "outcome",
            [
                ("finished", get(&c.rollouts_finished)),
                ("failed", get(&c.rollouts_failed)),
            ],
        );
        for (name, help, v) in [
            (
                "therapygym_steps_total",
                "Therapist turns submitted.",
                &c.steps,
            ),
            (
                "therapygym_judge_calls_total",
                "Judge calls made (cache hits excluded).",
                &c.judge_calls,
            ),
            (
                "therapygym_judge_failures_total",
                "Judge calls that could not reach the judge after retries.",
                &c.judge_failures,
            ),
            (
                "therapygym_judge_cache_hits_total",
                "Scores served from the in-memory judgment cache.",
                &c.judge_cache_hits,
            ),
            ("therapygym_scored_total", "Sessions scored.", &c.scored),
        ] {
            counter(o, name, help, get(v));
        }
        let unscored: Vec<(String, u64)> = self
            .unscored
            .lock()
            .map(|m| m.iter().map(|(r, n)| (esc(r), *n)).collect())
            .unwrap_or_default();
        labelled(
            o,
            "therapygym_unscored_total",
            "Sessions the judge could not score, by reason (reward null, never 0).",
            "reason",
            unscored,
        );
    }

    /// Calls, retries and failures of the service's models by role, and of the policies
    /// the rollout driver called.
    fn render_models(&self, o: &mut String, g: &Gauges) {
        let c = &self.counters;
        let calls = g.models.iter().map(|(r, n, _, _)| (*r, *n));
        labelled(
            o,
            "therapygym_model_calls_total",
            "Logical model calls by role.",
            "role",
            calls.chain([("policy", get(&c.policy_calls))]),
        );
        let retries = g.models.iter().map(|(r, _, n, _)| (*r, *n));
        labelled(
            o,
            "therapygym_model_retries_total",
            "Retried model attempts by role (R2).",
            "role",
            retries.chain([("policy", get(&c.policy_retries))]),
        );
        labelled(
            o,
            "therapygym_model_failures_total",
            "Model calls that failed after retries, by role.",
            "role",
            g.models.iter().map(|(r, _, _, n)| (*r, *n)),
        );
    }

    /// What the service refused or could not do: overload, the circuit breaker, group
    /// overflows, store errors.
    fn render_guards(&self, o: &mut String, g: &Gauges) {
        let c = &self.counters;
        for (name, help, v) in [
            (
                "therapygym_overloaded_total",
                "Requests refused with 429 at max_live_episodes.",
                get(&c.overloaded),
            ),
            (
                "therapygym_circuit_rejections_total",
                "Requests refused with 503 circuit_open.",
                get(&c.circuit_rejections),
            ),
            (
                "therapygym_circuit_opened_total",
                "Times the judge circuit breaker opened.",
                g.circuit_opened_total,
            ),
            (
                "therapygym_group_overflow_total",
                "Episodes that joined a group already holding group_size members.",
                get(&c.group_overflows),
            ),
            (
                "therapygym_store_errors_total",
                "Finished episodes that could not be written to the run store.",
                get(&c.store_errors),
            ),
        ] {
            counter(o, name, help, v);
        }
    }
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

fn render_gauges(o: &mut String, g: &Gauges) {
    for (name, help, v) in [
        (
            "therapygym_live_episodes",
            "Episodes in progress (not yet done).",
            g.live_episodes,
        ),
        (
            "therapygym_done_episodes_held",
            "Finished episodes kept for idempotent re-posts until their TTL or DELETE.",
            g.done_episodes_held,
        ),
        (
            "therapygym_live_rollouts",
            "Driver rollouts in progress.",
            g.live_rollouts,
        ),
        ("therapygym_groups", "Groups tracked.", g.groups),
        (
            "therapygym_circuit_open",
            "1 while the judge circuit breaker is open.",
            u64::from(g.circuit_open),
        ),
    ] {
        gauge(o, name, help, v);
    }
}

/// A counter family with one label: `name{label="value"} n` per row. Values must already be
/// escaped.
fn labelled<S: std::fmt::Display>(
    o: &mut String,
    name: &str,
    help: &str,
    label: &str,
    rows: impl IntoIterator<Item = (S, u64)>,
) {
    header(o, name, "counter", help);
    for (value, n) in rows {
        let _ = writeln!(o, "{name}{{{label}=\"{value}\"}} {n}");
    }
}

fn header(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

fn counter(o: &mut String, name: &str, help: &str, v: u64) {
    header(o, name, "counter", help);
    let _ = writeln!(o, "{name} {v}");
}

fn gauge(o: &mut String, name: &str, help: &str, v: u64) {
    header(o, name, "gauge", help);
    let _ = writeln!(o, "{name} {v}");
}

/// Label values escape backslash, quote and newline.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        let post = axum::http::Method::POST;
        m.observe_request("/v1/score", &post, 200, Duration::from_micros(700));
        m.observe_request("/v1/score", &post, 200, Duration::from_millis(30));
        for i in 0..100 {
            let custom = axum::http::Method::from_bytes(format!("X{i}").as_bytes()).unwrap();
            m.observe_request("unmatched", &custom, 404, Duration::ZERO);
        }
        m.unscored("parse_failure");
        let text = m.render(&Gauges::default());
        assert!(text.contains(
            "therapygym_http_requests_total{route=\"/v1/score\",method=\"POST\",status=\"200\"} 2"
        ));
        assert!(text.contains(
            "therapygym_http_request_duration_seconds_bucket{route=\"/v1/score\",le=\"0.001\"} 1"
        ));
        assert!(text.contains(
            "therapygym_http_request_duration_seconds_bucket{route=\"/v1/score\",le=\"+Inf\"} 2"
        ));
        assert!(text.contains("therapygym_unscored_total{reason=\"parse_failure\"} 1"));
        // A hundred invented methods are one label value.
        assert!(text.contains(
            "therapygym_http_requests_total{route=\"unmatched\",method=\"other\",status=\"404\"} 100"
        ));
        assert!(!text.contains("X7"));
        assert!(text.contains("# TYPE therapygym_live_episodes gauge"));
    }
}
