//! The judge circuit breaker (`docs/serve.md`): if more than `failure_ratio` of the judge
//! calls in a sliding `window` failed (at least `min_calls` calls), new work gets 503
//! `circuit_open` for `open_for` instead of feeding failures into training.
//!
//! A judge call *fails* when the judge could not be reached after its retries (unscored with
//! reason `provider_error`); an unusable reply (parse failure, schema violation, ...) is a
//! judgment problem, masked as unscored, not an outage.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::CircuitConfig;

#[derive(Debug)]
pub struct Circuit {
    cfg: CircuitConfig,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    calls: VecDeque<(Instant, bool)>,
    open_until: Option<Instant>,
    opened: u64,
}

impl Circuit {
    pub fn new(cfg: CircuitConfig) -> Self {
        Self {
            cfg,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// `Err(remaining)` while the circuit is open.
    pub fn check(&self) -> Result<(), Duration> {
        let Ok(mut g) = self.inner.lock() else {
            return Ok(());
        };
        let now = Instant::now();
        match g.open_until {
            Some(until) if until > now => Err(until - now),
            Some(_) => {
                // Closed again: start a fresh window.
                g.open_until = None;
                g.calls.clear();
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Records one judge call.
    pub fn record(&self, failed: bool) {
        let Ok(mut g) = self.inner.lock() else {
            return;
        };
        let now = Instant::now();
        if g.open_until.is_some_and(|u| u > now) {
            return;
        }
        g.calls.push_back((now, failed));
        while let Some((t, _)) = g.calls.front() {
            if now.duration_since(*t) > self.cfg.window {
                g.calls.pop_front();
            } else {
                break;
            }
        }
        let total = g.calls.len();
        let failures = g.calls.iter().filter(|(_, f)| *f).count();
        if total >= self.cfg.min_calls.max(1)
            && failures as f64 > self.cfg.failure_ratio * total as f64
        {
            tracing::warn!(
                failures,
                total,
                open_s = self.cfg.open_for.as_secs(),
                "judge circuit opened"
            );
            g.open_until = Some(now + self.cfg.open_for);
            g.opened += 1;
            g.calls.clear();
        }
    }

    pub fn is_open(&self) -> bool {
        self.check().is_err()
    }

    /// How many times the circuit has opened.
    pub fn times_opened(&self) -> u64 {
        self.inner.lock().map(|g| g.opened).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> CircuitConfig {
        CircuitConfig {
            window: Duration::from_secs(60),
            min_calls: 10,
            failure_ratio: 0.5,
            open_for: Duration::from_millis(50),
        }
    }

    #[test]
    fn opens_above_the_ratio_with_enough_calls_then_closes() {
        let c = Circuit::new(cfg());
        for _ in 0..9 {
            c.record(true);
        }
        assert!(c.check().is_ok(), "9 calls are below the minimum");
        c.record(true);
        assert!(c.check().is_err());
        std::thread::sleep(Duration::from_millis(60));
        assert!(c.check().is_ok());
        assert_eq!(c.times_opened(), 1);
    }

    #[test]
    fn half_failures_do_not_open_it() {
        let c = Circuit::new(cfg());
        for i in 0..20 {
            c.record(i % 2 == 1);
        }
        assert!(c.check().is_ok(), "exactly 50 % is not more than 50 %");
    }
}
