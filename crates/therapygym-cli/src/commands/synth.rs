//! `therapygym synth`: TreeSynth profile synthesis (see docs/synth.md).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use therapygym_core::builtin;
use therapygym_models::{ModelSpec, open_model};
use therapygym_synth::{
    RunDir, SynthConfig, SynthEvent, SynthProgress, SynthPrompts, SynthSummary,
};

use crate::cli::{Given, SynthArgs};
use crate::commands::run_args::{check_resume_flags, out_or_claim};
use crate::ui;

/// Renders the library's events: nodes expanded per level, then profiles kept against the
/// target, with rejections, duplicates and an ETA.
struct Bar {
    bar: ProgressBar,
    nodes: AtomicU64,
}

impl Bar {
    fn new() -> Self {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{spinner} {prefix} [{bar:30}] {pos}/{len} {msg} (ETA {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.enable_steady_tick(std::time::Duration::from_millis(500));
        Self {
            bar,
            nodes: AtomicU64::new(0),
        }
    }
}

impl SynthProgress for Bar {
    fn event(&self, e: &SynthEvent) {
        match e {
            SynthEvent::Started { attempt, .. } => {
                if *attempt > 1 {
                    self.bar.println(format!(
                        "resuming (attempt {attempt}): finished nodes and leaf jobs are reused"
                    ));
                }
            }
            SynthEvent::Level {
                depth,
                to_expand,
                resumed,
            } => {
                self.bar.set_prefix(format!("tree level {depth}"));
                self.bar.set_length((to_expand + resumed) as u64);
                self.bar.set_position(*resumed as u64);
                self.bar.reset_eta();
            }
            SynthEvent::Node { resumed, .. } => {
                let n = self.nodes.fetch_add(1, Ordering::Relaxed) + 1;
                if !resumed {
                    self.bar.inc(1);
                }
                self.bar.set_message(format!("nodes expanded {n}"));
            }
            SynthEvent::LeavesPlanned {
                leaves,
                internal_nodes,
                planned,
            } => {
                self.bar.println(format!(
                    "tree: {internal_nodes} inner nodes, {leaves} leaves, {planned} profiles planned"
                ));
                self.bar.set_prefix("profiles");
                self.bar.set_position(0);
                self.bar.reset_eta();
            }
            SynthEvent::Leaf { totals, .. } => {
                self.bar.set_position(totals.kept);
                self.bar.set_message(format!(
                    "kept · rejected {} · duplicates {} · nodes {}",
                    totals.rejected,
                    totals.duplicates,
                    self.nodes.load(Ordering::Relaxed)
                ));
            }
            SynthEvent::Warning(w) => self.bar.println(format!("warning: {w}")),
            SynthEvent::Finished { .. } => {}
        }
    }
}

/// The bar's length in the leaf phase: the target, or everything planned.
struct Sized {
    inner: Bar,
    target: Option<usize>,
}

impl SynthProgress for Sized {
    fn event(&self, e: &SynthEvent) {
        self.inner.event(e);
        if let SynthEvent::LeavesPlanned { planned, .. } = e {
            let len = self.target.map(|t| t as u64).unwrap_or(*planned);
            self.inner.bar.set_length(len);
        }
    }
}

fn config_from(a: &SynthArgs) -> SynthConfig {
    let mut c = SynthConfig::default();
    if let Some(m) = &a.model {
        c.model = m.clone();
    }
    c.target = a.target;
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = a.$f { c.$f = v; } )* };
    }
    set!(
        depth,
        samples_per_node,
        max_values,
        infinite_threshold,
        infinite_path_samples,
        dimension_attempts,
        max_expand_rounds,
        repair_attempts,
        holdout,
        seed,
        oversample,
        near_dup_threshold,
        profile_max_tokens,
        give_up_after
    );
    c.full_tree = a.full_tree;
    c
}

pub async fn run(a: SynthArgs, given: &Given) -> anyhow::Result<ExitCode> {
    let mut _claimed = None;
    let run = match &a.resume {
        Some(dir) => {
            check_resume_flags("synth", given, &["concurrency", "json"])?;
            RunDir::open(dir)?
        }
        None => {
            let config = config_from(&a);
            let (seeds, source) = match &a.seed_profiles {
                Some(p) => {
                    let vocab = builtin::vocabulary()?;
                    let set = therapygym_core::load_profiles(p, &vocab)?;
                    for w in &set.warnings {
                        ui::warn(w);
                    }
                    (set.profiles, p.display().to_string())
                }
                None => (
                    builtin::example_profiles()?.profiles,
                    "<builtin>/data/profiles/examples.jsonl".to_string(),
                ),
            };
            let prompts = match &a.prompts {
                Some(d) => SynthPrompts::with_overrides(d)?,
                None => SynthPrompts::default(),
            };
            let out = out_or_claim(&a.out, "synth", &mut _claimed)?;
            RunDir::create(&out, config, prompts, seeds, &source)?
        }
    };
    let config = run.config().clone();
    let spec: ModelSpec = config
        .model
        .parse()
        .with_context(|| format!("model spec of the run in {}", run.dir.display()))?;
    let concurrency = a
        .concurrency
        .unwrap_or(if spec.is_local() { 1 } else { 8 })
        .max(1);
    let model = open_model(&spec, therapygym_run::model_options(&spec, concurrency)).await?;
    let bar = Arc::new(Sized {
        inner: Bar::new(),
        target: config.target,
    });
    let result = therapygym_synth::run_synth(run, model, concurrency, bar.clone()).await;
    bar.inner.bar.finish_and_clear();
    let summary = result?;
    report(&summary, a.json);
    if summary.target_reached() {
        Ok(ExitCode::SUCCESS)
    } else {
        ui::warn(&format!(
            "the target of {} profiles was not reached ({} kept; stop reason `{}`); see rejected.jsonl",
            summary.target.unwrap_or(0),
            summary.profiles,
            summary.stop_reason
        ));
        Ok(ExitCode::from(1))
    }
}

fn pct(x: Option<f64>) -> String {
    x.map(|v| format!("{:.1}%", v * 100.0))
        .unwrap_or_else(|| "—".into())
}

fn num(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.3}")).unwrap_or_else(|| "—".into())
}

fn counts(m: &std::collections::BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn report(s: &SynthSummary, json: bool) {
    if json {
        ui::json(s);
        return;
    }
    let d = &s.diversity;
    ui::out(&format!("run: {}", s.run_dir));
    ui::out(&format!(
        "profiles: {} (train {}, holdout {}){} · stop: {}",
        s.profiles,
        s.train,
        s.holdout,
        s.target
            .map(|t| format!(" of target {t}"))
            .unwrap_or_default(),
        s.stop_reason
    ));
    ui::out(&format!(
        "candidates: {} · kept {} ({}) · rejected {} · duplicates {} · kept after a re-ask {}",
        s.candidates,
        s.profiles,
        pct(s.acceptance_rate),
        s.rejected,
        s.duplicates,
        s.repaired
    ));
    ui::out(&format!("rejections: {}", counts(&s.rejections)));
    ui::out(&format!(
        "duplicates removed: {}",
        counts(&s.duplicate_kinds)
    ));
    ui::out(&format!(
        "tree: {} nodes ({} expanded, {} leaves), depth {}, {} dimensions; leaves by reason: {}",
        s.tree.nodes,
        s.tree.expanded,
        s.tree.leaves,
        s.tree.depth_reached,
        s.tree.dimensions,
        s.tree
            .leaf_reasons
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let cov: Vec<String> = d
        .coverage
        .iter()
        .map(|(k, c)| format!("{k} {}/{}", c.used, c.total))
        .collect();
    ui::out(&format!("coverage: {}", cov.join(", ")));
    let dv: Vec<String> = d
        .distinct_values
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    ui::out(&format!("distinct values: {}", dv.join(", ")));
    let sim = &d.similarity;
    ui::out(&format!(
        "pairwise similarity ({} pairs{}): mean {} · p50 {} · p90 {} · p99 {} · max {}",
        sim.pairs,
        if sim.sampled { ", sampled" } else { "" },
        num(sim.mean),
        num(sim.p50),
        num(sim.p90),
        num(sim.p99),
        num(sim.max)
    ));
    let t = &s.this_attempt;
    ui::out(&format!(
        "this attempt ({}): {} model calls · nodes expanded {} (resumed {}) · leaf jobs {} (resumed {}) · {:.1} s",
        t.attempt,
        t.model_calls,
        t.nodes_expanded,
        t.nodes_resumed,
        t.leaf_jobs_run,
        t.leaf_jobs_resumed,
        t.wall_s
    ));
    ui::out(
        "files: profiles.jsonl holdout.jsonl tree.json diversity.json provenance.jsonl rejected.jsonl",
    );
}
