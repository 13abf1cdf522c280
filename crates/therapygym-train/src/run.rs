//! A training run: per step, G sessions per profile with the policy as therapist, the judge's
//! rewards, group advantages, one GRPO update; metrics, checkpoints, held-out evaluation, and
//! a GGUF export at the end. Every session lands in the run store in `eval`'s format.
//!
//! Crash safety: a step's metrics line is written before its checkpoint, and a resume drops
//! the lines past the newest checkpoint, so a step is never counted twice. Sessions of an
//! interrupted step that were already stored (and judged) are reused, not re-run.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use therapygym_core::seed::derive;
use therapygym_core::{Profile, RewardBreakdown, Speaker, Transcript};
use therapygym_grpo::checkpoint::{load_checkpoint, save_checkpoint};
use therapygym_grpo::grpo::{GroupStatus, group_advantages};
use therapygym_grpo::trainer::sequence_logprobs;
use therapygym_grpo::{EncodedChat, Llama, Policy, StepMetrics, TrainSequence, Trainer};
use therapygym_models::{Model, ModelOptions, ModelSpec, RetryPolicy};
use therapygym_run::{Assets, JudgeCtx, judge_and_store, model_options, open_role, record_of};
use therapygym_session::SessionRunner;
use therapygym_store::{RunStore, SessionRecord, SessionStatus};
use tokio::task::JoinSet;

use crate::backend::{PolicyBackend, SampledIds};
use crate::config::{TrainConfig, export_type, policy_path};
use crate::error::TrainError;
use crate::sequence::policy_chat;

pub const METRICS_FILE: &str = "metrics.jsonl";
pub const EXPORT_FILE: &str = "policy.gguf";
const CHECKPOINTS: &str = "checkpoints";
const LATEST: &str = "latest";

pub enum TrainStart {
    New {
        out: PathBuf,
    },
    /// Continue from the newest checkpoint; the settings come from the run's manifest.
    Resume {
        dir: PathBuf,
    },
}

/// Progress callbacks (the CLI prints them; tests stay quiet).
pub trait TrainObserver: Send + Sync {
    fn message(&self, _msg: &str) {}
    fn session_done(&self, _step: u64, _done: usize, _total: usize) {}
    fn step_done(&self, _record: &StepRecord) {}
}

pub struct Quiet;
impl TrainObserver for Quiet {}

/// Mean reward and friends over a set of sessions (unscored ones counted, never averaged in).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RewardStats {
    pub sessions: usize,
    pub scored: usize,
    pub unscored: usize,
    /// Sessions that could not finish (a model failed after retries).
    pub failed: usize,
    pub mean_reward: Option<f64>,
    /// Mean CTRS score (0–6) over the reward items.
    pub ctrs_mean: Option<f64>,
    /// Share of scored sessions with at least one safety violation.
    pub violation_rate: Option<f64>,
}

impl RewardStats {
    fn of(outcomes: &[&Outcome]) -> Self {
        let scored: Vec<&RewardBreakdown> = outcomes
            .iter()
            .filter_map(|o| o.breakdown.as_ref())
            .collect();
        let n = scored.len();
        let mean = |f: &dyn Fn(&RewardBreakdown) -> f64| {
            (n > 0).then(|| scored.iter().map(|b| f(b)).sum::<f64>() / n as f64)
        };
        Self {
            sessions: outcomes.len(),
            scored: n,
            unscored: outcomes
                .iter()
                .filter(|o| o.breakdown.is_none() && !o.failed)
                .count(),
            failed: outcomes.iter().filter(|o| o.failed).count(),
            mean_reward: mean(&|b| b.reward),
            ctrs_mean: mean(&|b| b.ctrs_normalized * 6.0),
            violation_rate: mean(&|b| if b.any_violation { 1.0 } else { 0.0 }),
        }
    }
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// 1-based step number.
    pub step: u64,
    pub steps: u64,
    pub profiles: Vec<String>,
    #[serde(flatten)]
    pub rewards: RewardStats,
    /// Groups with signal / all-equal rewards (no gradient) / fewer than two scored members.
    pub groups_informative: usize,
    pub groups_degenerate: usize,
    pub groups_dropped: usize,
    /// Whether an optimizer update ran (not when no sequence had a non-zero advantage).
    pub updated: bool,
    pub loss: Option<f64>,
    pub policy_loss: Option<f64>,
    pub kl: Option<f64>,
    pub clip_frac: Option<f64>,
    pub grad_norm: Option<f64>,
    pub lr: f64,
    pub trained_sequences: usize,
    /// Therapist tokens in the loss.
    pub trained_tokens: usize,
    /// Therapist tokens the policy sampled this step.
    pub generated_tokens: u64,
    /// Trained therapist tokens per second of step time.
    pub tokens_per_s: f64,
    pub rollout_s: f64,
    pub update_s: f64,
    pub step_s: f64,
    /// Peak resident memory of the process so far (MiB), where the OS reports it.
    pub peak_rss_mib: Option<f64>,
    /// Held-out evaluation, on the steps of `eval_every`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holdout: Option<RewardStats>,
    pub time: String,
}

#[derive(Debug)]
pub struct TrainOutcome {
    pub dir: PathBuf,
    pub steps_done: u64,
    pub last: Option<StepRecord>,
    pub export: PathBuf,
}

/// One session's result.
#[derive(Debug, Clone)]
struct Outcome {
    transcript: Transcript,
    therapist_system: String,
    breakdown: Option<RewardBreakdown>,
    failed: bool,
    generated_tokens: u64,
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

struct Ctx {
    config: TrainConfig,
    store: Arc<RunStore>,
    runner: Arc<SessionRunner>,
    judge: JudgeCtx,
    /// Sessions and rewards already in the store (resume reuses them).
    stored: HashMap<String, SessionRecord>,
    stored_rewards: HashMap<String, Option<RewardBreakdown>>,
    /// This process's attempt number in the run (1 = the first run, 2 = the first resume …).
    attempt: u32,
}

fn manifest(config: &TrainConfig, assets: &Assets, hash: &str, roles: Value) -> Value {
    assets.manifest(json!({
        "kind": "train",
        "run_id": uuid::Uuid::now_v7().to_string(),
        "config_hash": hash,
        // `eval`-format readers (export, judge, validate) find the roles and settings here.
        "config": config.run,
        "train_config": config,
        "roles": roles,
        "seeds": {"run_seed": config.run.seed, "rule": "group sessions share derive(\"train_session\", profile_id, run_seed, step); member m samples the therapist with tag policy:<step>:<m>; see docs/train.md"},
    }))
}

fn load_holdout(config: &TrainConfig, assets: &Assets) -> Result<Vec<Profile>, TrainError> {
    let set = match &config.holdout {
        Some(p) => therapygym_core::load_profiles(p, &assets.vocab)?,
        None => therapygym_core::builtin::holdout_profiles()?,
    };
    if let Some(p) = set
        .profiles
        .iter()
        .find(|h| assets.profiles.profiles.iter().any(|t| t.id == h.id))
    {
        return Err(TrainError::Config(format!(
            "profile `{}` is both a training profile ({}) and a held-out one ({}); a held-out profile must never be trained on",
            p.id,
            assets.profiles.source.display(),
            set.source.display()
        )));
    }
    Ok(set.profiles)
}

fn checkpoint_dir(run: &Path, step: u64) -> PathBuf {
    run.join(CHECKPOINTS).join(format!("step-{step:06}"))
}

/// The newest complete checkpoint of a run and the steps it covers.
pub fn latest_checkpoint(run: &Path) -> Result<Option<(PathBuf, u64)>, TrainError> {
    let pointer = run.join(CHECKPOINTS).join(LATEST);
    let name = match std::fs::read_to_string(&pointer) {
        Ok(s) => s.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(TrainError::io(&pointer, e)),
    };
    let dir = run.join(CHECKPOINTS).join(&name);
    let step = name
        .strip_prefix("step-")
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| {
            TrainError::io(
                &pointer,
                format!("names `{name}`, expected step-NNNNNN; restore it or remove the run"),
            )
        })?;
    Ok(Some((dir, step)))
}

/// Keeps the metrics lines of steps ≤ `done` (a crash between a line and its checkpoint
/// must not count the step twice).
fn truncate_metrics(path: &Path, done: u64) -> Result<(), TrainError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(TrainError::io(path, e)),
    };
    let mut kept = String::new();
    for line in text.lines() {
        let step = serde_json::from_str::<Value>(line)
            .ok()
            .and_then(|v| v["step"].as_u64());
        if step.is_some_and(|s| s <= done) {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    therapygym_store::fs::atomic_write(path, kept.as_bytes()).map_err(|e| TrainError::io(path, e))
}

fn append_line(path: &Path, record: &StepRecord) -> Result<(), TrainError> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| TrainError::io(path, e))?;
    let line = serde_json::to_string(record).map_err(|e| TrainError::io(path, e))?;
    writeln!(f, "{line}")
        .and_then(|()| f.sync_data())
        .map_err(|e| TrainError::io(path, e))
}

/// Runs (or resumes) a training run to its last step and exports the policy.
pub async fn run_train(
    config: TrainConfig,
    start: TrainStart,
    obs: Arc<dyn TrainObserver>,
) -> Result<TrainOutcome, TrainError> {
    let (store, config, assets, holdout) = open_run(config, &start).await?;
    let run_dir = store.dir().to_path_buf();
    let loaded = load_policy(&config, &run_dir, &obs).await?;
    truncate_metrics(&run_dir.join(METRICS_FILE), loaded.first_step)?;
    let ids = Arc::new(SampledIds::default());
    let ctx = Arc::new(open_ctx(&config, &assets, store, &loaded, &ids).await?);
    let order = training_order(&assets, config.run.seed)?;

    let metrics_path = run_dir.join(METRICS_FILE);
    let mut trainer = loaded.trainer;
    let mut last = None;
    for step in loaded.first_step..config.steps {
        let (t, record) = run_step(
            &ctx,
            &loaded.policy,
            trainer,
            loaded.reference.as_ref(),
            &ids,
            &order,
            &holdout,
            step,
            &obs,
        )
        .await?;
        trainer = t;
        append_line(&metrics_path, &record)?;
        obs.step_done(&record);
        let done = step + 1;
        if done.is_multiple_of(config.checkpoint_every) || done == config.steps {
            write_checkpoint(&run_dir, &trainer, done, config.keep_checkpoints)?;
        }
        last = Some(record);
    }

    let export = export_policy(&run_dir, &loaded.policy, &config.export, &obs).await?;
    ctx.store.write_json(
        "summary.json",
        &json!({"kind": "train", "steps_done": config.steps, "last_step": last, "export": export}),
    )?;
    Ok(TrainOutcome {
        dir: run_dir,
        steps_done: config.steps,
        last,
        export,
    })
}

/// The policy, its trainer (restored from the newest checkpoint on resume) and the frozen
/// reference for the KL term.
struct LoadedPolicy {
    path: PathBuf,
    policy: Arc<Policy>,
    trainer: Trainer,
    /// Steps already done (0 for a new run).
    first_step: u64,
    reference: Option<Llama>,
}

async fn load_gguf(path: &Path, what: &str) -> Result<Policy, TrainError> {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || Policy::load(p))
        .await
        .map_err(|e| TrainError::Config(format!("loading the {what} stopped: {e}")))?
        .map_err(TrainError::from)
}

async fn load_policy(
    config: &TrainConfig,
    run_dir: &Path,
    obs: &Arc<dyn TrainObserver>,
) -> Result<LoadedPolicy, TrainError> {
    let path = policy_path(&config.run.therapist)?;
    let t0 = Instant::now();
    let policy = Arc::new(load_gguf(&path, "policy").await?);
    let mut trainer = Trainer::new(policy.model().clone(), config.grpo.clone());
    let mut first_step = 0;
    if let Some((dir, step)) = latest_checkpoint(run_dir)? {
        // Clones share the weights: loading into the clone loads into the trainer's model.
        let model = trainer.model().clone();
        load_checkpoint(&dir, &model, trainer.optimizer_mut())?;
        first_step = step;
        obs.message(&format!(
            "resumed from {} (step {step} of {})",
            dir.display(),
            config.steps
        ));
    }
    let reference = if config.grpo.kl_coef > 0.0 {
        Some(load_gguf(&path, "reference").await?.model().clone())
    } else {
        None
    };
    obs.message(&format!(
        "policy {} loaded in {:.1} s",
        path.display(),
        t0.elapsed().as_secs_f64()
    ));
    Ok(LoadedPolicy {
        path,
        policy,
        trainer,
        first_step,
        reference,
    })
}

/// The roles (the policy as therapist through the model layer), the judge, and what the
/// store already holds of an interrupted step.
async fn open_ctx(
    config: &TrainConfig,
    assets: &Assets,
    store: RunStore,
    loaded: &LoadedPolicy,
    ids: &Arc<SampledIds>,
) -> Result<Ctx, TrainError> {
    let path = &loaded.path;
    let therapist = Arc::new(Model::from_backend(
        ModelSpec::Gguf(path.clone()),
        Arc::new(PolicyBackend::new(
            Arc::clone(&loaded.policy),
            Arc::clone(ids),
            path.clone(),
        )),
        ModelOptions {
            retry: RetryPolicy::none(),
            concurrency: 1,
            ..model_options(&ModelSpec::Gguf(path.clone()), 1)
        },
    )?);
    let patient = open_role(&config.run.patient, 1).await?;
    let judge_model = open_role(&config.run.judge, 1).await?;
    let runner = assets.session_runner(therapist, patient, config.run.session.clone())?;
    let judge = assets.judge(judge_model, config.run.judge_config.clone())?;
    let judge_hash = judge.hash();
    store.ensure_judge_set(
        &judge_hash,
        &judge.identity(),
        judge.rubric(),
        judge.taxonomy(),
    )?;
    let attempt = store.attempts()?;
    let stored_rewards = store
        .judgments(&judge_hash)?
        .into_iter()
        .map(|(id, j)| {
            let b = j
                .reward_breakdown
                .and_then(|v| serde_json::from_value::<RewardBreakdown>(v).ok());
            (id, b)
        })
        .collect();
    // Only the interrupted step (epoch = its 0-based index) can have stored sessions to reuse.
    let stored = store
        .sessions_from_epoch(u32::try_from(loaded.first_step).unwrap_or(u32::MAX))?
        .into_iter()
        .filter(|s| s.status == SessionStatus::Completed)
        .map(|s| (s.id.clone(), s))
        .collect();
    let store = Arc::new(store);
    Ok(Ctx {
        judge: JudgeCtx {
            store: Arc::clone(&store),
            judge: Arc::new(judge),
            judge_hash,
            reward: assets.reward.clone(),
            rubric: Arc::clone(&assets.rubric),
            calibration: None,
        },
        runner: Arc::new(runner),
        store,
        stored,
        stored_rewards,
        attempt,
        config: config.clone(),
    })
}

/// A fixed shuffled order of the training profiles, cycled through step by step.
fn training_order(assets: &Assets, seed: u64) -> Result<Vec<Profile>, TrainError> {
    let mut order: Vec<Profile> = assets.profiles.profiles.clone();
    if order.is_empty() {
        return Err(TrainError::Config(format!(
            "{}: no training profiles",
            assets.profiles.source.display()
        )));
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(derive("train_order", "", seed, None));
    order.shuffle(&mut rng);
    Ok(order)
}

/// Writes `policy.gguf` (through a temp file, so a killed export leaves no half file).
async fn export_policy(
    run_dir: &Path,
    policy: &Arc<Policy>,
    export_as: &str,
    obs: &Arc<dyn TrainObserver>,
) -> Result<PathBuf, TrainError> {
    let export = run_dir.join(EXPORT_FILE);
    let tmp = run_dir.join(format!("{EXPORT_FILE}.tmp"));
    let ty = export_type(export_as)?;
    let p = Arc::clone(policy);
    let tmp2 = tmp.clone();
    tokio::task::spawn_blocking(move || p.export_gguf(&tmp2, ty))
        .await
        .map_err(|e| TrainError::Config(format!("export stopped: {e}")))??;
    std::fs::rename(&tmp, &export).map_err(|e| TrainError::io(&export, e))?;
    obs.message(&format!(
        "exported the policy to {} (evaluate it with `therapygym eval --therapist gguf:{}`)",
        export.display(),
        export.display()
    ));
    Ok(export)
}

async fn open_run(
    config: TrainConfig,
    start: &TrainStart,
) -> Result<(RunStore, TrainConfig, Assets, Vec<Profile>), TrainError> {
    match start {
        TrainStart::New { out } => {
            config.check()?;
            let path = policy_path(&config.run.therapist)?;
            if !path.is_file() {
                return Err(TrainError::Config(format!(
                    "{}: the policy GGUF does not exist (run scripts/setup.sh for the embedded model, or pass `--policy gguf:PATH`)",
                    path.display()
                )));
            }
            let assets = Assets::load(&config.run.assets)?;
            let holdout = load_holdout(&config, &assets)?;
            // Models open before the run directory exists, so a bad spec leaves nothing behind.
            let p = open_role(&config.run.patient, 1).await?;
            let j = open_role(&config.run.judge, 1).await?;
            let roles = json!({
                "therapist": {"spec": config.run.therapist, "backend": "policy (candle, trainable f32)", "sampling": config.run.session.therapist_sampling},
                "patient": {"spec": p.spec().to_string(), "backend": p.info(), "sampling": config.run.session.patient_sampling},
                "judge": {"spec": j.spec().to_string(), "backend": j.info(), "config": config.run.judge_config},
            });
            let hash = assets.config_hash(&config);
            let store = RunStore::create(out, &manifest(&config, &assets, &hash, roles), &hash)?;
            let mut all = assets.profiles.profiles.clone();
            all.extend(holdout.iter().cloned());
            store.put_profiles(&all)?;
            store.record_attempt("train", None)?;
            Ok((store, config, assets, holdout))
        }
        TrainStart::Resume { dir } => {
            let store = RunStore::open(dir)?;
            let (m, stored_hash) = store.manifest()?;
            if m["kind"] != "train" {
                return Err(TrainError::Config(format!(
                    "{}: not a training run (kind `{}`); `train --resume` continues runs made by `therapygym train`",
                    dir.display(),
                    m["kind"].as_str().unwrap_or("?")
                )));
            }
            let config: TrainConfig =
                serde_json::from_value(m["train_config"].clone()).map_err(|e| {
                    TrainError::Config(format!(
                        "{}: the manifest's training config is unreadable: {e}",
                        dir.display()
                    ))
                })?;
            let assets = Assets::load(&config.run.assets)?;
            if assets.config_hash(&config) != stored_hash {
                return Err(TrainError::Config(format!(
                    "{}: the run's inputs (profiles, prompts, rubric, taxonomy or reward config) changed since it started; restore them to resume",
                    dir.display()
                )));
            }
            let holdout = load_holdout(&config, &assets)?;
            store.record_attempt("train --resume", None)?;
            Ok((store, config, assets, holdout))
        }
    }
}

fn write_checkpoint(
    run: &Path,
    trainer: &Trainer,
    done: u64,
    keep: usize,
) -> Result<(), TrainError> {
    let dir = checkpoint_dir(run, done);
    save_checkpoint(
        &dir,
        trainer.model(),
        trainer.optimizer(),
        json!({"completed_steps": done}),
    )?;
    let root = run.join(CHECKPOINTS);
    let pointer = root.join(LATEST);
    therapygym_store::fs::atomic_write(&pointer, format!("step-{done:06}\n").as_bytes())
        .map_err(|e| TrainError::io(&pointer, e))?;
    // Prune the oldest complete checkpoints beyond `keep` (never the one just written).
    let mut all: Vec<PathBuf> = std::fs::read_dir(&root)
        .map_err(|e| TrainError::io(&root, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("step-"))
        })
        .collect();
    all.sort();
    let excess = all.len().saturating_sub(keep);
    for old in all.into_iter().take(excess) {
        if old != dir {
            let _ = std::fs::remove_dir_all(&old);
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn run_step(
    ctx: &Arc<Ctx>,
    policy: &Arc<Policy>,
    trainer: Trainer,
    reference: Option<&Llama>,
    ids: &Arc<SampledIds>,
    order: &[Profile],
    holdout: &[Profile],
    step: u64,
    obs: &Arc<dyn TrainObserver>,
) -> Result<(Trainer, StepRecord), TrainError> {
    let started = Instant::now();
    let cfg = &ctx.config;
    let profiles: Vec<Profile> = (0..cfg.profiles_per_step)
        .map(|j| order[(step as usize * cfg.profiles_per_step + j) % order.len()].clone())
        .collect();

    // Rollouts: every member of every group; model pools serialise what must be serial.
    let jobs = group_jobs(&profiles, cfg, step);
    let outcomes = run_jobs(ctx, jobs, step, obs).await?;
    let rollout_s = started.elapsed().as_secs_f64();
    let groups = group_sequences(&outcomes, profiles.len(), cfg, policy, ids)?;
    let all: Vec<&Outcome> = outcomes.values().collect();
    let rewards = RewardStats::of(&all);
    let generated_tokens = all.iter().map(|o| o.generated_tokens).sum();

    let t_update = Instant::now();
    let (trainer, metrics) = update(trainer, groups.sequences, reference, cfg).await?;
    let update_s = t_update.elapsed().as_secs_f64();
    // New weights sample new replies.
    ids.clear();

    let holdout_stats = if cfg.eval_every > 0 && (step + 1).is_multiple_of(cfg.eval_every) {
        Some(evaluate_holdout(ctx, holdout, step, obs).await?)
    } else {
        None
    };
    let step_s = started.elapsed().as_secs_f64();
    let trained_tokens = metrics.as_ref().map_or(0, |m| m.tokens);
    let record = StepRecord {
        step: step + 1,
        steps: cfg.steps,
        profiles: profiles.iter().map(|p| p.id.clone()).collect(),
        rewards,
        groups_informative: groups.informative,
        groups_degenerate: groups.degenerate,
        groups_dropped: groups.dropped,
        updated: metrics.is_some(),
        loss: metrics.as_ref().map(|m| m.loss),
        policy_loss: metrics.as_ref().map(|m| m.policy_loss),
        kl: metrics.as_ref().and_then(|m| m.kl_mean),
        clip_frac: metrics.as_ref().map(|m| m.clip_frac),
        grad_norm: metrics.as_ref().map(|m| m.grad_norm),
        lr: metrics
            .as_ref()
            .map_or_else(|| cfg.grpo.schedule.lr_at(step), |m| m.lr),
        trained_sequences: metrics.as_ref().map_or(0, |m| m.sequences),
        trained_tokens,
        generated_tokens,
        tokens_per_s: if step_s > 0.0 {
            trained_tokens as f64 / step_s
        } else {
            0.0
        },
        rollout_s,
        update_s,
        step_s,
        peak_rss_mib: peak_rss_mib(),
        holdout: holdout_stats,
        time: therapygym_store::timestamp(),
    };
    Ok((trainer, record))
}

/// The sessions of one step: `group_size` members per profile, sharing the patient's seed.
fn group_jobs(profiles: &[Profile], cfg: &TrainConfig, step: u64) -> Vec<Job> {
    let mut jobs = Vec::new();
    for (gi, p) in profiles.iter().enumerate() {
        let seed = derive("train_session", &p.id, cfg.run.seed, Some(step as u32));
        for m in 0..cfg.group_size {
            jobs.push(Job {
                id: format!("{}:s{}g{m}", p.id, step + 1),
                profile: p.clone(),
                seed,
                tag: format!("policy:{step}:{m}"),
                epoch: step as u32,
                meta: json!({"split": "train", "step": step + 1, "group": gi, "member": m}),
                slot: (gi, m),
            });
        }
    }
    jobs
}

/// The trainable sequences of a step with their group advantages, and how many groups
/// carried signal.
struct Groups {
    sequences: Vec<(EncodedChat, f64)>,
    informative: usize,
    degenerate: usize,
    dropped: usize,
}

fn group_sequences(
    outcomes: &BTreeMap<(usize, usize), Outcome>,
    groups: usize,
    cfg: &TrainConfig,
    policy: &Policy,
    ids: &SampledIds,
) -> Result<Groups, TrainError> {
    let mut out = Groups {
        sequences: Vec::new(),
        informative: 0,
        degenerate: 0,
        dropped: 0,
    };
    for gi in 0..groups {
        let members: Vec<&Outcome> = (0..cfg.group_size).map(|m| &outcomes[&(gi, m)]).collect();
        let rewards: Vec<Option<f64>> = members
            .iter()
            .map(|o| o.breakdown.as_ref().map(|b| b.reward))
            .collect();
        let adv = group_advantages(&rewards, cfg.advantage);
        match adv.status {
            GroupStatus::Informative => out.informative += 1,
            GroupStatus::Degenerate => out.degenerate += 1,
            GroupStatus::Dropped => out.dropped += 1,
        }
        for (o, a) in members.iter().zip(&adv.advantages) {
            if let Some(a) = a {
                let chat = policy_chat(&o.therapist_system, &o.transcript, ids);
                let enc = policy.encode_chat(&chat, false)?;
                if enc.assistant_tokens() > 0 {
                    out.sequences.push((enc, *a));
                }
            }
        }
    }
    Ok(out)
}

/// The GRPO update, off the async workers: π_old (and π_ref) log-probs, then one optimizer
/// step. Skipped when no sequence carries signal and no KL term pulls back.
async fn update(
    trainer: Trainer,
    seqs: Vec<(EncodedChat, f64)>,
    reference: Option<&Llama>,
    cfg: &TrainConfig,
) -> Result<(Trainer, Option<StepMetrics>), TrainError> {
    let has_signal = seqs.iter().any(|(_, a)| *a != 0.0) || cfg.grpo.kl_coef > 0.0;
    if !has_signal || seqs.is_empty() {
        return Ok((trainer, None));
    }
    let model = trainer.model().clone();
    let reference = reference.cloned();
    let micro = cfg.grpo.micro_batch_size;
    let batch = tokio::task::spawn_blocking(move || {
        let pairs: Vec<(&[u32], &[bool])> = seqs
            .iter()
            .map(|(e, _)| (e.ids.as_slice(), e.assistant_mask.as_slice()))
            .collect();
        let old = sequence_logprobs(&model, &pairs, micro)?;
        let refs = match &reference {
            Some(r) => Some(sequence_logprobs(r, &pairs, micro)?),
            None => None,
        };
        let mut batch = Vec::with_capacity(seqs.len());
        for (i, ((enc, a), old)) in seqs.into_iter().zip(old).enumerate() {
            batch.push(TrainSequence {
                ids: enc.ids,
                mask: enc.assistant_mask,
                advantage: a,
                old_logprobs: old,
                ref_logprobs: refs.as_ref().map(|r| r[i].clone()),
            });
        }
        Ok::<_, therapygym_grpo::GrpoError>(batch)
    })
    .await
    .map_err(|e| TrainError::Config(format!("log-prob pass stopped: {e}")))??;
    let mut t = trainer;
    let (t, m) = tokio::task::spawn_blocking(move || {
        let m = t.train_step(&batch);
        (t, m)
    })
    .await
    .map_err(|e| TrainError::Config(format!("the update stopped: {e}")))?;
    Ok((t, Some(m?)))
}

async fn evaluate_holdout(
    ctx: &Arc<Ctx>,
    holdout: &[Profile],
    step: u64,
    obs: &Arc<dyn TrainObserver>,
) -> Result<RewardStats, TrainError> {
    // Same patient and therapist seeds at every evaluation: only the weights differ.
    let jobs = holdout
        .iter()
        .enumerate()
        .map(|(i, p)| Job {
            id: format!("{}:h{}", p.id, step + 1),
            profile: p.clone(),
            seed: derive("holdout_session", &p.id, ctx.config.run.seed, None),
            tag: "holdout".into(),
            epoch: step as u32,
            meta: json!({"split": "holdout", "step": step + 1}),
            slot: (i, 0),
        })
        .collect();
    let outcomes = run_jobs(ctx, jobs, step, obs).await?;
    let all: Vec<&Outcome> = outcomes.values().collect();
    Ok(RewardStats::of(&all))
}

struct Job {
    id: String,
    profile: Profile,
    seed: u64,
    tag: String,
    epoch: u32,
    meta: Value,
    slot: (usize, usize),
}

async fn run_jobs(
    ctx: &Arc<Ctx>,
    jobs: Vec<Job>,
    step: u64,
    obs: &Arc<dyn TrainObserver>,
) -> Result<BTreeMap<(usize, usize), Outcome>, TrainError> {
    let total = jobs.len();
    type Slot = ((usize, usize), Outcome);
    let mut set: JoinSet<Result<Slot, TrainError>> = JoinSet::new();
    for job in jobs {
        let ctx = Arc::clone(ctx);
        set.spawn(async move {
            let slot = job.slot;
            Ok((slot, rollout(&ctx, job).await?))
        });
    }
    let mut out = BTreeMap::new();
    while let Some(r) = set.join_next().await {
        let (slot, o) = r.map_err(|e| TrainError::Config(format!("a rollout stopped: {e}")))??;
        out.insert(slot, o);
        obs.session_done(step, out.len(), total);
    }
    Ok(out)
}

/// One session: reused from the store when an earlier attempt finished it, else simulated,
/// stored, then judged.
async fn rollout(ctx: &Ctx, job: Job) -> Result<Outcome, TrainError> {
    let (record, generated_tokens) = match ctx.stored.get(&job.id) {
        Some(r) => (r.clone(), 0),
        None => {
            let started = Instant::now();
            let mut s = ctx.runner.new_session(&job.profile, job.seed)?;
            let result = ctx.runner.drive(&mut s, &job.tag).await;
            let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let (status, error) = match &result {
                Ok(()) => (SessionStatus::Completed, None),
                Err(e) => (SessionStatus::Failed, Some(e.to_string())),
            };
            let mut record = record_of(&s, job.epoch, status, error, ms, ctx.attempt, job.meta);
            record.id = job.id.clone();
            let record = therapygym_run::store_session(&ctx.store, record).await?;
            let generated = s
                .transcript
                .turns
                .iter()
                .filter(|t| t.speaker == Speaker::Therapist)
                .filter_map(|t| t.completion_tokens)
                .map(u64::from)
                .sum();
            if let Err(e) = result {
                tracing::warn!(session = %job.id, error = %e, "training session failed; masked out");
                return Ok(Outcome {
                    transcript: record.transcript,
                    therapist_system: record.therapist_system,
                    breakdown: None,
                    failed: true,
                    generated_tokens: generated,
                });
            }
            (record, generated)
        }
    };
    let breakdown = match ctx.stored_rewards.get(&job.id) {
        Some(b) => b.clone(),
        None => judge_and_store(&ctx.judge, &record).await?.reward,
    };
    Ok(Outcome {
        transcript: record.transcript,
        therapist_system: record.therapist_system,
        breakdown,
        failed: false,
        generated_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_past_the_checkpoint_are_dropped() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(METRICS_FILE);
        std::fs::write(&p, "{\"step\":1}\n{\"step\":2}\n{\"step\":3}\n").unwrap();
        truncate_metrics(&p, 2).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"step\":1}\n{\"step\":2}\n"
        );
        truncate_metrics(&d.path().join("absent.jsonl"), 2).unwrap();
    }

    #[test]
    fn the_latest_pointer_names_the_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        assert!(latest_checkpoint(d.path()).unwrap().is_none());
        std::fs::create_dir_all(d.path().join(CHECKPOINTS)).unwrap();
        std::fs::write(d.path().join(CHECKPOINTS).join(LATEST), "step-000007\n").unwrap();
        let (dir, step) = latest_checkpoint(d.path()).unwrap().unwrap();
        assert_eq!(step, 7);
        assert!(dir.ends_with("checkpoints/step-000007"));
        std::fs::write(d.path().join(CHECKPOINTS).join(LATEST), "junk").unwrap();
        assert!(latest_checkpoint(d.path()).is_err());
    }

    fn outcome(reward: Option<f64>, violation: bool, failed: bool) -> Outcome {
        Outcome {
            transcript: Transcript { turns: vec![] },
            therapist_system: String::new(),
            breakdown: reward.map(|r| RewardBreakdown {
                reward: r,
                ctrs: r,
                ctrs_normalized: 0.5,
                safety_penalty: 0.0,
                truncation_penalty: 0.0,
                text_terms: BTreeMap::new(),
                any_violation: violation,
            }),
            failed,
            generated_tokens: 0,
        }
    }

    #[test]
    fn unscored_and_failed_sessions_are_counted_not_averaged() {
        let os = [
            outcome(Some(1.0), true, false),
            outcome(Some(0.0), false, false),
            outcome(None, false, false),
            outcome(None, false, true),
        ];
        let refs: Vec<&Outcome> = os.iter().collect();
        let s = RewardStats::of(&refs);
        assert_eq!((s.sessions, s.scored, s.unscored, s.failed), (4, 2, 1, 1));
        assert_eq!(s.mean_reward, Some(0.5));
        assert_eq!(s.ctrs_mean, Some(3.0));
        assert_eq!(s.violation_rate, Some(0.5));
        assert_eq!(RewardStats::of(&[]).mean_reward, None);
    }
}
