//! An evaluation run: plan (profile × epoch), simulate, judge, commit, summarise — resumable.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use therapygym_core::seed::session_seed;
use therapygym_core::{Profile, Verdict};
use therapygym_judge::{Judge, JudgeRecord};
use therapygym_models::{Model, ModelSpec, open_model};
use therapygym_session::SessionRunner;
use therapygym_store::{JudgmentRow, RunStore, SessionRecord, SessionStatus};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::assets::Assets;
use crate::config::{Concurrency, EvalConfig, model_options};
use crate::error::EvalError;
use crate::progress::{Progress, SessionOutcome};
use crate::summary::{Summary, summarize};

pub enum Start {
    New {
        out: PathBuf,
    },
    /// Continue an interrupted run; the config is read from its manifest.
    Resume {
        dir: PathBuf,
    },
}

/// One planned session.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PlannedSession {
    pub id: String,
    pub profile_id: String,
    pub epoch: u32,
    pub seed: u64,
}

pub fn session_id(profile_id: &str, epoch: u32) -> String {
    format!("{profile_id}:{epoch}")
}

pub fn plan(profiles: &[Profile], per_profile: u32, run_seed: u64) -> Vec<PlannedSession> {
    let mut v = Vec::new();
    for epoch in 0..per_profile {
        for p in profiles {
            v.push(PlannedSession {
                id: session_id(&p.id, epoch),
                profile_id: p.id.clone(),
                epoch,
                seed: session_seed(run_seed, &p.id, epoch),
            });
        }
    }
    v
}

fn manifest(run_id: &str, config: &EvalConfig, assets: &Assets, hash: &str, roles: Value) -> Value {
    assets.manifest(json!({
        "kind": "eval",
        "run_id": run_id,
        "config_hash": hash,
        "config": config,
        "roles": roles,
        "seeds": {"run_seed": config.seed, "rule": "session seed = derive(\"session\", profile_id, run_seed, epoch); see docs/design/seeds.md"},
    }))
}

/// Differences between two JSON values, as dotted key paths (for "config differs" messages).
fn diff_keys(a: &Value, b: &Value, prefix: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                diff_keys(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &p,
                    out,
                );
            }
        }
        _ if a != b => out.push(prefix.to_string()),
        _ => {}
    }
}

pub struct RunHandles {
    pub store: Arc<RunStore>,
    pub runner: Arc<SessionRunner>,
    pub judge: Arc<Judge>,
    pub assets: Assets,
    pub config: EvalConfig,
}

/// Opens one role's model with the pool size and timeouts `eval` uses for it.
pub async fn open_role(spec: &str, concurrency: usize) -> Result<Arc<Model>, EvalError> {
    let spec: ModelSpec = spec.parse()?;
    Ok(open_model(&spec, model_options(&spec, concurrency)).await?)
}

pub fn roles_json(therapist: &Model, patient: &Model, judge: &Model, config: &EvalConfig) -> Value {
    json!({
        "therapist": {"spec": therapist.spec().to_string(), "backend": therapist.info(), "sampling": config.session.therapist_sampling},
        "patient": {"spec": patient.spec().to_string(), "backend": patient.info(), "sampling": config.session.patient_sampling},
        "judge": {"spec": judge.spec().to_string(), "backend": judge.info(), "config": config.judge_config},
    })
}

/// Opens (or creates) the run and its models.
pub async fn prepare(
    config: EvalConfig,
    conc: Concurrency,
    start: &Start,
    allow_drift: bool,
) -> Result<RunHandles, EvalError> {
    let (store, config, assets) = match start {
        Start::New { out } => {
            let assets = Assets::load(&config.assets)?;
            let hash = assets.config_hash(&config);
            // Models are opened first so a bad spec fails before a run directory exists.
            let (t, p, j) = (
                open_role(&config.therapist, 1).await?,
                open_role(&config.patient, 1).await?,
                open_role(&config.judge, 1).await?,
            );
            let run_id = uuid::Uuid::now_v7().to_string();
            let store = RunStore::create(
                out,
                &manifest(
                    &run_id,
                    &config,
                    &assets,
                    &hash,
                    roles_json(&t, &p, &j, &config),
                ),
                &hash,
            )?;
            store.put_profiles(&assets.profiles.profiles)?;
            store.record_attempt("eval", None)?;
            (store, config, assets)
        }
        Start::Resume { dir } => {
            let store = RunStore::open(dir)?;
            let (m, stored_hash) = store.manifest()?;
            let stored: EvalConfig = serde_json::from_value(m["config"].clone()).map_err(|e| {
                EvalError::Invalid(format!(
                    "{}: the manifest's config is unreadable: {e}",
                    dir.display()
                ))
            })?;
            let assets = Assets::load(&stored.assets)?;
            let hash = assets.config_hash(&stored);
            let mut note = None;
            if hash != stored_hash {
                let mut keys = Vec::new();
                let now_part = json!({"config": stored, "assets": assets.manifest_part()});
                let then_part = json!({"config": m["config"], "assets": {
                    "prompts": m["prompts"], "rubric": m["rubric"], "safety_taxonomy": m["safety_taxonomy"],
                    "vocabulary": m["vocabulary"], "profiles": m["profiles"], "reward": m["reward"]}});
                diff_keys(&then_part, &now_part, "", &mut keys);
                if !allow_drift {
                    return Err(EvalError::Invalid(format!(
                        "{}: the run's inputs changed since it started ({}); restore them, or pass `--allow-config-drift` to continue anyway",
                        dir.display(),
                        if keys.is_empty() {
                            "hash differs".to_string()
                        } else {
                            keys.join(", ")
                        }
                    )));
                }
                note = Some(format!("config drift allowed: {}", keys.join(", ")));
            }
            // Resuming must not silently mix in a different config than the one recorded.
            let _ = config;
            store.record_attempt("eval --resume", note.as_deref())?;
            (store, stored, assets)
        }
    };
    let therapist = open_role(&config.therapist, conc.therapist).await?;
    let patient = open_role(&config.patient, conc.patient).await?;
    let judge_model = open_role(&config.judge, conc.judge).await?;
    let runner = SessionRunner::new(
        therapist,
        patient,
        config.session.clone(),
        Arc::clone(&assets.vocab),
        assets.patient_prompt.clone(),
        assets.therapist_prompt.clone(),
    )?;
    let judge = Judge::new(
        judge_model,
        Arc::clone(&assets.rubric),
        Arc::clone(&assets.taxonomy),
        assets.judge_system.clone(),
        assets.judge_user.clone(),
        config.judge_config.clone(),
    )?;
    store.ensure_judge_set(&judge.hash(), &judge.identity())?;
    Ok(RunHandles {
        store: Arc::new(store),
        runner: Arc::new(runner),
        judge: Arc::new(judge),
        assets,
        config,
    })
}

/// Judges one stored session and commits the judgment and reward.
pub async fn judge_and_store(h: &JudgeCtx, s: &SessionRecord) -> Result<bool, EvalError> {
    let seed = therapygym_core::seed::derive("judge", &s.profile_id, s.seed, None);
    let record: JudgeRecord = h.judge.judge(&s.transcript, seed).await;
    let breakdown = session_reward(&h.reward, &h.rubric, &s.transcript, &record.verdict);
    store_judgment(h, &s.id, &record, breakdown.as_ref())?;
    Ok(record.verdict.judgment().is_some())
}

/// The reward of a judged transcript: `None` when the verdict is unscored (never 0). The
/// therapist's text feeds text terms; a last therapist turn cut at max_tokens is "truncated".
pub fn session_reward(
    reward: &therapygym_core::RewardConfig,
    rubric: &therapygym_core::Rubric,
    transcript: &therapygym_core::Transcript,
    verdict: &Verdict,
) -> Option<therapygym_core::RewardBreakdown> {
    let therapist_text: String = transcript
        .turns
        .iter()
        .filter(|t| t.speaker == therapygym_core::Speaker::Therapist)
        .map(|t| t.text.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let truncated = transcript
        .turns
        .iter()
        .rev()
        .find(|t| t.speaker == therapygym_core::Speaker::Therapist)
        .is_some_and(|t| t.finish_reason.as_deref() == Some("length"));
    match verdict {
        Verdict::Scored { judgment } => reward
            .compute(judgment, rubric, &therapist_text, truncated)
            .ok(),
        Verdict::Unscored { .. } => None,
    }
}

/// Commits one judgment (with its reward, and calibrated scores when a calibration is set) of a
/// stored session under the context's judge hash.
pub fn store_judgment(
    h: &JudgeCtx,
    session_id: &str,
    record: &JudgeRecord,
    breakdown: Option<&therapygym_core::RewardBreakdown>,
) -> Result<(), EvalError> {
    let calibrated = match (&h.calibration, record.verdict.judgment()) {
        (Some(c), Some(j)) => Some(c.apply(j)),
        _ => None,
    };
    let row = JudgmentRow {
        session_id: session_id.to_string(),
        judge_hash: h.judge_hash.clone(),
        verdict: record.verdict.clone(),
        record: serde_json::to_value(record).unwrap_or(Value::Null),
        reward: breakdown.map(|b| b.reward),
        reward_breakdown: breakdown.map(|b| serde_json::to_value(b).unwrap_or(Value::Null)),
        calibrated,
        attempts: record.attempts(),
        created_at: therapygym_store::timestamp(),
    };
    h.store.insert_judgment(&row)?;
    Ok(())
}

/// What judging needs (shared by `eval` and `judge`).
#[derive(Clone)]
pub struct JudgeCtx {
    pub store: Arc<RunStore>,
    pub judge: Arc<Judge>,
    pub judge_hash: String,
    pub reward: therapygym_core::RewardConfig,
    pub rubric: Arc<therapygym_core::Rubric>,
    pub calibration: Option<Arc<therapygym_judge::Calibration>>,
}

pub fn record_of(
    s: &therapygym_session::Session,
    epoch: u32,
    status: SessionStatus,
    error: Option<String>,
    duration_ms: u64,
    attempt: u32,
    meta: Value,
) -> SessionRecord {
    SessionRecord {
        id: session_id(&s.profile_id, epoch),
        profile_id: s.profile_id.clone(),
        epoch,
        seed: s.seed,
        status,
        style: s.patient.style.clone(),
        end_reason: s.end.map(|e| {
            serde_json::to_value(e)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        }),
        therapist_system: s.therapist_system.clone(),
        patient_system: s.patient.system_prompt.clone(),
        transcript: s.transcript.clone(),
        error,
        duration_ms,
        attempt,
        created_at: therapygym_store::timestamp(),
        meta,
    }
}

/// Runs (or resumes) an evaluation and returns its summary.
pub async fn run_eval(
    config: EvalConfig,
    conc: Concurrency,
    start: Start,
    allow_drift: bool,
    calibration: Option<Arc<therapygym_judge::Calibration>>,
    progress: Arc<dyn Progress>,
) -> Result<Summary, EvalError> {
    let h = prepare(config, conc, &start, allow_drift).await?;
    let attempt = h.store.attempts()?;
    let judge_hash = h.judge.hash();
    let profiles: BTreeMap<String, Profile> = h
        .assets
        .profiles
        .profiles
        .iter()
        .map(|p| (p.id.clone(), p.clone()))
        .collect();
    let planned = plan(
        &h.assets.profiles.profiles,
        h.config.sessions_per_profile,
        h.config.seed,
    );
    let statuses = h.store.session_statuses()?;
    let judged: BTreeSet<String> = h.store.judgments(&judge_hash)?.into_keys().collect();
    let todo: Vec<PlannedSession> = planned
        .iter()
        .filter(|p| statuses.get(&p.id) != Some(&SessionStatus::Completed))
        .cloned()
        .collect();
    let backlog: Vec<SessionRecord> = h
        .store
        .sessions()?
        .into_iter()
        .filter(|s| s.status == SessionStatus::Completed && !judged.contains(&s.id))
        .collect();
    progress.planned(planned.len() as u64, (planned.len() - todo.len()) as u64);
    let ctx = JudgeCtx {
        store: Arc::clone(&h.store),
        judge: Arc::clone(&h.judge),
        judge_hash: judge_hash.clone(),
        reward: h.assets.reward.clone(),
        rubric: Arc::clone(&h.assets.rubric),
        calibration,
    };

    let slots = Arc::new(Semaphore::new(conc.sessions.max(1)));
    let mut tasks: JoinSet<Result<(), EvalError>> = JoinSet::new();
    // Sessions whose transcript survived a crash but not their judgment: judge them first.
    for s in backlog {
        let (ctx, progress) = (ctx.clone(), Arc::clone(&progress));
        tasks.spawn(async move {
            let scored = judge_and_store(&ctx, &s).await?;
            progress.judged(&s.id, scored);
            Ok(())
        });
    }
    for p in todo {
        let Some(profile) = profiles.get(&p.profile_id).cloned() else {
            continue;
        };
        let permit_source = Arc::clone(&slots);
        let (ctx, progress, runner, store) = (
            ctx.clone(),
            Arc::clone(&progress),
            Arc::clone(&h.runner),
            Arc::clone(&h.store),
        );
        tasks.spawn(async move {
            let permit = permit_source
                .acquire_owned()
                .await
                .map_err(|_| EvalError::Invalid("session pool closed".into()))?;
            let started = std::time::Instant::now();
            let mut session = runner.new_session(&profile, p.seed)?;
            let result = runner.drive(&mut session, "therapist").await;
            let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let record = match result {
                Ok(()) => record_of(
                    &session,
                    p.epoch,
                    SessionStatus::Completed,
                    None,
                    ms,
                    attempt,
                    json!({}),
                ),
                Err(e) => {
                    // Keep the turns taken so far for inspection; resume runs it again.
                    let rec = record_of(
                        &session,
                        p.epoch,
                        SessionStatus::Failed,
                        Some(e.to_string()),
                        ms,
                        attempt,
                        json!({}),
                    );
                    store.insert_session(&rec)?;
                    progress.session_finished(&p.id, SessionOutcome::Failed(e.to_string()));
                    return Ok(());
                }
            };
            store.insert_session(&record)?;
            progress.session_finished(&p.id, SessionOutcome::Completed);
            drop(permit); // the next session may start while this one is judged
            let scored = judge_and_store(&ctx, &record).await?;
            progress.judged(&p.id, scored);
            Ok(())
        });
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let r = joined
            .map_err(|e| EvalError::Invalid(format!("a session task stopped unexpectedly: {e}")));
        if let Err(e) = r.and_then(|x| x)
            && first_error.is_none()
        {
            // A store error stops the run (nothing may be lost); let in-flight work finish first.
            first_error = Some(e);
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let summary = summarize(&h.store, &judge_hash, &planned, &h.assets)?;
    h.store.write_json("summary.json", &summary)?;
    Ok(summary)
}

pub fn dir_of(start: &Start) -> &Path {
    match start {
        Start::New { out } => out,
        Start::Resume { dir } => dir,
    }
}
