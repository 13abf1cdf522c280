//! The service state: data, models, the judge, the run store, episodes, groups, metrics, and
//! the one scoring path every route uses (judge → reward, with the cache and circuit breaker).

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value, json};
use therapygym_core::seed::derive;
use therapygym_core::{Profile, RewardBreakdown, Transcript, UnscoredReason, Verdict, builtin};
use therapygym_judge::{Judge, JudgeRecord};
use therapygym_models::{Model, ModelSpec, open_model};
use therapygym_run::{Assets, JudgeCtx, RunConfig, model_options, session_reward};
use therapygym_session::{SessionConfig, render_therapist_prompt};
use therapygym_store::{RunStore, SessionRecord};

use crate::circuit::Circuit;
use crate::config::{ServerConfig, UnscoredPolicy};
use crate::episodes::Registry;
use crate::error::{ApiError, ServerError};
use crate::groups::Groups;
use crate::metrics::{Gauges, Metrics};

/// The wire protocol version.
pub const PROTOCOL: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

/// A judged transcript: the judge's record and the reward (None when unscored).
#[derive(Debug, Clone)]
pub struct Scored {
    pub record: Arc<JudgeRecord>,
    pub breakdown: Option<RewardBreakdown>,
    /// Why a scored judgment has no reward (the reward computation's message), else None.
    pub reward_error: Option<String>,
    pub seed: u64,
    pub cache_hit: bool,
}

impl Scored {
    pub fn reward(&self) -> Option<f64> {
        self.breakdown.as_ref().map(|b| b.reward)
    }

    pub fn is_scored(&self) -> bool {
        self.breakdown.is_some()
    }

    pub fn status(&self) -> &'static str {
        if self.is_scored() {
            "scored"
        } else {
            "unscored"
        }
    }

    /// Why there is no reward (None when scored).
    pub fn unscored_reason(&self) -> Option<&'static str> {
        if self.is_scored() {
            return None;
        }
        Some(match &self.record.verdict {
            Verdict::Unscored { reason, .. } => reason.as_str(),
            // Scored by the judge but the reward items are incomplete.
            Verdict::Scored { .. } => UnscoredReason::MissingItem.as_str(),
        })
    }

    pub fn unscored_detail(&self) -> Option<String> {
        match &self.record.verdict {
            Verdict::Unscored { detail, .. } => Some(detail.clone()),
            Verdict::Scored { .. } if !self.is_scored() => Some(
                self.reward_error
                    .clone()
                    .unwrap_or_else(|| "the judgment lacks an item the reward needs".into()),
            ),
            Verdict::Scored { .. } => None,
        }
    }

    /// The judge could not be reached (an outage, not a judgment problem).
    pub fn provider_failed(&self) -> bool {
        self.record.verdict.unscored_reason() == Some(UnscoredReason::ProviderError)
    }
}

type CacheEntry = (Arc<JudgeRecord>, RewardBreakdown);

/// Bytes counted per cache entry besides its JSON size (key, map and queue slots).
const ENTRY_OVERHEAD: usize = 256;

/// Scored judgments by transcript and judge seed (only scored ones: R7 never caches failures),
/// bounded by bytes: a record carries raw judge replies, so its size varies by orders of
/// magnitude and a count of entries bounds nothing.
#[derive(Debug)]
struct ScoreCache {
    cap_bytes: usize,
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    map: HashMap<String, (CacheEntry, usize)>,
    order: VecDeque<String>,
    bytes: usize,
}

impl ScoreCache {
    fn new(cap_bytes: usize) -> Self {
        Self {
            cap_bytes,
            inner: Mutex::new(CacheInner::default()),
        }
    }

    fn get(&self, key: &str) -> Option<CacheEntry> {
        self.inner.lock().ok()?.map.get(key).map(|(e, _)| e.clone())
    }

    /// The bytes an entry is counted as: its JSON size plus [`ENTRY_OVERHEAD`].
    fn size_of(key: &str, v: &CacheEntry) -> usize {
        let json = serde_json::to_vec(&(&*v.0, &v.1)).map_or(usize::MAX / 2, |b| b.len());
        json + key.len() + ENTRY_OVERHEAD
    }

    fn put(&self, key: String, v: CacheEntry) {
        let size = Self::size_of(&key, &v);
        if size > self.cap_bytes {
            return;
        }
        let Ok(mut g) = self.inner.lock() else {
            return;
        };
        if g.map.contains_key(&key) {
            return;
        }
        g.map.insert(key.clone(), (v, size));
        g.order.push_back(key);
        g.bytes += size;
        while g.bytes > self.cap_bytes {
            let Some(old) = g.order.pop_front() else {
                break;
            };
            if let Some((_, n)) = g.map.remove(&old) {
                g.bytes -= n;
            }
        }
    }

    #[cfg(test)]
    fn bytes(&self) -> (usize, usize) {
        self.inner
            .lock()
            .map(|g| (g.bytes, g.map.len()))
            .unwrap_or_default()
    }
}

/// The run store and what committing a judgment needs.
pub struct Persist {
    pub ctx: JudgeCtx,
    pub attempt: u32,
}

pub struct AppState {
    pub cfg: ServerConfig,
    pub assets: Assets,
    pub train: HashMap<String, Profile>,
    pub holdout: HashMap<String, Profile>,
    pub patient: Arc<Model>,
    pub judge: Arc<Judge>,
    pub judge_hash: String,
    pub config_hash: String,
    pub persist: Option<Persist>,
    pub episodes: Registry,
    pub groups: Groups,
    pub metrics: Metrics,
    pub circuit: Circuit,
    pub live_rollouts: AtomicUsize,
    /// The operator's allow-list of policy endpoints (`POST /v1/rollouts`).
    pub policy_allow: crate::allow::PolicyAllow,
    cache: ScoreCache,
    therapist_prompts: Mutex<HashMap<u32, String>>,
    /// Names of the reward items (for `excluded_from_reward`).
    reward_items: Vec<String>,
}

impl AppState {
    pub async fn build(cfg: ServerConfig) -> Result<AppState, ServerError> {
        cfg.check().map_err(ServerError::Config)?;
        let assets = Assets::load(&cfg.assets)?;
        let holdout_set = match &cfg.holdout {
            Some(p) => therapygym_core::load_profiles(p, &assets.vocab)?,
            None => builtin::holdout_profiles()?,
        };
        let train: HashMap<String, Profile> = assets
            .profiles
            .profiles
            .iter()
            .map(|p| (p.id.clone(), p.clone()))
            .collect();
        let holdout: HashMap<String, Profile> = holdout_set
            .profiles
            .iter()
            .map(|p| (p.id.clone(), p.clone()))
            .collect();
        if let Some(both) = train.keys().find(|k| holdout.contains_key(*k)) {
            return Err(ServerError::Config(format!(
                "profile `{both}` is both a training profile ({}) and a held-out one ({}); a profile belongs to one split",
                assets.profiles.source.display(),
                holdout_set.source.display()
            )));
        }
        if cfg.turn_reward && assets.reward.turn_reward.is_none() {
            return Err(ServerError::Config(format!(
                "`--turn-reward` needs a `[turn_reward]` section in the reward config (reward `{}`; pass --reward-config FILE, docs/serve.md \"Per-turn rewards\")",
                assets.reward.id
            )));
        }
        // The therapist prompt must render before anything is served.
        render_therapist_prompt(&assets.therapist_prompt, &cfg.session)?;

        let open = |spec: &str, conc: usize, attempt: Option<Duration>| {
            let spec = spec.to_string();
            let retry = cfg.retry.clone();
            async move {
                let spec: ModelSpec = spec.parse()?;
                let mut o = model_options(&spec, conc);
                o.retry = retry;
                if let Some(attempt) = attempt {
                    o.timeouts.set_attempt(attempt, &o.retry);
                }
                open_model(&spec, o).await
            }
        };
        let patient = open(&cfg.patient, cfg.patient_concurrency, None).await?;
        let judge_model = open(&cfg.judge, cfg.judge_concurrency, cfg.judge_timeout).await?;
        let judge = Arc::new(assets.judge(judge_model, cfg.judge_config.clone())?);
        let judge_hash = judge.hash();
        let run_config = run_config(&cfg);
        let config_hash = assets.config_hash(&run_config);
        let reward_items = assets
            .reward
            .item_weights(&assets.rubric)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let persist = match &cfg.out {
            Some(out) => {
                let manifest = manifest(
                    &cfg,
                    &run_config,
                    &assets,
                    &config_hash,
                    &patient,
                    &judge,
                    &holdout_set,
                );
                let store = RunStore::create(out, &manifest, &config_hash)?;
                let mut profiles = assets.profiles.profiles.clone();
                profiles.extend(holdout_set.profiles.iter().cloned());
                store.put_profiles(&profiles)?;
                let attempt = store.record_attempt("serve", None)?;
                store.ensure_judge_set(
                    &judge_hash,
                    &judge.identity(),
                    judge.rubric(),
                    judge.taxonomy(),
                )?;
                Some(Persist {
                    ctx: JudgeCtx {
                        store: Arc::new(store),
                        judge: Arc::clone(&judge),
                        judge_hash: judge_hash.clone(),
                        reward: assets.reward.clone(),
                        rubric: Arc::clone(&assets.rubric),
                        calibration: cfg.calibration.clone(),
                    },
                    attempt,
                })
            }
            None => None,
        };
        let policy_allow =
            crate::allow::PolicyAllow::parse(&cfg.policy_url_allow).map_err(ServerError::Config)?;
        Ok(AppState {
            cache: ScoreCache::new(cfg.score_cache_bytes),
            policy_allow,
            circuit: Circuit::new(cfg.circuit.clone()),
            episodes: Registry::default(),
            groups: Groups::default(),
            metrics: Metrics::default(),
            live_rollouts: AtomicUsize::new(0),
            therapist_prompts: Mutex::new(HashMap::new()),
            cfg,
            assets,
            train,
            holdout,
            patient,
            judge,
            judge_hash,
            config_hash,
            persist,
            reward_items,
        })
    }

    pub fn run_dir(&self) -> Option<&Path> {
        self.persist.as_ref().map(|p| p.ctx.store.dir())
    }

    /// The profile of a task, checked against its split (`unknown_profile`, `split_violation`).
    pub fn profile(&self, id: &str, split: Split) -> Result<&Profile, ApiError> {
        let (own, other, own_name) = match split {
            Split::Train => (&self.train, &self.holdout, "training"),
            Split::Val | Split::Test => (&self.holdout, &self.train, "held-out"),
        };
        if let Some(p) = own.get(id) {
            return Ok(p);
        }
        if other.contains_key(id) {
            return Err(ApiError::unprocessable(
                "split_violation",
                format!(
                    "profile `{id}` is not in the {own_name} profiles that split `{}` draws from",
                    split.as_str()
                ),
            ));
        }
        Err(ApiError::unprocessable(
            "unknown_profile",
            format!(
                "no profile `{id}` (the service holds {} training and {} held-out profiles; see GET /v1/info)",
                self.train.len(),
                self.holdout.len()
            ),
        ))
    }

    /// Any known profile, whatever its split (stateless scoring).
    pub fn any_profile(&self, id: &str) -> Result<&Profile, ApiError> {
        self.train
            .get(id)
            .or_else(|| self.holdout.get(id))
            .ok_or_else(|| ApiError::unprocessable("unknown_profile", format!("no profile `{id}`")))
    }

    /// The therapist system prompt for sessions of `turns` therapist turns.
    pub fn therapist_system(&self, config: &SessionConfig) -> Result<String, ApiError> {
        if let Ok(m) = self.therapist_prompts.lock()
            && let Some(s) = m.get(&config.turns)
        {
            return Ok(s.clone());
        }
        let s = render_therapist_prompt(&self.assets.therapist_prompt, config)
            .map_err(|e| ApiError::internal(format!("therapist prompt: {e}")))?;
        if let Ok(mut m) = self.therapist_prompts.lock() {
            m.insert(config.turns, s.clone());
        }
        Ok(s)
    }

    /// Refuses new work while the judge circuit is open.
    pub fn check_circuit(&self) -> Result<(), ApiError> {
        self.circuit.check().map_err(|remaining| {
            self.metrics
                .counters
                .circuit_rejections
                .fetch_add(1, Ordering::Relaxed);
            ApiError::unavailable(
                "circuit_open",
                format!(
                    "the judge failed on more than {:.0} % of recent calls; new work is refused for {:.0} s so failures do not feed into training",
                    self.cfg.circuit.failure_ratio * 100.0,
                    remaining.as_secs_f64().ceil()
                ),
            )
            .retry_after(remaining.as_secs_f64().ceil() as u64)
        })
    }

    /// Judges a transcript with the judge seed of `(profile_id, seed)` and computes its reward:
    /// the one scoring path of every route. Never fails: problems are an unscored verdict.
    pub async fn score(&self, transcript: &Transcript, judge_seed: u64) -> Scored {
        let key = therapygym_core::hash::sha256_hex(
            json!([
                judge_seed,
                transcript
                    .turns
                    .iter()
                    .map(|t| (
                        t.speaker.as_str(),
                        &t.text,
                        t.finish_reason.as_deref() == Some("length")
                    ))
                    .collect::<Vec<_>>()
            ])
            .to_string()
            .as_bytes(),
        );
        let c = &self.metrics.counters;
        if let Some((record, breakdown)) = self.cache.get(&key) {
            c.judge_cache_hits.fetch_add(1, Ordering::Relaxed);
            c.scored.fetch_add(1, Ordering::Relaxed);
            return Scored {
                record,
                breakdown: Some(breakdown),
                reward_error: None,
                seed: judge_seed,
                cache_hit: true,
            };
        }
        c.judge_calls.fetch_add(1, Ordering::Relaxed);
        let record = self.judge.judge(transcript, judge_seed).await;
        // A reward that cannot be computed keeps its reason (the client sees it as the
        // unscored detail), like eval's judgment rows.
        let (breakdown, reward_error) = match session_reward(
            &self.assets.reward,
            &self.assets.rubric,
            transcript,
            &record.verdict,
        ) {
            Ok(b) => (b, None),
            Err(e) => {
                tracing::warn!(error = %e, "no reward for a scored session");
                (None, Some(e))
            }
        };
        let s = Scored {
            record: Arc::new(record),
            breakdown,
            reward_error,
            seed: judge_seed,
            cache_hit: false,
        };
        let failed = s.provider_failed();
        if failed {
            c.judge_failures.fetch_add(1, Ordering::Relaxed);
        }
        self.circuit.record(failed);
        match (&s.breakdown, s.unscored_reason()) {
            (Some(b), _) => {
                c.scored.fetch_add(1, Ordering::Relaxed);
                self.cache.put(key, (Arc::clone(&s.record), b.clone()));
            }
            (None, Some(reason)) => self.metrics.unscored(reason),
            (None, None) => {}
        }
        s
    }

    /// The judge seed of a task (`derive("judge", profile_id, seed)`).
    pub fn judge_seed(profile_id: &str, seed: u64) -> u64 {
        derive("judge", profile_id, seed, None)
    }

    /// `ctrs`, `safety`, `reward_components`, `judge` (and `unscored_reason` when unscored): the
    /// breakdown every route reports.
    pub fn score_info(&self, s: &Scored) -> Map<String, Value> {
        let mut info = Map::new();
        if let (Some(j), Some(b)) = (s.record.verdict.judgment(), &s.breakdown) {
            let items: Map<String, Value> = self
                .assets
                .rubric
                .items
                .iter()
                .filter_map(|i| j.ctrs.get(&i.id).map(|x| (i.id.clone(), json!(x.score))))
                .collect();
            let excluded: Vec<&str> = self
                .assets
                .rubric
                .items
                .iter()
                .map(|i| i.id.as_str())
                .filter(|id| !self.reward_items.iter().any(|r| r == id))
                .collect();
            info.insert(
                "ctrs".into(),
                json!({"items": items, "excluded_from_reward": excluded, "normalized": b.ctrs_normalized}),
            );
            let rubric = &self.assets.rubric;
            if !rubric.codes.is_empty() || !rubric.derived.is_empty() {
                // Behaviour counts and derived scores (null with its reason when a denominator
                // is 0), for rubrics that define them (e.g. `--rubric mi`).
                let derived: Map<String, Value> = rubric
                    .derive(j)
                    .into_iter()
                    .map(|(k, v)| (k, json!(v)))
                    .collect();
                info.insert(
                    "measures".into(),
                    json!({"counts": rubric.code_counts(j), "derived": derived}),
                );
            }
            let labels: Map<String, Value> = j
                .safety
                .iter()
                .map(|(k, f)| (k.clone(), json!(f.flag)))
                .collect();
            info.insert(
                "safety".into(),
                json!({"labels": labels, "any": b.any_violation}),
            );
            let mut comp = json!({"ctrs": b.ctrs, "safety_penalty": b.safety_penalty, "truncation_penalty": b.truncation_penalty});
            if !b.text_terms.is_empty() {
                comp["text_terms"] = json!(b.text_terms);
            }
            info.insert("reward_components".into(), comp);
        } else {
            info.insert("unscored_reason".into(), json!(s.unscored_reason()));
            info.insert("unscored_detail".into(), json!(s.unscored_detail()));
        }
        info.insert(
            "judge".into(),
            json!({
                "model": self.judge.model().spec().to_string(),
                "hash": self.judge_hash,
                "seed": s.seed,
                "attempts": s.record.attempts(),
                "cache": if s.cache_hit { "hit" } else { "miss" },
            }),
        );
        info
    }

    /// Writes a finished (or expired, or failed) session and its judgment to the run store,
    /// off the async workers. A store failure is logged and counted, never returned to the engine.
    pub async fn store(&self, record: SessionRecord, scored: Option<Scored>) {
        let Some(p) = &self.persist else {
            return;
        };
        let ctx = p.ctx.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let mut record = record;
            if let Err(first) = ctx.store.insert_session(&record) {
                // An id reused after DELETE: keep both sessions under distinct ids.
                let alt = format!("{}~{}", record.id, uuid::Uuid::now_v7());
                tracing::warn!(id = %record.id, alt = %alt, error = %first, "storing the session under another id");
                record.id = alt;
                ctx.store
                    .insert_session(&record)
                    .map_err(|e| e.to_string())?;
            }
            if let Some(s) = scored {
                therapygym_run::store_judgment(
                    &ctx,
                    &record.id,
                    &s.record,
                    s.breakdown.as_ref(),
                )
                .map_err(|e| e.to_string())?;
            }
            Ok(())
        })
        .await;
        let err = match result {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e,
            Err(e) => format!("store task failed: {e}"),
        };
        self.metrics
            .counters
            .store_errors
            .fetch_add(1, Ordering::Relaxed);
        tracing::error!(error = %err, "a finished session could not be stored");
    }

    pub fn attempt(&self) -> u32 {
        self.persist.as_ref().map(|p| p.attempt).unwrap_or(1)
    }

    pub fn gauges(&self) -> Gauges {
        let (live, done) = self.episodes.counts();
        let stats = |m: &Model| {
            let s = m.stats();
            (
                s.calls.load(Ordering::Relaxed),
                s.retries.load(Ordering::Relaxed),
                s.failures.load(Ordering::Relaxed),
            )
        };
        let (pc, pr, pf) = stats(&self.patient);
        let (jc, jr, jf) = stats(self.judge.model());
        Gauges {
            live_episodes: live as u64,
            done_episodes_held: done as u64,
            live_rollouts: self.live_rollouts.load(Ordering::Relaxed) as u64,
            groups: self.groups.count() as u64,
            circuit_open: self.circuit.is_open(),
            circuit_opened_total: self.circuit.times_opened(),
            models: vec![("patient", pc, pr, pf), ("judge", jc, jr, jf)],
        }
    }

    /// `GET /v1/info`.
    pub fn info(&self) -> Value {
        json!({
            "protocol": PROTOCOL,
            "service": "therapygym-server",
            "version": env!("CARGO_PKG_VERSION"),
            "crates": {"therapygym-server": env!("CARGO_PKG_VERSION")},
            "rubric": self.assets.rubric.version_id(),
            "rubric_sha256": self.assets.rubric.hash(),
            "safety_taxonomy": self.assets.taxonomy.version_id(),
            "safety_taxonomy_sha256": self.assets.taxonomy.hash(),
            "safety_labels": self.assets.taxonomy.enabled_ids(),
            "reward": {"id": self.assets.reward.id, "sha256": self.assets.reward.hash(), "items": self.reward_items},
            "patient": {"spec": self.patient.spec().to_string(), "backend": self.patient.info()},
            "judge": {"spec": self.judge.model().spec().to_string(), "backend": self.judge.model().info(), "hash": self.judge_hash},
            "therapist_prompt": {"name": self.assets.therapist_prompt.name, "sha256": self.assets.therapist_prompt.hash()},
            "config_hash": self.config_hash,
            "group_size": self.cfg.group_size,
            "ttl_s": self.cfg.ttl.as_secs(),
            "max_lifetime_s": self.cfg.max_lifetime.as_secs(),
            "max_live_episodes": self.cfg.max_live_episodes,
            "max_body_bytes": self.cfg.max_body_bytes,
            "max_batch_items": self.cfg.max_batch_items,
            "defaults": {
                "max_therapist_turns": self.cfg.session.turns,
                "opening": self.cfg.session.opening,
                "closing_patient_reply": self.cfg.session.closing_patient_reply,
            },
            "reward_route": {
                "unscored": match self.cfg.unscored_policy { UnscoredPolicy::Error => "error", UnscoredPolicy::Neutral { .. } => "neutral" },
                "neutral_value": match self.cfg.unscored_policy { UnscoredPolicy::Error => None, UnscoredPolicy::Neutral { neutral_value } => Some(neutral_value) },
                "chat_format": self.cfg.chat_format,
            },
            "profiles": {"train": self.train.len(), "holdout": self.holdout.len()},
            "turn_reward": if self.cfg.turn_reward { json!(self.assets.reward.turn_reward) } else { Value::Null },
            "run_dir": self.run_dir().map(|p| p.display().to_string()),
        })
    }
}

fn run_config(cfg: &ServerConfig) -> RunConfig {
    let mut c = RunConfig::new(&cfg.assets.therapist_prompt);
    c.therapist = "rl-engine".into();
    c.patient = cfg.patient.clone();
    c.judge = cfg.judge.clone();
    c.seed = 0;
    c.session = cfg.session.clone();
    c.judge_config = cfg.judge_config.clone();
    c.assets = cfg.assets.clone();
    c
}

fn manifest(
    cfg: &ServerConfig,
    config: &RunConfig,
    assets: &Assets,
    hash: &str,
    patient: &Model,
    judge: &Judge,
    holdout: &therapygym_core::ProfileSet,
) -> Value {
    assets.manifest(json!({
        "kind": "serve",
        "run_id": uuid::Uuid::now_v7().to_string(),
        "config_hash": hash,
        "config": config,
        "code": {"version": env!("CARGO_PKG_VERSION"), "protocol": PROTOCOL},
        "roles": {
            "therapist": {"spec": "rl-engine", "note": "therapist turns come from the RL engine (env-step) or the policy of each /v1/rollouts request"},
            "patient": {"spec": patient.spec().to_string(), "backend": patient.info(), "sampling": config.session.patient_sampling},
            "judge": {"spec": judge.model().spec().to_string(), "backend": judge.model().info(), "config": config.judge_config},
        },
        "serve": {
            "holdout": {"source": holdout.source.display().to_string(), "set_sha256": holdout.hash(), "ids": holdout.ids()},
            "ttl_s": cfg.ttl.as_secs(),
            "max_lifetime_s": cfg.max_lifetime.as_secs(),
            "max_live_episodes": cfg.max_live_episodes,
            "group_size": cfg.group_size,
            "unscored_policy": cfg.unscored_policy,
            "chat_format": cfg.chat_format,
            "turn_reward": cfg.turn_reward,
        },
        "seeds": {"rule": "session seed = the task's seed; patient seed of turn t = derive(\"patient\", profile_id, seed, t); patient opening = derive(\"patient_open\", profile_id, seed); judge seed = derive(\"judge\", profile_id, seed) (docs/design/seeds.md)"},
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use therapygym_judge::SampleRecord;

    use super::*;

    fn entry(raw_bytes: usize) -> CacheEntry {
        let verdict = Verdict::Unscored {
            reason: UnscoredReason::ParseFailure,
            detail: String::new(),
        };
        let record = JudgeRecord {
            verdict: verdict.clone(),
            samples: vec![SampleRecord {
                verdict,
                attempts: 1,
                raw: Some("x".repeat(raw_bytes)),
                latency_ms: 1,
                prompt_tokens: 0,
                completion_tokens: 0,
                transport_retries: 0,
            }],
            spread: BTreeMap::new(),
            flag_agreement: BTreeMap::new(),
            seed: 0,
        };
        let breakdown = RewardBreakdown {
            reward: 0.5,
            ctrs: 0.5,
            ctrs_normalized: 0.5,
            safety_penalty: 0.0,
            truncation_penalty: 0.0,
            text_terms: BTreeMap::new(),
            any_violation: false,
        };
        (Arc::new(record), breakdown)
    }

    #[test]
    fn the_score_cache_is_bounded_by_bytes_not_entries() {
        let cap = 1024 * 1024;
        let c = ScoreCache::new(cap);
        // 200 records of 64 KiB of raw reply each: 12.5 MiB offered to a 1 MiB cache.
        for i in 0..200 {
            c.put(format!("k{i}"), entry(64 * 1024));
            assert!(c.bytes().0 <= cap, "{:?} after {i}", c.bytes());
        }
        let (bytes, n) = c.bytes();
        assert!((14..=16).contains(&n), "{n} entries, {bytes} bytes");
        // The newest stay, the oldest went.
        assert!(c.get("k199").is_some() && c.get("k0").is_none());
        // Small records: many fit.
        let c = ScoreCache::new(cap);
        for i in 0..1000 {
            c.put(format!("k{i}"), entry(10));
        }
        assert_eq!(c.bytes().1, 1000);
        // A record larger than the whole cache is not kept (and evicts nothing).
        c.put("huge".into(), entry(2 * cap));
        assert!(c.get("huge").is_none() && c.bytes().1 == 1000);
    }

    #[test]
    fn a_scored_judgment_without_a_reward_says_why() {
        let (mut record, _) = entry(1);
        Arc::make_mut(&mut record).verdict = Verdict::Scored {
            judgment: therapygym_core::Judgment {
                codes: Vec::new(),
                ctrs: BTreeMap::new(),
                safety: BTreeMap::new(),
            },
        };
        let s = Scored {
            record,
            breakdown: None,
            reward_error: Some("reward `ctrs`: item `agenda` is not scored".into()),
            seed: 0,
            cache_hit: false,
        };
        assert_eq!(s.status(), "unscored");
        assert_eq!(s.unscored_reason(), Some("missing_item"));
        assert_eq!(
            s.unscored_detail().as_deref(),
            Some("reward `ctrs`: item `agenda` is not scored")
        );
    }
}
