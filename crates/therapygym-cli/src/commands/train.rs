use std::process::ExitCode;
use std::sync::Arc;

use therapygym_grpo::{LossAgg, LrSchedule};
use therapygym_run::RunConfig;
use therapygym_train::{StepRecord, TrainConfig, TrainObserver, TrainStart, run_train};

use crate::cli::{Given, TrainArgs};
use crate::commands::run_args::{
    absolute, absolute_data_paths, apply_judge_args, check_resume_flags, out_or_claim,
};
use crate::ui;

struct Lines;

fn f(x: Option<f64>, digits: usize) -> String {
    x.map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "—".into())
}

impl TrainObserver for Lines {
    fn message(&self, msg: &str) {
        ui::info(msg);
    }

    fn session_done(&self, step: u64, done: usize, total: usize) {
        tracing::debug!(step = step + 1, done, total, "session finished");
    }

    fn step_done(&self, r: &StepRecord) {
        let mut line = format!(
            "step {}/{}  reward {}  ctrs {}/6  violations {}  unscored {}  kl {}  clip {}  {:.1} tok/s  {:.1} s",
            r.step,
            r.steps,
            f(r.rewards.mean_reward, 3),
            f(r.rewards.ctrs_mean, 2),
            f(r.rewards.violation_rate.map(|v| v * 100.0), 0) + "%",
            r.rewards.unscored + r.rewards.failed,
            f(r.kl, 4),
            f(r.clip_frac, 3),
            r.tokens_per_s,
            r.step_s,
        );
        if !r.updated {
            line.push_str("  (no update: no group had distinct rewards)");
        }
        if let Some(h) = &r.holdout {
            line.push_str(&format!(
                "  holdout reward {} (n = {}, unscored {})",
                f(h.mean_reward, 3),
                h.scored,
                h.unscored + h.failed
            ));
        }
        ui::info(&line);
    }
}

fn loss_agg(name: &str) -> anyhow::Result<LossAgg> {
    Ok(match name {
        "token_mean" => LossAgg::TokenMean,
        "seq_mean_token_mean" => LossAgg::SeqMeanTokenMean,
        "dr_grpo" => LossAgg::DrGrpo,
        other => anyhow::bail!(
            "`--loss-agg {other}`: expected token_mean, seq_mean_token_mean or dr_grpo"
        ),
    })
}

fn config(a: &TrainArgs) -> anyhow::Result<TrainConfig> {
    let mut run = RunConfig::new(a.therapist_prompt.as_deref().unwrap_or("cbt"));
    if let Some(p) = &a.policy {
        run.therapist = p.clone();
    }
    if let Some(p) = &a.patient {
        run.patient = p.clone();
    }
    if let Some(j) = &a.judge {
        run.judge = j.clone();
    }
    if let Some(t) = a.turns {
        anyhow::ensure!(t >= 1, "`--turns` must be at least 1");
        run.session.turns = t;
    }
    if let Some(m) = a.therapist_max_tokens {
        run.session.therapist_sampling.max_tokens = m;
    }
    if let Some(m) = a.patient_max_tokens {
        run.session.patient_sampling.max_tokens = m;
    }
    // GRPO explores by sampling: the policy samples at temperature 1 unless told otherwise.
    run.session.therapist_sampling.temperature = a.temperature.unwrap_or(1.0);
    run.session.therapist_sampling.top_p = 1.0;
    if let Some(s) = a.seed {
        run.seed = s;
    }
    apply_judge_args(&mut run, &a.judge_args);
    run.assets.profiles = a.profiles.clone().map(absolute);
    absolute_data_paths(&mut run.assets);
    let mut c = TrainConfig::new(run);
    c.holdout = a.holdout.clone().map(absolute);
    if let Some(s) = a.steps {
        c.steps = s;
    }
    if let Some(g) = a.group_size {
        c.group_size = g;
    }
    if let Some(n) = a.profiles_per_step {
        c.profiles_per_step = n;
    }
    if let Some(k) = a.eval_every {
        c.eval_every = k;
    }
    if let Some(k) = a.checkpoint_every {
        c.checkpoint_every = k;
    }
    if let Some(k) = a.keep_checkpoints {
        c.keep_checkpoints = k;
    }
    if let Some(t) = &a.export_type {
        c.export = t.clone();
    }
    if let Some(p) = &a.preset {
        c.preset = therapygym_train::parse_preset(p)?;
    }
    let lr = a.lr.unwrap_or(1e-6);
    anyhow::ensure!(lr > 0.0 && lr.is_finite(), "`--lr` must be positive");
    c.advantage = c.preset.advantage_norm();
    c.grpo = therapygym_grpo::GrpoConfig::from_preset(c.preset, lr);
    if let Some(w) = a.warmup_steps.filter(|w| *w > 0) {
        c.grpo.schedule = LrSchedule::WarmupCosine {
            peak_lr: lr,
            warmup_steps: w,
            total_steps: c.steps,
            min_lr: lr * 0.1,
        };
    }
    if let Some(agg) = &a.loss_agg {
        c.grpo.loss_agg = loss_agg(agg)?;
    }
    if let Some(x) = a.clip_low {
        c.grpo.clip.eps_low = x;
    }
    if let Some(x) = a.clip_high {
        c.grpo.clip.eps_high = x;
    }
    if let Some(x) = a.kl_coef {
        c.grpo.kl_coef = x;
    }
    if let Some(x) = a.max_grad_norm {
        c.grpo.max_grad_norm = (x > 0.0).then_some(x);
    }
    if let Some(m) = a.micro_batch {
        c.grpo.micro_batch_size = m.max(1);
    }
    Ok(c)
}

pub async fn run(a: TrainArgs, given: &Given) -> anyhow::Result<ExitCode> {
    let mut _claimed = None;
    let start = match &a.resume {
        Some(dir) => {
            check_resume_flags("train", given, &["json"])?;
            TrainStart::Resume { dir: dir.clone() }
        }
        None => TrainStart::New {
            out: out_or_claim(&a.out, "train", &mut _claimed)?,
        },
    };
    let config = config(&a)?;
    let outcome = run_train(config, start, Arc::new(Lines)).await?;
    if a.json {
        ui::json(&serde_json::json!({
            "run_dir": outcome.dir,
            "steps_done": outcome.steps_done,
            "last_step": outcome.last,
            "export": outcome.export,
        }));
    } else {
        ui::out(&format!("run: {}", outcome.dir.display()));
        ui::out(&format!(
            "metrics: {}",
            outcome.dir.join(therapygym_train::METRICS_FILE).display()
        ));
        ui::out(&format!("policy: {}", outcome.export.display()));
    }
    Ok(ExitCode::SUCCESS)
}
