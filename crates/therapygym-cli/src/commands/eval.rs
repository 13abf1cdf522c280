//! `therapygym eval`: a new run from the flags, or `--resume DIR` with the settings the run
//! started with (a flag that would change results is refused, naming the run's value).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use therapygym_core::Speaker;
use therapygym_eval::{
    Concurrency, EvalOutcome, Start, check_kind, run_eval_until, stored_concurrency,
};
use therapygym_run::{OutDir, RunConfig, judge_config_for};
use therapygym_store::RunStore;

use crate::cli::{EvalArgs, Given, Opening};
use crate::commands::interrupt::{INTERRUPTED, Interrupt};
use crate::commands::run_args::{apply_judge_args, refuse_on_resume, shell_quote};
use crate::commands::summary::{gate, report};
use crate::progress::Bar;
use crate::ui;

/// What may be given with `--resume` (speed and output only; never results).
const RESUME_FLAGS: [&str; 8] = [
    "resume",
    "concurrency",
    "therapist_concurrency",
    "patient_concurrency",
    "judge_concurrency",
    "json",
    "allow_config_drift",
    "debug",
];

/// Sessions in flight when neither the flag nor the run says otherwise.
const DEFAULT_CONCURRENCY: usize = 4;

pub async fn run(a: EvalArgs, given: &Given) -> anyhow::Result<ExitCode> {
    let (config, conc, start) = match &a.resume {
        Some(dir) => {
            let (config, conc) = resume_settings(&a, given, dir)?;
            let whose = if given.has("concurrency") {
                "as given"
            } else {
                "the run's; `--concurrency` changes it"
            };
            ui::info(&format!(
                "concurrency: {} sessions; therapist {}, patient {}, judge {} calls ({whose})",
                conc.sessions, conc.therapist, conc.patient, conc.judge
            ));
            (config, conc, Start::Resume { dir: dir.clone() })
        }
        None => {
            let mut config = RunConfig::new(&a.therapist_prompt);
            apply(&mut config, &a, None);
            let sessions = a.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
            let out = match &a.out {
                Some(p) => OutDir::Given(p.clone()),
                None => OutDir::default_for("eval"),
            };
            let start = Start::New {
                out,
                limit: a.limit,
            };
            (config, per_role(&a, Concurrency::uniform(sessions)), start)
        }
    };
    let bar = Arc::new(Bar::new("sessions"));
    let interrupt = Interrupt::install();
    let result = run_eval(
        config.clone(),
        conc,
        start,
        a.allow_config_drift,
        &bar,
        &interrupt,
    )
    .await;
    bar.finish();
    match result? {
        EvalOutcome::Finished(summary) => {
            report(&summary, a.json);
            let dir = shell_quote(&summary.run_dir);
            Ok(gate(
                &summary,
                config.max_unscored_rate,
                Some(&format!("`therapygym eval --resume {dir}` retries them")),
            ))
        }
        EvalOutcome::Interrupted(s) => {
            let c = &s.sessions;
            ui::info(&format!(
                "interrupted: {} of {} sessions are stored ({} failed); the rest run on resume, nothing stored is redone",
                c.completed + c.failed,
                c.planned,
                c.failed
            ));
            ui::info(&format!(
                "resume with: therapygym eval --resume {}",
                shell_quote(&s.run_dir)
            ));
            Ok(ExitCode::from(INTERRUPTED))
        }
    }
}

async fn run_eval(
    config: RunConfig,
    conc: Concurrency,
    start: Start,
    allow_drift: bool,
    bar: &Arc<Bar>,
    interrupt: &Interrupt,
) -> anyhow::Result<EvalOutcome> {
    let progress = Arc::clone(bar) as Arc<dyn therapygym_eval::Progress>;
    Ok(run_eval_until(
        config,
        conc,
        start,
        allow_drift,
        progress,
        interrupt.stopped(),
    )
    .await?)
}

/// The per-role pools: each flag, else `--concurrency`, else `base`.
fn per_role(a: &EvalArgs, base: Concurrency) -> Concurrency {
    let role = |x: Option<usize>, b: usize| x.or(a.concurrency).unwrap_or(b);
    Concurrency {
        sessions: a.concurrency.unwrap_or(base.sessions),
        therapist: role(a.therapist_concurrency, base.therapist),
        patient: role(a.patient_concurrency, base.patient),
        judge: role(a.judge_concurrency, base.judge),
    }
}

/// Sets the run settings from the flags: all of them for a new run, only those in `only`
/// (typed by the user) when checking a resume.
fn apply(c: &mut RunConfig, a: &EvalArgs, only: Option<&Given>) {
    let set = |id: &str| only.is_none_or(|g| g.has(id));
    if set("therapist") {
        c.therapist = a.therapist.clone();
    }
    if set("patient") {
        c.patient = a.patient.clone();
    }
    if set("judge") {
        c.judge = a.judge.clone();
        c.judge_config = judge_config_for(&a.judge);
    }
    if set("sessions_per_profile") {
        c.sessions_per_profile = a.sessions_per_profile;
    }
    if set("shard") {
        c.shard = a.shard;
    }
    if set("turns") {
        c.session.turns = a.turns;
    }
    if set("opening") {
        c.session.opening = match a.opening {
            Opening::Therapist => Speaker::Therapist,
            Opening::Patient => Speaker::Patient,
        };
    }
    if set("therapist_prompt") {
        c.assets.therapist_prompt = a.therapist_prompt.clone();
    }
    if set("therapist_max_tokens") {
        c.session.therapist_sampling.max_tokens = a.therapist_max_tokens;
    }
    if set("patient_max_tokens") {
        c.session.patient_sampling.max_tokens = a.patient_max_tokens;
    }
    if set("seed") {
        c.seed = a.seed;
    }
    if set("max_unscored_rate") {
        c.max_unscored_rate = a.max_unscored_rate;
    }
    if set("profiles") {
        c.assets.profiles = a.profiles.clone();
    }
    apply_judge_args(c, &a.judge_args);
}

fn file_setting(p: &Option<std::path::PathBuf>, default: &str) -> String {
    p.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| default.to_string())
}

/// A run's settings as the flags that set them would show them (by argument id).
fn settings(c: &RunConfig) -> BTreeMap<&'static str, String> {
    let j = &c.judge_config;
    let a = &c.assets;
    BTreeMap::from([
        ("therapist", c.therapist.clone()),
        ("patient", c.patient.clone()),
        ("judge", c.judge.clone()),
        ("sessions_per_profile", c.sessions_per_profile.to_string()),
        (
            "shard",
            c.shard
                .map(|s| s.to_string())
                .unwrap_or_else(|| "none (the whole plan)".into()),
        ),
        ("turns", c.session.turns.to_string()),
        ("opening", c.session.opening.as_str().to_string()),
        ("therapist_prompt", a.therapist_prompt.clone()),
        (
            "therapist_max_tokens",
            c.session.therapist_sampling.max_tokens.to_string(),
        ),
        (
            "patient_max_tokens",
            c.session.patient_sampling.max_tokens.to_string(),
        ),
        ("seed", c.seed.to_string()),
        ("max_unscored_rate", c.max_unscored_rate.to_string()),
        ("judge_retries", j.retries.to_string()),
        ("judge_samples", j.samples.to_string()),
        ("judge_max_tokens", j.max_tokens.to_string()),
        ("judge_rationale_chars", j.rationale_max_chars.to_string()),
        (
            "profiles",
            file_setting(&a.profiles, "the shipped examples"),
        ),
        (
            "reward_config",
            file_setting(&a.reward_config, "the shipped default"),
        ),
        ("rubric", file_setting(&a.rubric, "the shipped CTRS")),
        (
            "taxonomy",
            file_setting(&a.taxonomy, "the shipped taxonomy"),
        ),
        ("calibration", file_setting(&a.calibration, "none")),
        (
            "safety_labels",
            if a.safety_labels.is_empty() {
                "the taxonomy's enabled labels".to_string()
            } else {
                a.safety_labels.join(",")
            },
        ),
    ])
}

/// The stored settings and concurrency of a run to resume; refuses any typed flag that would
/// change its results.
fn resume_settings(
    a: &EvalArgs,
    given: &Given,
    dir: &Path,
) -> anyhow::Result<(RunConfig, Concurrency)> {
    let store = RunStore::open(dir)?;
    check_kind(&store, "eval --resume")?;
    let stored = RunConfig::stored(&store)?;
    let mut wanted = stored.clone();
    apply(&mut wanted, a, Some(given));
    let (then, mut now) = (settings(&stored), settings(&wanted));
    if let Some(n) = a.limit {
        now.insert("limit", n.to_string());
    }
    for (id, flag) in given.iter() {
        if RESUME_FLAGS.contains(&id) {
            continue;
        }
        let run_value = then
            .get(id)
            .cloned()
            .unwrap_or_else(|| format!("profiles {}", then["profiles"]));
        if !then.contains_key(id) || then.get(id) != now.get(id) {
            let typed = now.get(id).cloned().unwrap_or_default();
            return Err(refuse_on_resume(
                "eval",
                flag,
                &typed,
                &run_value,
                &RESUME_FLAGS,
            ));
        }
    }
    let base = stored_concurrency(&store)?.unwrap_or(Concurrency::uniform(DEFAULT_CONCURRENCY));
    Ok((stored, per_role(a, base)))
}
