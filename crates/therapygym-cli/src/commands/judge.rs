use std::process::ExitCode;
use std::sync::Arc;

use therapygym_eval::rescore::{RescoreOptions, rescore};
use therapygym_judge::JudgeConfig;
use therapygym_run::{RunConfig, judge_config_for};
use therapygym_store::RunStore;

use crate::cli::JudgeCmdArgs;
use crate::commands::run_args::shell_quote;
use crate::commands::summary::{gate, report};
use crate::progress::Bar;

pub async fn run(a: JudgeCmdArgs) -> anyhow::Result<ExitCode> {
    let store = RunStore::open(&a.dir)?;
    let stored = RunConfig::stored(&store)?;
    let (m, _) = store.manifest()?;
    drop(store);
    // A new judge starts from its own defaults (a local judge writes shorter replies); the
    // run's judge keeps the run's settings.
    let mut jc: JudgeConfig = match &a.judge {
        Some(spec) => judge_config_for(spec),
        None => stored.judge_config.clone(),
    };
    let j = &a.judge_args;
    if let Some(r) = j.judge_retries {
        jc.retries = r;
    }
    if let Some(s) = j.judge_samples {
        jc.samples = s;
    }
    if let Some(m) = j.judge_max_tokens {
        jc.max_tokens = m;
    }
    if let Some(c) = j.judge_rationale_chars {
        jc.rationale_max_chars = c;
    }
    let options = RescoreOptions {
        judge: a.judge,
        judge_config: Some(jc),
        rubric: j.rubric.clone(),
        taxonomy: j.taxonomy.clone(),
        safety_labels: j.safety_labels.clone(),
        judge_system_prompt: None,
        judge_user_prompt: None,
        reward_config: j.reward_config.clone(),
        calibration: j.calibration.clone(),
        concurrency: a.concurrency,
    };
    let bar = Arc::new(Bar::new("judging"));
    let result = rescore(&a.dir, options, bar.clone()).await;
    bar.finish();
    let summary = result?;
    report(&summary, a.json);
    // Failed sessions are simulated again only by resuming the eval run that planned them.
    let retry = (m["kind"] == "eval").then(|| {
        format!(
            "`therapygym eval --resume {}` retries them",
            shell_quote(&summary.run_dir)
        )
    });
    let limit = a.max_unscored_rate.unwrap_or(stored.max_unscored_rate);
    Ok(gate(&summary, limit, retry.as_deref()))
}
