//! The service's settings. Everything that changes results (models, data files, session and
//! judge settings) is recorded in the run manifest; limits and timings are recorded too but do not
//! change any reward.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use therapygym_judge::JudgeConfig;
use therapygym_models::RetryPolicy;
use therapygym_run::AssetSources;
use therapygym_session::SessionConfig;

/// What `/get_reward` answers for a session the judge could not score (`docs/serve.md`, "Unscored sessions").
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "unscored", rename_all = "snake_case")]
pub enum UnscoredPolicy {
    /// HTTP 422 `unscored` (503 `judge_unavailable` when the judge was unreachable): opt-in
    /// (`--reward-unscored error`). OpenRLHF retries a failed request 5 times and then leaves
    /// the sample without a reward, so this fails runs with a misleading error.
    Error,
    /// This value (default 0.0), reported as `extra_logs.unscored = [1.0]` with the reason in
    /// `unscored_reasons`. The default: a well-formed request never gets a 4xx.
    Neutral { neutral_value: f64 },
}

/// The chat template `/get_reward` parses `query` with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatFormat {
    /// `<|im_start|>role\n…<|im_end|>` (Qwen, SmolLM, many others). The default.
    Chatml,
    /// `<|start_header_id|>role<|end_header_id|>\n\n…<|eot_id|>` (Llama 3).
    Llama3,
}

impl FromStr for ChatFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "chatml" => Ok(ChatFormat::Chatml),
            "llama3" => Ok(ChatFormat::Llama3),
            other => Err(format!(
                "unknown chat format `{other}`; use `chatml` or `llama3`"
            )),
        }
    }
}

/// The judge circuit breaker (`docs/serve.md`, "Unscored sessions").
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CircuitConfig {
    /// Judge calls are counted over this sliding window.
    pub window: Duration,
    /// No decision below this many calls in the window.
    pub min_calls: usize,
    /// The circuit opens when the failed share exceeds this.
    pub failure_ratio: f64,
    /// How long it stays open.
    pub open_for: Duration,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(60),
            min_calls: 10,
            failure_ratio: 0.5,
            open_for: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The simulated patient (model spec).
    pub patient: String,
    /// The judge (model spec).
    pub judge: String,
    /// Training profiles, rubric, taxonomy, prompts and reward config (None = shipped).
    pub assets: AssetSources,
    /// Held-out profiles for `split` = `val` / `test` (None = the shipped held-out set).
    pub holdout: Option<PathBuf>,
    /// Defaults of every episode: turns, opening, closing reply, patient sampling.
    pub session: SessionConfig,
    pub judge_config: JudgeConfig,
    /// A calibration map applied to stored judgments (raw scores still drive the reward).
    pub calibration: Option<std::sync::Arc<therapygym_judge::Calibration>>,
    /// The run directory finished episodes are written to (None: nothing is stored).
    pub out: Option<PathBuf>,
    /// Idle TTL of an episode; every request refreshes it.
    pub ttl: Duration,
    /// Hard lifetime of an episode, whatever its activity.
    pub max_lifetime: Duration,
    /// How often expired episodes are swept.
    pub sweep_interval: Duration,
    /// Episodes (and rollouts) in progress at once; more get 429 `overloaded`.
    pub max_live_episodes: usize,
    /// Members per group (GRPO G): `/v1/groups` waits for this many to finish.
    pub group_size: u32,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Most transcripts in one `/v1/score` or `/get_reward` request.
    pub max_batch_items: usize,
    /// Largest `limits.max_therapist_turns` accepted.
    pub max_turns: u32,
    /// Longest `wait_s` of `/v1/groups/{id}`.
    pub max_group_wait: Duration,
    pub unscored_policy: UnscoredPolicy,
    pub chat_format: ChatFormat,
    /// `/get_reward` answers within this (OpenRLHF waits 180 s per try), else 503
    /// `judge_unavailable` so its retry re-asks.
    pub reward_route_timeout: Duration,
    pub circuit: CircuitConfig,
    /// Retries of patient, judge and policy calls (R2).
    pub retry: RetryPolicy,
    pub patient_concurrency: usize,
    pub judge_concurrency: usize,
    /// Longest single judge attempt (`--judge-timeout-s`); a hung judge call is abandoned and
    /// retried, then unscored. None: the role's default (120 s remote, 1 h local).
    pub judge_timeout: Option<Duration>,
    /// Bytes of scored judge records kept in memory (keyed by transcript and judge seed) for
    /// idempotent scoring, counted as their JSON size plus 256 bytes per entry; the oldest go
    /// first.
    pub score_cache_bytes: usize,
    /// The bearer token every route but `/healthz` requires (None: no authentication, which
    /// the service allows on loopback addresses only).
    pub auth_token: Option<crate::auth::AuthToken>,
    /// URL prefixes a `POST /v1/rollouts` request may name as `policy.base_url`
    /// (`--policy-url-allow`); empty: the route answers 403 `rollouts_disabled`.
    pub policy_url_allow: Vec<String>,
    /// Per-turn rewards on intermediate env-step answers (`--turn-reward`), configured by the
    /// reward config's `[turn_reward]` section.
    pub turn_reward: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            patient: "embedded".into(),
            judge: "embedded".into(),
            assets: AssetSources::new("cbt"),
            holdout: None,
            session: SessionConfig::default(),
            judge_config: JudgeConfig::default(),
            calibration: None,
            out: None,
            ttl: Duration::from_secs(900),
            max_lifetime: Duration::from_secs(2 * 3600),
            sweep_interval: Duration::from_secs(5),
            max_live_episodes: 4096,
            group_size: 4,
            max_body_bytes: 4 * 1024 * 1024,
            max_batch_items: 256,
            max_turns: 50,
            max_group_wait: Duration::from_secs(600),
            unscored_policy: UnscoredPolicy::Neutral { neutral_value: 0.0 },
            chat_format: ChatFormat::Chatml,
            reward_route_timeout: Duration::from_secs(170),
            circuit: CircuitConfig::default(),
            retry: RetryPolicy::default(),
            patient_concurrency: 8,
            judge_concurrency: 16,
            judge_timeout: None,
            score_cache_bytes: 64 * 1024 * 1024,
            auth_token: None,
            policy_url_allow: Vec::new(),
            turn_reward: false,
        }
    }
}

impl ServerConfig {
    pub fn check(&self) -> Result<(), String> {
        if self.ttl.is_zero() {
            return Err("`--ttl-s` must be positive".into());
        }
        if self.max_lifetime < self.ttl {
            return Err("the hard lifetime must not be shorter than the idle TTL".into());
        }
        if self.max_live_episodes == 0 {
            return Err("`--max-live-episodes` must be at least 1".into());
        }
        if self.group_size == 0 {
            return Err("`--group-size` must be at least 1".into());
        }
        if self.session.turns == 0 || self.session.turns > self.max_turns {
            return Err(format!(
                "`--turns` must be between 1 and {}",
                self.max_turns
            ));
        }
        if let UnscoredPolicy::Neutral { neutral_value } = self.unscored_policy
            && !neutral_value.is_finite()
        {
            return Err("the neutral reward must be a finite number".into());
        }
        if self.judge_timeout.is_some_and(|t| t.is_zero()) {
            return Err("`--judge-timeout-s` must be positive".into());
        }
        crate::allow::PolicyAllow::parse(&self.policy_url_allow)?;
        if !(0.0..=1.0).contains(&self.circuit.failure_ratio) {
            return Err("the circuit failure ratio must lie in [0, 1]".into());
        }
        self.retry.check()
    }
}
