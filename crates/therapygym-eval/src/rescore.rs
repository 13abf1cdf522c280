//! `therapygym judge DIR`: score stored transcripts under a (new) judge without re-simulating.
//! Judgments land in a new judgment set keyed by the judge's hash; transcripts are untouched.
//! Running it again with the same judge finishes an interrupted pass (judging is idempotent).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use therapygym_judge::JudgeConfig;
use therapygym_run::{
    AssetSources, Assets, JudgeCtx, RunConfig, RunError, judge_and_store, judge_set, open_role,
};
use therapygym_store::{RunStore, SessionStatus};
use tokio::task::JoinSet;

use crate::progress::Progress;
use crate::run::PlannedSession;
use crate::summary::{Summary, summarize};

/// What may change when re-scoring.
#[derive(Debug, Clone, Default)]
pub struct RescoreOptions {
    pub judge: Option<String>,
    pub judge_config: Option<JudgeConfig>,
    pub rubric: Option<std::path::PathBuf>,
    pub taxonomy: Option<std::path::PathBuf>,
    pub safety_labels: Vec<String>,
    pub judge_system_prompt: Option<std::path::PathBuf>,
    pub judge_user_prompt: Option<std::path::PathBuf>,
    pub reward_config: Option<std::path::PathBuf>,
    /// A calibration map for the new set (the run's own map is not carried over: it was
    /// fitted for the run's judge).
    pub calibration: Option<std::path::PathBuf>,
    /// Judge calls in flight (at least 1).
    pub concurrency: usize,
}

pub async fn rescore(
    dir: &Path,
    o: RescoreOptions,
    progress: Arc<dyn Progress>,
) -> Result<Summary, RunError> {
    let store = Arc::new(RunStore::open(dir)?);
    let mut config = RunConfig::stored(&store)?;
    // The run's own inputs resolve inside it; the new files as the user named them.
    config.assets = config.assets.resolved_in(dir);
    if let Some(j) = o.judge {
        config.judge = j;
    }
    if let Some(jc) = o.judge_config {
        config.judge_config = jc;
    }
    let a = &mut config.assets;
    let overrides = AssetSources {
        rubric: o.rubric.or(a.rubric.take()),
        taxonomy: o.taxonomy.or(a.taxonomy.take()),
        safety_labels: if o.safety_labels.is_empty() {
            std::mem::take(&mut a.safety_labels)
        } else {
            o.safety_labels
        },
        judge_system_prompt: o.judge_system_prompt.or(a.judge_system_prompt.take()),
        judge_user_prompt: o.judge_user_prompt.or(a.judge_user_prompt.take()),
        reward_config: o.reward_config.or(a.reward_config.take()),
        calibration: o.calibration,
        ..a.clone()
    };
    config.assets = overrides;
    let assets = Assets::load(&config.assets)?;
    store.record_attempt(
        "judge",
        Some(&format!(
            "judge = {}",
            therapygym_models::redact_spec(&config.judge)
        )),
    )?;
    let model = open_role(&config.judge, o.concurrency).await?;
    let judge = assets.judge(model, config.judge_config.clone())?;
    let (judge_hash, identity) = judge_set(&judge, assets.calibration.as_deref());
    store.ensure_judge_set(&judge_hash, &identity, judge.rubric(), judge.taxonomy())?;
    let done: BTreeSet<String> = store.judgments(&judge_hash)?.into_keys().collect();
    let sessions: Vec<_> = store
        .sessions()?
        .into_iter()
        .filter(|s| s.status == SessionStatus::Completed)
        .collect();
    let todo: Vec<_> = sessions
        .iter()
        .filter(|s| !done.contains(&s.id))
        .cloned()
        .collect();
    progress.started(dir, false);
    progress.planned(sessions.len() as u64, (sessions.len() - todo.len()) as u64);
    let ctx = JudgeCtx {
        store: Arc::clone(&store),
        judge: Arc::new(judge),
        judge_hash: judge_hash.clone(),
        reward: assets.reward.clone(),
        rubric: Arc::clone(&assets.rubric),
        calibration: assets.calibration.clone(),
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(o.concurrency.max(1)));
    let mut tasks: JoinSet<Result<(), RunError>> = JoinSet::new();
    for s in todo {
        let (ctx, progress, slots) = (ctx.clone(), Arc::clone(&progress), Arc::clone(&slots));
        tasks.spawn(async move {
            let _permit = slots
                .acquire_owned()
                .await
                .map_err(|_| RunError::Invalid("judge pool closed".into()))?;
            progress.judging(&s.id);
            let judged = judge_and_store(&ctx, &s).await?;
            progress.judged(&s.id, judged.scored);
            Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| RunError::Invalid(format!("a judge task stopped unexpectedly: {e}")))??;
    }
    let planned: Vec<PlannedSession> = sessions
        .iter()
        .map(|s| PlannedSession {
            id: s.id.clone(),
            profile_id: s.profile_id.clone(),
            epoch: s.epoch,
            seed: s.seed,
        })
        .collect();
    let summary = summarize(&store, &judge_hash, &planned, &assets)?;
    store.write_json(
        &format!(
            "summary-{}.json",
            &judge_hash.trim_start_matches("sha256:")[..12.min(judge_hash.len() - 7)]
        ),
        &summary,
    )?;
    Ok(summary)
}
