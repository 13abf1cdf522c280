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

impl Metrics {
    pub fn observe_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
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
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);

        header(
            &mut o,
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
            &mut o,
            "therapygym_http_request_duration_seconds",
            "histogram",
            "Service latency per route (includes patient and judge calls made during the request).",
        );
        if let Ok(m) = self.latency.lock() {
            for (route, h) in m.iter() {
                let r = esc(route);
                for (i, le) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        o,
                        "therapygym_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"{le}\"}} {}",
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    o,
                    "therapygym_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(
                    o,
                    "therapygym_http_request_duration_seconds_sum{{route=\"{r}\"}} {}",
                    h.sum
                );
                let _ = writeln!(
                    o,
                    "therapygym_http_request_duration_seconds_count{{route=\"{r}\"}} {}",
                    h.count
                );
            }
        }

        gauge(
            &mut o,
            "therapygym_live_episodes",
            "Episodes in progress (not yet done).",
            g.live_episodes,
        );
        gauge(
            &mut o,
            "therapygym_done_episodes_held",
            "Finished episodes kept for idempotent re-posts until their TTL or DELETE.",
            g.done_episodes_held,
        );
        gauge(
            &mut o,
            "therapygym_live_rollouts",
            "Driver rollouts in progress.",
            g.live_rollouts,
        );
        gauge(&mut o, "therapygym_groups", "Groups tracked.", g.groups);
        gauge(
            &mut o,
            "therapygym_circuit_open",
            "1 while the judge circuit breaker is open.",
            u64::from(g.circuit_open),
        );

        header(
            &mut o,
            "therapygym_episodes_total",
            "counter",
            "Episode life-cycle events.",
        );
        for (event, v) in [
            ("created", &c.episodes_created),
            ("finished", &c.episodes_finished),
            ("expired", &c.episodes_expired),
            ("deleted", &c.episodes_deleted),
        ] {
            let _ = writeln!(
                o,
                "therapygym_episodes_total{{event=\"{event}\"}} {}",
                get(v)
            );
        }
        header(
            &mut o,
            "therapygym_rollouts_total",
            "counter",
            "Driver rollouts by outcome.",
        );
        let _ = writeln!(
            o,
            "therapygym_rollouts_total{{outcome=\"finished\"}} {}",
            get(&c.rollouts_finished)
        );
        let _ = writeln!(
            o,
            "therapygym_rollouts_total{{outcome=\"failed\"}} {}",
            get(&c.rollouts_failed)
        );
        counter(
            &mut o,
            "therapygym_steps_total",
            "Therapist turns submitted.",
            get(&c.steps),
        );
        counter(
            &mut o,
            "therapygym_judge_calls_total",
            "Judge calls made (cache hits excluded).",
            get(&c.judge_calls),
        );
        counter(
            &mut o,
            "therapygym_judge_failures_total",
            "Judge calls that could not reach the judge after retries.",
            get(&c.judge_failures),
        );
        counter(
            &mut o,
            "therapygym_judge_cache_hits_total",
            "Scores served from the in-memory judgment cache.",
            get(&c.judge_cache_hits),
        );
        counter(
            &mut o,
            "therapygym_scored_total",
            "Sessions scored.",
            get(&c.scored),
        );
        header(
            &mut o,
            "therapygym_unscored_total",
            "counter",
            "Sessions the judge could not score, by reason (reward null, never 0).",
        );
        if let Ok(m) = self.unscored.lock() {
            for (reason, n) in m.iter() {
                let _ = writeln!(
                    o,
                    "therapygym_unscored_total{{reason=\"{}\"}} {n}",
                    esc(reason)
                );
            }
        }
        header(
            &mut o,
            "therapygym_model_calls_total",
            "counter",
            "Logical model calls by role.",
        );
        for (role, calls, _, _) in &g.models {
            let _ = writeln!(o, "therapygym_model_calls_total{{role=\"{role}\"}} {calls}");
        }
        let _ = writeln!(
            o,
            "therapygym_model_calls_total{{role=\"policy\"}} {}",
            get(&c.policy_calls)
        );
        header(
            &mut o,
            "therapygym_model_retries_total",
            "counter",
            "Retried model attempts by role (R2).",
        );
        for (role, _, retries, _) in &g.models {
            let _ = writeln!(
                o,
                "therapygym_model_retries_total{{role=\"{role}\"}} {retries}"
            );
        }
        let _ = writeln!(
            o,
            "therapygym_model_retries_total{{role=\"policy\"}} {}",
            get(&c.policy_retries)
        );
        header(
            &mut o,
            "therapygym_model_failures_total",
            "counter",
            "Model calls that failed after retries, by role.",
        );
        for (role, _, _, failures) in &g.models {
            let _ = writeln!(
                o,
                "therapygym_model_failures_total{{role=\"{role}\"}} {failures}"
            );
        }
        counter(
            &mut o,
            "therapygym_overloaded_total",
            "Requests refused with 429 at max_live_episodes.",
            get(&c.overloaded),
        );
        counter(
            &mut o,
            "therapygym_circuit_rejections_total",
            "Requests refused with 503 circuit_open.",
            get(&c.circuit_rejections),
        );
        counter(
            &mut o,
            "therapygym_circuit_opened_total",
            "Times the judge circuit breaker opened.",
            g.circuit_opened_total,
        );
        counter(
            &mut o,
            "therapygym_group_overflow_total",
            "Episodes that joined a group already holding group_size members.",
            get(&c.group_overflows),
        );
        counter(
            &mut o,
            "therapygym_store_errors_total",
            "Finished episodes that could not be written to the run store.",
            get(&c.store_errors),
        );
        o
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
        m.observe_request("/v1/score", "POST", 200, Duration::from_micros(700));
        m.observe_request("/v1/score", "POST", 200, Duration::from_millis(30));
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
        assert!(text.contains("# TYPE therapygym_live_episodes gauge"));
    }
}
