use std::process::ExitCode;
use std::sync::Arc;

use therapygym_eval::rescore::{RescoreOptions, rescore};
use therapygym_judge::JudgeConfig;
use therapygym_run::RunConfig;
use therapygym_store::RunStore;

use crate::cli::JudgeCmdArgs;
use crate::commands::eval::{gate, report};
use crate::commands::run_args::load_calibration;
use crate::progress::Bar;

pub async fn run(a: JudgeCmdArgs) -> anyhow::Result<ExitCode> {
    let stored = RunConfig::stored(&RunStore::open(&a.dir)?)?;
    let mut jc: JudgeConfig = stored.judge_config.clone();
    let j = &a.judge_args;
    if let Some(r) = j.judge_retries {
        jc.retries = r;
    }
    if let Some(s) = j.judge_samples {
        jc.samples = s.max(1);
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
        calibration: load_calibration(&j.calibration)?,
        concurrency: a.concurrency,
    };
    let bar = Arc::new(Bar::new("judging"));
    let result = rescore(&a.dir, options, bar.clone()).await;
    bar.finish();
    let summary = result?;
    report(&summary, a.json);
    Ok(gate(&summary, stored.max_unscored_rate))
}
