//! An evaluation run: plan (profile × epoch), simulate, judge, commit, summarise — resumable.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use therapygym_core::Profile;
use therapygym_core::seed::session_seed;
use therapygym_judge::Judge;
use therapygym_run::{
    AssetSources, Assets, InputFiles, JudgeCtx, OutDir, RunConfig, RunError, Staged,
    judge_and_store, judge_set, open_role, record_of, roles_json, session_id, store_session,
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
        out: OutDir,
        /// Use only the first N profiles (the subset is stored in the run as its profiles).
        limit: Option<usize>,
    },
    /// Continue an interrupted run; the config is read from its manifest.
    Resume { dir: PathBuf },
}

/// What `eval --out DIR` says when DIR is taken.
const EXISTS_ADVICE: &str =
    "continue that run with `therapygym eval --resume DIR`, or choose another `--out`";

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

/// The sessions a run plans: the whole plan, or its `--shard` slice.
pub fn planned_sessions(config: &RunConfig, profiles: &[Profile]) -> Vec<PlannedSession> {
    let all = plan(profiles, config.sessions_per_profile, config.seed);
    match &config.shard {
        None => all,
        Some(shard) => {
            let keep: BTreeSet<String> = shard
                .select(all.iter().map(|p| p.id.as_str()))
                .into_iter()
                .map(String::from)
                .collect();
            all.into_iter().filter(|p| keep.contains(&p.id)).collect()
        }
    }
}

fn manifest(
    run_id: &str,
    config: &RunConfig,
    assets: &Assets,
    hash: &str,
    roles: Value,
    conc: Concurrency,
) -> Value {
    assets.manifest(json!({
        "kind": "eval",
        "run_id": run_id,
        "config_hash": hash,
        "config": config,
        "roles": roles,
        // Not hashed: it changes speed only. A resume uses it unless told otherwise.
        "concurrency": conc,
        "seeds": {"run_seed": config.seed, "rule": "session seed = derive(\"session\", profile_id, run_seed, epoch); see docs/design/seeds.md"},
    }))
}

/// Differences between two JSON values, as dotted key paths (for "config differs" messages).
pub(crate) fn diff_keys(a: &Value, b: &Value, prefix: &str, out: &mut Vec<String>) {
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
    /// The judgment set this run's judgments go to (judge and calibration map).
    pub judge_hash: String,
    pub assets: Assets,
    pub config: RunConfig,
}

/// The settings a new run stores, and the input files it keeps: the user's files copied in,
/// and with `limit` the first N of `loaded`'s profiles as the run's own profile file.
fn bundle(
    config: &RunConfig,
    loaded: &Assets,
    limit: Option<usize>,
) -> Result<(AssetSources, InputFiles), RunError> {
    let (mut sources, mut files) = config.assets.bundle()?;
    if let Some(n) = limit {
        if n == 0 {
            return Err(RunError::Invalid(
                "`--limit` must be at least 1 (it is the number of profiles to use)".into(),
            ));
        }
        let subset: Vec<_> = loaded.profiles.profiles.iter().take(n).cloned().collect();
        let text = therapygym_core::profile::to_jsonl(&subset);
        sources.profiles = Some(files.put("profiles.jsonl", text.into_bytes()));
    }
    Ok((sources, files))
}

/// Creates a new run directory in one step (see [`therapygym_run::rundir`]): models are opened
/// first, so a bad spec fails before the directory exists, and the directory appears only with
/// its manifest, inputs and profiles in it.
async fn create_run(
    mut config: RunConfig,
    out: &OutDir,
    limit: Option<usize>,
    conc: Concurrency,
) -> Result<(RunStore, RunConfig, Assets), RunError> {
    // Loaded from the user's files first, so an error names the file they gave.
    let loaded = Assets::load(&config.assets)?;
    let (sources, files) = bundle(&config, &loaded, limit)?;
    config.assets = sources;
    let staged = Staged::new(out.clone(), &files, EXISTS_ADVICE)?;
    let assets = Assets::load_in(&config.assets, staged.base())?;
    let hash = assets.config_hash(&config);
    let (t, p, j) = (
        open_role(&config.therapist, 1).await?,
        open_role(&config.patient, 1).await?,
        open_role(&config.judge, 1).await?,
    );
    let run_id = uuid::Uuid::now_v7().to_string();
    let roles = roles_json(&t, &p, &j, &config);
    let m = manifest(&run_id, &config, &assets, &hash, roles, conc);
    let store = staged.commit(&m, &hash, |store| {
        store.put_profiles(&assets.profiles.profiles)?;
        store.record_attempt("eval", None)?;
        Ok(())
    })?;
    Ok((store, config, assets))
}

/// The concurrency a run was started with (`None` for runs made before it was stored).
pub fn stored_concurrency(store: &RunStore) -> Result<Option<Concurrency>, RunError> {
    let (m, _) = store.manifest()?;
    Ok(serde_json::from_value(m["concurrency"].clone()).ok())
}

/// Refuses to continue a run another command made (its kind is not `eval`).
pub fn check_kind(store: &RunStore, command: &str) -> Result<(), RunError> {
    let (m, _) = store.manifest()?;
    match m["kind"].as_str() {
        Some("eval") => Ok(()),
        kind => Err(RunError::Invalid(format!(
            "{}: a {} run; `{command}` continues runs made by `therapygym eval` (re-score any run with `therapygym judge DIR`)",
            store.dir().display(),
            kind.unwrap_or("unknown")
        ))),
    }
}

/// Reopens an interrupted run with the settings it was started with; refuses when its inputs
/// changed since, unless `allow_drift` (then the differing keys are recorded).
fn reopen_run(dir: &Path, allow_drift: bool) -> Result<(RunStore, RunConfig, Assets), RunError> {
    let store = RunStore::open(dir)?;
    check_kind(&store, "eval --resume")?;
    let (m, stored_hash) = store.manifest()?;
    let stored: RunConfig = serde_json::from_value(m["config"].clone()).map_err(|e| {
        RunError::Invalid(format!(
            "{}: the manifest's config is unreadable: {e}",
            dir.display()
        ))
    })?;
    let assets = Assets::load_in(&stored.assets, dir)?;
    let hash = assets.config_hash(&stored);
    let mut note = None;
    if hash != stored_hash {
        let mut keys = Vec::new();
        let now_part = json!({"config": stored, "assets": assets.manifest_part()});
        let then_part = json!({"config": m["config"], "assets": {
            "prompts": m["prompts"], "rubric": m["rubric"], "safety_taxonomy": m["safety_taxonomy"],
            "vocabulary": m["vocabulary"], "profiles": m["profiles"], "reward": m["reward"],
            "calibration": m["calibration"]}});
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
        Start::New { out, limit } => create_run(config, out, *limit, conc).await?,
        Start::Resume { dir } => reopen_run(dir, allow_drift)?,
    };
    let therapist = open_role(&config.therapist, conc.therapist).await?;
    let patient = open_role(&config.patient, conc.patient).await?;
    let judge_model = open_role(&config.judge, conc.judge).await?;
    let runner = assets.session_runner(therapist, patient, config.session.clone())?;
    let judge = assets.judge(judge_model, config.judge_config.clone())?;
    let (judge_hash, identity) = judge_set(&judge, assets.calibration.as_deref());
    store.ensure_judge_set(&judge_hash, &identity, judge.rubric(), judge.taxonomy())?;
    Ok(RunHandles {
        store: Arc::new(store),
        runner: Arc::new(runner),
        judge: Arc::new(judge),
        judge_hash,
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
    let planned = planned_sessions(&h.config, &h.assets.profiles.profiles);
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
    progress.session_started(&p.id);
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
        store_session(&ctx.store, rec).await?;
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
    let record = store_session(&ctx.store, record).await?;
    progress.session_finished(&p.id, SessionOutcome::Completed);
    drop(permit);
    progress.judging(&p.id);
    let judged = judge_and_store(&ctx, &record).await?;
    progress.judged(&p.id, judged.scored);
    Ok(())
}

/// Waits for every task; a store error stops the run (nothing may be lost), but in-flight
/// work finishes first. Returns the first error, or `Ok(false)` when `stop` fired first: then
/// every task is cancelled at its next await. A session or judgment is committed in one
/// transaction on the blocking pool, which finishes even when its task is cancelled, so a
/// cancelled task leaves either its whole row or nothing; resume runs what is missing.
async fn join_all(
    mut tasks: JoinSet<Result<(), RunError>>,
    stop: impl Future<Output = ()>,
) -> Result<bool, RunError> {
    let mut first_error = None;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            joined = tasks.join_next() => {
                let Some(joined) = joined else { break };
                let r = joined.map_err(|e| {
                    RunError::Invalid(format!("a session task stopped unexpectedly: {e}"))
                });
                if let Err(e) = r.and_then(|x| x)
                    && first_error.is_none()
                {
                    first_error = Some(e);
                }
            }
            () = &mut stop => {
                tasks.shutdown().await;
                return first_error.map_or(Ok(false), Err);
            }
        }
    }
    first_error.map_or(Ok(true), Err)
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum EvalOutcome {
    /// Every planned session ran; `summary.json` is written.
    Finished(Summary),
    /// Stopped on request (Ctrl-C): the summary of what is stored so far; `--resume` runs the
    /// rest.
    Interrupted(Summary),
}

/// Runs (or resumes) an evaluation and returns its summary.
pub async fn run_eval(
    config: RunConfig,
    conc: Concurrency,
    start: Start,
    allow_drift: bool,
    progress: Arc<dyn Progress>,
) -> Result<Summary, RunError> {
    match run_eval_until(
        config,
        conc,
        start,
        allow_drift,
        progress,
        std::future::pending(),
    )
    .await?
    {
        EvalOutcome::Finished(s) | EvalOutcome::Interrupted(s) => Ok(s),
    }
}

/// [`run_eval`] that stops cleanly when `stop` completes (see [`join_all`]).
pub async fn run_eval_until(
    config: RunConfig,
    conc: Concurrency,
    start: Start,
    allow_drift: bool,
    progress: Arc<dyn Progress>,
    stop: impl Future<Output = ()>,
) -> Result<EvalOutcome, RunError> {
    let h = prepare(config, conc, &start, allow_drift).await?;
    progress.started(h.store.dir(), matches!(start, Start::Resume { .. }));
    let attempt = h.store.attempts()?;
    let judge_hash = h.judge_hash.clone();
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
        calibration: h.assets.calibration.clone(),
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
            progress.judging(&s.id);
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
    let finished = join_all(tasks, stop).await?;
    let summary = summarize(&h.store, &judge_hash, &work.planned, &h.assets)?;
    if !finished {
        return Ok(EvalOutcome::Interrupted(summary));
    }
    h.store.write_json("summary.json", &summary)?;
    Ok(EvalOutcome::Finished(summary))
}
