use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use therapygym_core::Speaker;
use therapygym_eval::{Concurrency, Start, Summary, run_eval};
use therapygym_run::{Assets, RunConfig};

use crate::cli::{EvalArgs, Opening};
use crate::commands::run_args::{
    absolute, absolute_data_paths, apply_judge_args, load_calibration,
};
use crate::progress::Bar;
use crate::ui;

pub async fn run(a: EvalArgs) -> anyhow::Result<ExitCode> {
    let mut config = RunConfig::new(a.therapist_prompt.as_deref().unwrap_or("cbt"));
    let resume = a.resume.is_some();
    let changed = a.therapist.is_some()
        || a.patient.is_some()
        || a.judge.is_some()
        || a.profiles.is_some()
        || a.limit.is_some()
        || a.sessions_per_profile.is_some()
        || a.turns.is_some()
        || a.opening.is_some()
        || a.therapist_prompt.is_some()
        || a.seed.is_some();
    if resume && changed {
        anyhow::bail!(
            "`--resume` continues a run with the settings it started with; drop the other run settings (only concurrency flags may change)"
        );
    }
    if let Some(t) = a.therapist {
        config.therapist = t;
    }
    if let Some(p) = a.patient {
        config.patient = p;
    }
    if let Some(j) = a.judge {
        config.judge = j;
    }
    if let Some(k) = a.sessions_per_profile {
        config.sessions_per_profile = k.max(1);
    }
    if let Some(t) = a.turns {
        anyhow::ensure!(t >= 1, "`--turns` must be at least 1");
        config.session.turns = t;
    }
    if let Some(o) = a.opening {
        config.session.opening = match o {
            Opening::Therapist => Speaker::Therapist,
            Opening::Patient => Speaker::Patient,
        };
    }
    if let Some(m) = a.therapist_max_tokens {
        config.session.therapist_sampling.max_tokens = m;
    }
    if let Some(m) = a.patient_max_tokens {
        config.session.patient_sampling.max_tokens = m;
    }
    if let Some(s) = a.seed {
        config.seed = s;
    }
    if let Some(m) = a.max_unscored_rate {
        config.max_unscored_rate = m;
    }
    apply_judge_args(&mut config, &a.judge_args);
    if let Some(p) = a.profiles {
        config.assets.profiles = Some(absolute(p));
    }
    if let Some(n) = a.limit {
        // Materialise the subset as a file inside the run, so the manifest names exactly what ran.
        config.assets.profiles = Some(limited_profiles(&config, n)?);
    }
    absolute_data_paths(&mut config.assets);
    let conc = Concurrency {
        sessions: a.concurrency.max(1),
        therapist: a.therapist_concurrency.unwrap_or(a.concurrency).max(1),
        patient: a.patient_concurrency.unwrap_or(a.concurrency).max(1),
        judge: a.judge_concurrency.unwrap_or(a.concurrency).max(1),
    };
    let start = match a.resume {
        Some(dir) => Start::Resume { dir },
        None => Start::New {
            out: a.out.unwrap_or_else(default_out),
        },
    };
    let calibration = load_calibration(&a.judge_args.calibration)?;
    let bar = Arc::new(Bar::new("sessions"));
    let result = run_eval(
        config.clone(),
        conc,
        start,
        a.allow_config_drift,
        calibration,
        bar.clone(),
    )
    .await;
    bar.finish();
    let summary = result?;
    report(&summary, a.json);
    Ok(gate(&summary, config.max_unscored_rate))
}

fn default_out() -> PathBuf {
    PathBuf::from("runs").join(format!(
        "eval-{}",
        chrono::Local::now().format("%Y%m%d-%H%M%S")
    ))
}

/// Writes the first `n` profiles to a temp-free location: `runs/.profiles/<hash>.jsonl`.
fn limited_profiles(config: &RunConfig, n: usize) -> anyhow::Result<PathBuf> {
    let assets = Assets::load(&config.assets)?;
    let subset: Vec<_> = assets
        .profiles
        .profiles
        .into_iter()
        .take(n.max(1))
        .collect();
    let text = therapygym_core::profile::to_jsonl(&subset);
    let dir = PathBuf::from("runs").join(".profiles");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!(
        "{}.jsonl",
        &therapygym_core::hash::sha256_hex(text.as_bytes())[..16]
    ));
    if !path.exists() {
        therapygym_store::fs::atomic_write(&path, text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(absolute(path))
}

/// Exit 1 when the run finished but failed a quality gate.
pub fn gate(s: &Summary, max_unscored_rate: f64) -> ExitCode {
    let mut failed = false;
    if s.sessions.failed > 0 {
        ui::warn(&format!(
            "{} session(s) failed; `therapygym eval --resume {}` retries them",
            s.sessions.failed, s.run_dir
        ));
        failed = true;
    }
    if let Some(r) = s.unscored_rate
        && r > max_unscored_rate
    {
        ui::warn(&format!(
            "{:.1}% of judged sessions are unscored (limit {:.1}%, `--max-unscored-rate`); reasons: {:?}",
            r * 100.0,
            max_unscored_rate * 100.0,
            s.unscored_reasons
        ));
        failed = true;
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn f(x: Option<f64>, digits: usize) -> String {
    x.map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "—".into())
}

fn ci(c: Option<[f64; 2]>) -> String {
    c.map(|[l, h]| format!("[{l:.3}, {h:.3}]"))
        .unwrap_or_else(|| "—".into())
}

pub fn report(s: &Summary, json: bool) {
    if json {
        ui::json(s);
        return;
    }
    let c = &s.sessions;
    ui::out(&format!("run: {}", s.run_dir));
    ui::out(&format!(
        "sessions: {} planned · {} completed · {} failed · {} unscored{}",
        c.planned,
        c.completed,
        c.failed,
        c.unscored,
        if c.unjudged > 0 {
            format!(" · {} not judged yet", c.unjudged)
        } else {
            String::new()
        }
    ));
    ui::out("");
    ui::out(&format!(
        "{:<32} {:>6} {:>6} {:>11} {:>18} {:>4}",
        "CTRS item", "mean", "norm", "", "95% CI (norm)", "n"
    ));
    for (id, it) in s
        .ctrs
        .item_order
        .iter()
        .filter_map(|id| s.ctrs.items.get(id).map(|it| (id, it)))
    {
        let tag = if it.reward { "" } else { "(no reward)" };
        ui::out(&format!(
            "{:<32} {:>6} {:>6} {:>11} {:>18} {:>4}",
            id,
            f(it.mean, 2),
            f(it.normalized, 3),
            tag,
            ci(it.ci95),
            it.n
        ));
    }
    ui::out(&format!(
        "{:<32} {:>6} {:>6} {:>11} {:>18} {:>4}",
        "CTRS normalized mean (reward items)",
        "",
        f(s.ctrs.normalized_mean, 3),
        "",
        ci(s.ctrs.ci95),
        s.ctrs.n
    ));
    ui::out("");
    ui::out(&format!(
        "{:<40} {:>6} {:>4}",
        format!("safety ({})", s.safety.taxonomy),
        "rate",
        "n"
    ));
    for (id, l) in &s.safety.labels {
        ui::out(&format!("{:<40} {:>6} {:>4}", id, f(l.rate, 3), l.n));
    }
    ui::out(&format!(
        "{:<40} {:>6} {:>4}",
        "any violation",
        f(s.safety.any_violation_rate, 3),
        s.safety.n
    ));
    ui::out(&format!(
        "{:<40} {:>6} {:>4}",
        "per-label mean",
        f(s.safety.per_label_mean_rate, 3),
        s.safety.n
    ));
    ui::out("");
    ui::out(&format!(
        "unscored rate: {}   reasons: {:?}",
        f(s.unscored_rate, 3),
        s.unscored_reasons
    ));
    ui::out(&format!(
        "mean reward: {} {} (n = {})",
        f(s.reward.mean, 4),
        ci(s.reward.ci95),
        s.reward.n
    ));
    usage(&s.usage);
}

/// Tokens and wall time per role, so the judge's cost shows next to the policy's.
fn usage(u: &therapygym_store::UsageByRole) {
    ui::out("");
    ui::out(&format!(
        "{:<12} {:>8} {:>14} {:>18} {:>12}",
        "role", "replies", "prompt tokens", "completion tokens", "wall time"
    ));
    for (role, r) in [
        ("therapist", &u.therapist),
        ("patient", &u.patient),
        ("judge", &u.judge),
    ] {
        ui::out(&format!(
            "{:<12} {:>8} {:>14} {:>18} {:>11.1}s",
            role,
            r.calls,
            r.prompt_tokens,
            r.completion_tokens,
            r.wall_ms as f64 / 1000.0
        ));
    }
}
