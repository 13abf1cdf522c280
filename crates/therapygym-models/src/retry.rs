//! Bounded retries with exponential backoff, full jitter and a capped Retry-After (R2), and the
//! per-attempt / per-call timeouts (R3). The arithmetic is pure so it is tested without sleeping.

use std::time::Duration;

use crate::error::ModelError;

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all (1 = no retry).
    pub max_attempts: u32,
    pub initial_delay: Duration,
    pub multiplier: f64,
    pub max_delay: Duration,
    /// A server's Retry-After is honoured up to this much.
    pub retry_after_cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_delay: Duration::from_secs(1),
            multiplier: 2.0,
            max_delay: Duration::from_secs(60),
            retry_after_cap: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// No retries at all (tests, fail-fast tools).
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The exponential ceiling after the `failed`-th failed attempt (1-based), before jitter.
    pub fn backoff_ceiling(&self, failed: u32) -> Duration {
        let exp = self
            .multiplier
            .powi(i32::try_from(failed.saturating_sub(1)).unwrap_or(i32::MAX));
        let secs = (self.initial_delay.as_secs_f64() * exp).min(self.max_delay.as_secs_f64());
        Duration::from_secs_f64(secs.max(0.0))
    }

    /// Wait before the next attempt: full jitter over the ceiling, but never less than the
    /// server's (capped) Retry-After. `jitter` is uniform in [0, 1).
    pub fn wait(&self, failed: u32, err: &ModelError, jitter: f64) -> Duration {
        let backoff = self.backoff_ceiling(failed).mul_f64(jitter.clamp(0.0, 1.0));
        let hinted = err
            .retry_after()
            .map(|d| d.min(self.retry_after_cap))
            .unwrap_or_default();
        backoff.max(hinted)
    }

    pub fn check(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("`retries.max_attempts` must be at least 1".into());
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err("`retries.multiplier` must be a finite number >= 1".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Timeouts {
    /// One HTTP request or one local generation.
    pub attempt: Duration,
    /// All attempts and waits of one logical call.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            attempt: Duration::from_secs(120),
            total: Duration::from_secs(600),
        }
    }
}

impl Timeouts {
    /// Sets the per-attempt limit, raising the total so it still covers every attempt of
    /// `policy` and the longest back-off between them.
    pub fn set_attempt(&mut self, attempt: Duration, policy: &RetryPolicy) {
        let attempts = policy.max_attempts.max(1);
        self.attempt = attempt;
        self.total = self
            .total
            .max(attempt.saturating_mul(attempts) + policy.max_delay.saturating_mul(attempts));
    }

    pub fn check(&self, policy: &RetryPolicy) -> Result<(), String> {
        if self.attempt.is_zero() {
            return Err("`timeouts.attempt_s` must be positive".into());
        }
        if self.attempt > self.total {
            return Err(format!(
                "`timeouts.attempt_s` ({:.0} s) must not exceed `timeouts.call_total_s` ({:.0} s)",
                self.attempt.as_secs_f64(),
                self.total.as_secs_f64()
            ));
        }
        if policy.max_delay >= self.total {
            return Err(format!(
                "`retries.max_delay_s` ({:.0} s) must be below `timeouts.call_total_s` ({:.0} s)",
                policy.max_delay.as_secs_f64(),
                self.total.as_secs_f64()
            ));
        }
        Ok(())
    }
}

/// `THERAPYGYM_TEST_NO_RETRY_DELAY=1` makes backoff sleeps instant while the computed waits
/// are still reported (tests).
pub fn sleeps_disabled() -> bool {
    std::env::var("THERAPYGYM_TEST_NO_RETRY_DELAY").is_ok_and(|v| v == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_longer_attempt_limit_raises_the_total_to_cover_every_attempt() {
        let policy = RetryPolicy::default();
        let mut t = Timeouts::default();
        t.set_attempt(Duration::from_secs(1), &policy);
        assert_eq!(
            (t.attempt, t.total),
            (Duration::from_secs(1), Duration::from_secs(600))
        );
        t.set_attempt(Duration::from_secs(200), &policy);
        assert_eq!(t.total, Duration::from_secs(5 * 200 + 5 * 60));
        assert!(t.check(&policy).is_ok());
    }
    use crate::error::ErrorKind;

    #[test]
    fn exponential_ceiling_is_capped() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff_ceiling(1), Duration::from_secs(1));
        assert_eq!(p.backoff_ceiling(2), Duration::from_secs(2));
        assert_eq!(p.backoff_ceiling(4), Duration::from_secs(8));
        assert_eq!(p.backoff_ceiling(10), Duration::from_secs(60));
        assert_eq!(p.backoff_ceiling(1000), Duration::from_secs(60));
    }

    #[test]
    fn full_jitter_spans_zero_to_ceiling() {
        let p = RetryPolicy::default();
        let e = ModelError::new(ErrorKind::Transient, "x");
        assert_eq!(p.wait(3, &e, 0.0), Duration::ZERO);
        assert_eq!(p.wait(3, &e, 0.5), Duration::from_secs(2));
    }

    #[test]
    fn retry_after_is_honoured_but_capped() {
        let p = RetryPolicy::default();
        let e = ModelError::new(ErrorKind::RateLimited, "429")
            .with_retry_after(Some(Duration::from_secs(89)));
        // An 89 s hint is capped at 60 s, and wins over a smaller jittered backoff.
        assert_eq!(p.wait(1, &e, 0.3), Duration::from_secs(60));
        let e = ModelError::new(ErrorKind::RateLimited, "429")
            .with_retry_after(Some(Duration::from_secs(3)));
        assert_eq!(p.wait(1, &e, 0.0), Duration::from_secs(3));
        // A larger backoff wins over a small hint.
        assert_eq!(p.wait(5, &e, 0.5), Duration::from_secs(8));
    }

    #[test]
    fn invalid_combinations_name_both_keys() {
        let p = RetryPolicy::default();
        let t = Timeouts {
            attempt: Duration::from_secs(700),
            total: Duration::from_secs(600),
        };
        let msg = t.check(&p).unwrap_err();
        assert!(
            msg.contains("timeouts.attempt_s") && msg.contains("timeouts.call_total_s"),
            "{msg}"
        );
        let t = Timeouts {
            attempt: Duration::from_secs(10),
            total: Duration::from_secs(30),
        };
        let msg = t.check(&p).unwrap_err();
        assert!(msg.contains("retries.max_delay_s"), "{msg}");
        assert!(
            RetryPolicy {
                max_attempts: 0,
                ..p
            }
            .check()
            .is_err()
        );
    }
}
