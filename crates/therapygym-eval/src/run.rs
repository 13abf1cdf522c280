//! An evaluation run: plan (profile × epoch), simulate, judge, commit, summarise — resumable.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use therapygym_core::Profile;
use therapygym_core::seed::session_seed;
use therapygym_judge::{Calibration, Judge};
use therapygym_run::{
    Assets, JudgeCtx, RunConfig, RunError, judge_and_store, open_role, record_of, roles_json,
    session_id,
};
use therapygym_session::SessionRunner;
use therapygym_store::{RunStore, SessionRecord, SessionStatus};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::config::Concurrency;
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

fn manifest(run_id: &str, config: &RunConfig, assets: &Assets, hash: &str, roles: Value) -> Value {
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
    pub config: RunConfig,
}

/// Creates a new run directory: models are opened first, so a bad spec fails before the
/// directory exists.
async fn create_run(
    config: RunConfig,
    out: &Path,
) -> Result<(RunStore, RunConfig, Assets), RunError> {
    let assets = Assets::load(&config.assets)?;
    let hash = assets.config_hash(&config);
    let (t, p, j) = (
        open_role(&config.therapist, 1).await?,
        open_role(&config.patient, 1).await?,
        open_role(&config.judge, 1).await?,
    );
    let run_id = uuid::Uuid::now_v7().to_string();
    let roles = roles_json(&t, &p, &j, &config);
    let store = RunStore::create(
        out,
        &manifest(&run_id, &config, &assets, &hash, roles),
        &hash,
    )?;
    store.put_profiles(&assets.profiles.profiles)?;
    store.record_attempt("eval", None)?;
    Ok((store, config, assets))
}

/// Reopens an interrupted run with the settings it was started with; refuses when its inputs
/// changed since, unless `allow_drift` (then the differing keys are recorded).
fn reopen_run(dir: &Path, allow_drift: bool) -> Result<(RunStore, RunConfig, Assets), RunError> {
    let store = RunStore::open(dir)?;
    let (m, stored_hash) = store.manifest()?;
    let stored: RunConfig = serde_json::from_value(m["config"].clone()).map_err(|e| {
        RunError::Invalid(format!(
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
            return Err(RunError::Invalid(format!(
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
    store.record_attempt("eval --resume", note.as_deref())?;
    Ok((store, stored, assets))
}

/// Opens (or creates) the run and its models. On resume the stored settings are used, never
/// `config`: a resumed run must not silently mix in different settings.
pub async fn prepare(
    config: RunConfig,
    conc: Concurrency,
    start: &Start,
    allow_drift: bool,
) -> Result<RunHandles, RunError> {
    let (store, config, assets) = match start {
        Start::New { out } => create_run(config, out).await?,
        Start::Resume { dir } => reopen_run(dir, allow_drift)?,
    };
    let therapist = open_role(&config.therapist, conc.therapist).await?;
    let patient = open_role(&config.patient, conc.patient).await?;
    let judge_model = open_role(&config.judge, conc.judge).await?;
    let runner = assets.session_runner(therapist, patient, config.session.clone())?;
    let judge = assets.judge(judge_model, config.judge_config.clone())?;
    store.ensure_judge_set(
        &judge.hash(),
        &judge.identity(),
        judge.rubric(),
        judge.taxonomy(),
    )?;
    Ok(RunHandles {
        store: Arc::new(store),
        runner: Arc::new(runner),
        judge: Arc::new(judge),
        assets,
        config,
    })
}

/// What is left to do in a run: sessions to simulate, and stored sessions whose judgment
/// did not survive a crash.
struct Work {
    planned: Vec<PlannedSession>,
    todo: Vec<PlannedSession>,
    unjudged: Vec<SessionRecord>,
}

fn remaining_work(h: &RunHandles, judge_hash: &str) -> Result<Work, RunError> {
    let planned = plan(
        &h.assets.profiles.profiles,
        h.config.sessions_per_profile,
        h.config.seed,
    );
    let statuses = h.store.session_statuses()?;
    let judged: BTreeSet<String> = h.store.judgments(judge_hash)?.into_keys().collect();
    let todo = planned
        .iter()
        .filter(|p| statuses.get(&p.id) != Some(&SessionStatus::Completed))
        .cloned()
        .collect();
    let unjudged = h
        .store
        .sessions()?
        .into_iter()
        .filter(|s| s.status == SessionStatus::Completed && !judged.contains(&s.id))
        .collect();
    Ok(Work {
        planned,
        todo,
        unjudged,
    })
}

/// Simulates one planned session, stores it, and (when it finished) judges it. The session
/// slot is released before judging, so the next session may start meanwhile.
async fn simulate_and_judge(
    p: PlannedSession,
    profile: Profile,
    slots: Arc<Semaphore>,
    runner: Arc<SessionRunner>,
    ctx: JudgeCtx,
    attempt: u32,
    progress: Arc<dyn Progress>,
) -> Result<(), RunError> {
    let permit = slots
        .acquire_owned()
        .await
        .map_err(|_| RunError::Invalid("session pool closed".into()))?;
    let started = std::time::Instant::now();
    let mut session = runner.new_session(&profile, p.seed)?;
    let result = runner.drive(&mut session, "therapist").await;
    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    if let Err(e) = result {
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
        ctx.store.insert_session(&rec)?;
        progress.session_finished(&p.id, SessionOutcome::Failed(e.to_string()));
        return Ok(());
    }
    let record = record_of(
        &session,
        p.epoch,
        SessionStatus::Completed,
        None,
        ms,
        attempt,
        json!({}),
    );
    ctx.store.insert_session(&record)?;
    progress.session_finished(&p.id, SessionOutcome::Completed);
    drop(permit);
    let judged = judge_and_store(&ctx, &record).await?;
    progress.judged(&p.id, judged.scored);
    Ok(())
}

/// Waits for every task; a store error stops the run (nothing may be lost), but in-flight
/// work finishes first. Returns the first error.
async fn join_all(mut tasks: JoinSet<Result<(), RunError>>) -> Result<(), RunError> {
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let r = joined
            .map_err(|e| RunError::Invalid(format!("a session task stopped unexpectedly: {e}")));
        if let Err(e) = r.and_then(|x| x)
            && first_error.is_none()
        {
            first_error = Some(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Runs (or resumes) an evaluation and returns its summary.
pub async fn run_eval(
    config: RunConfig,
    conc: Concurrency,
    start: Start,
    allow_drift: bool,
    calibration: Option<Arc<Calibration>>,
    progress: Arc<dyn Progress>,
) -> Result<Summary, RunError> {
    let h = prepare(config, conc, &start, allow_drift).await?;
    let attempt = h.store.attempts()?;
    let judge_hash = h.judge.hash();
    let work = remaining_work(&h, &judge_hash)?;
    progress.planned(
        work.planned.len() as u64,
        (work.planned.len() - work.todo.len()) as u64,
    );
    let ctx = JudgeCtx {
        store: Arc::clone(&h.store),
        judge: Arc::clone(&h.judge),
        judge_hash: judge_hash.clone(),
        reward: h.assets.reward.clone(),
        rubric: Arc::clone(&h.assets.rubric),
        calibration,
    };
    let profiles: BTreeMap<&str, &Profile> = h
        .assets
        .profiles
        .profiles
        .iter()
        .map(|p| (p.id.as_str(), p))
        .collect();

    let slots = Arc::new(Semaphore::new(conc.sessions.max(1)));
    let mut tasks: JoinSet<Result<(), RunError>> = JoinSet::new();
    // Sessions whose transcript survived a crash but not their judgment: judge them first.
    for s in work.unjudged {
        let (ctx, progress) = (ctx.clone(), Arc::clone(&progress));
        tasks.spawn(async move {
            let judged = judge_and_store(&ctx, &s).await?;
            progress.judged(&s.id, judged.scored);
            Ok(())
        });
    }
    for p in work.todo {
        let Some(profile) = profiles.get(p.profile_id.as_str()).map(|p| (*p).clone()) else {
            continue;
        };
        tasks.spawn(simulate_and_judge(
            p,
            profile,
            Arc::clone(&slots),
            Arc::clone(&h.runner),
            ctx.clone(),
            attempt,
            Arc::clone(&progress),
        ));
    }
    join_all(tasks).await?;
    let summary = summarize(&h.store, &judge_hash, &work.planned, &h.assets)?;
    h.store.write_json("summary.json", &summary)?;
    Ok(summary)
}
