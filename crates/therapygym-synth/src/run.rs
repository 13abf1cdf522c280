//! A synthesis run: create or resume the run directory ([`RunDir`]), grow the tree
//! breadth-first, run the leaf jobs, consume their results in a fixed order (the profile check
//! already done; deduplication, counting and the stopping rules in `consume.rs`), then write the
//! outputs (`outputs.rs`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use therapygym_core::{Vocabulary, builtin};
use therapygym_models::Model;

use crate::config::SynthConfig;
use crate::consume::{Consumer, Stop};
use crate::diversity::DiversityReport;
use crate::error::SynthError;
use crate::expand::{Ctx, expand_node, seed_sketch};
use crate::leaves::{Jobs, LeafPlan, profile_vocab, run_job};
use crate::outputs::finalize;
use crate::profile_check::reply_shape;
use crate::progress::{SynthEvent, SynthProgress};
use crate::prompts::Compiled;
use crate::rng::Rng;
use crate::state::{self, Batch, JobRecord, SCHEMA_REVISION};
use crate::tree::{Constraint, LeafReason, NodeResult, Outcome, Status, Tree};

pub use crate::run_dir::RunDir;

/// Leaf jobs are written in batches at least this often...
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// ...or when this many are waiting.
const FLUSH_JOBS: usize = 512;

/// What this process did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AttemptStats {
    pub attempt: u32,
    pub model_calls: u64,
    pub nodes_expanded: usize,
    pub nodes_resumed: usize,
    pub leaf_jobs_run: u64,
    pub leaf_jobs_resumed: u64,
    /// Wall time of the tree phase, the leaf phase, and writing the outputs.
    pub tree_s: f64,
    pub leaves_s: f64,
    pub outputs_s: f64,
    /// Everything.
    pub wall_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeStats {
    pub nodes: usize,
    pub expanded: usize,
    pub leaves: usize,
    pub depth_reached: u32,
    pub dimensions: usize,
    pub leaf_reasons: BTreeMap<String, usize>,
    pub planned_profiles: u64,
}

/// The outcome of a run (also stored in `synth.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthSummary {
    pub run_dir: String,
    /// `target_reached`, `plan_exhausted`, `topup_stalled`, `topup_rounds_exhausted` or
    /// `gave_up` (too many candidates in a row without a kept profile).
    pub stop_reason: String,
    pub target: Option<usize>,
    pub profiles: usize,
    pub train: usize,
    pub holdout: usize,
    /// Candidates consumed: kept + rejected + duplicates.
    pub candidates: u64,
    /// kept / candidates.
    pub acceptance_rate: Option<f64>,
    pub rejected: u64,
    pub rejections: BTreeMap<String, u64>,
    pub duplicates: u64,
    pub duplicate_kinds: BTreeMap<String, u64>,
    /// Kept profiles that needed at least one re-ask.
    pub repaired: u64,
    pub tree: TreeStats,
    pub this_attempt: AttemptStats,
    pub diversity: DiversityReport,
}

impl SynthSummary {
    /// False when a target was set and not reached (the CLI exits 1).
    pub fn target_reached(&self) -> bool {
        self.target.is_none_or(|t| self.profiles >= t)
    }
}

/// A spawned task that is aborted when dropped (in-flight work past the target stops).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn join_error(e: tokio::task::JoinError) -> SynthError {
    SynthError::Config(format!("a synthesis task failed: {e}"))
}

fn flush(
    dir: &Path,
    batch_no: &mut u64,
    attempt: u32,
    jobs: &mut Vec<JobRecord>,
) -> Result<(), SynthError> {
    if jobs.is_empty() {
        return Ok(());
    }
    *batch_no += 1;
    let batch = Batch {
        schema_revision: SCHEMA_REVISION,
        attempt,
        jobs: std::mem::take(jobs),
    };
    state::write_json_compact(&state::batch_path(dir, *batch_no), &batch)
}

/// Runs (or continues) a synthesis run to the end and writes its outputs.
pub async fn run_synth(
    mut run: RunDir,
    model: Arc<Model>,
    concurrency: usize,
    progress: Arc<dyn SynthProgress>,
) -> Result<SynthSummary, SynthError> {
    let started = Instant::now();
    let concurrency = concurrency.max(1);
    let cfg = run.manifest.config.clone();
    let vocab = Arc::new(builtin::vocabulary()?);
    let ctx = Arc::new(call_ctx(&run, model, &vocab)?);
    progress.event(&SynthEvent::Started {
        attempt: run.attempt,
        target: cfg.target,
    });
    let mut stats = AttemptStats {
        attempt: run.attempt,
        ..AttemptStats::default()
    };

    let tree = grow_tree(&ctx, &run.dir, concurrency, &*progress, &mut stats).await?;
    stats.tree_s = secs(started.elapsed());
    let leaves_started = Instant::now();

    let plans = plan_leaves(&tree, &cfg);
    let planned_total = plans
        .iter()
        .map(|p| p.planned)
        .fold(0u64, u64::saturating_add);
    progress.event(&SynthEvent::LeavesPlanned {
        leaves: plans.len(),
        internal_nodes: tree.nodes.len() - plans.len(),
        planned: planned_total,
    });
    let chunk = match cfg.target {
        Some(t) => (t.div_ceil(plans.len().max(1)) as u64).clamp(1, cfg.samples_per_node as u64),
        None => cfg.samples_per_node as u64,
    };
    let mut jobs = Jobs::new(
        plans.iter().map(|p| p.planned).collect(),
        chunk,
        cfg.target.is_some(),
        cfg.max_topup_rounds,
    );
    let mut consumer = Consumer::new(&cfg, Arc::clone(&vocab), &run.seeds);
    let (mut stop, mut batch_no) = replay_jobs(
        &run.dir,
        &plans,
        &mut jobs,
        &mut consumer,
        &*progress,
        &mut stats,
    )?;
    // A finished run is only re-finalised: its stored jobs are the whole leaf phase.
    let finished = run.manifest.status == "finished";
    if stop.is_none() && !finished {
        let leaf_run = LeafRun {
            ctx: &ctx,
            plans: &plans,
            dir: &run.dir,
            attempt: run.attempt,
            concurrency,
        };
        stop = leaf_run
            .run(jobs, &mut consumer, &mut batch_no, &*progress, &mut stats)
            .await?;
    }
    let stop_reason = stop_reason(stop, finished, &run, &cfg);
    if stop == Some(Stop::GaveUp) {
        progress.event(&SynthEvent::Warning(format!(
            "stopped after {} candidates in a row without a kept profile (`give_up_after`); rejections: {:?}",
            cfg.give_up_after, consumer.rejections
        )));
    }

    stats.leaves_s = secs(leaves_started.elapsed());
    stats.model_calls = ctx.calls.load(Ordering::Relaxed);
    finalize(
        started,
        &mut run,
        &vocab,
        &ctx.task,
        tree,
        consumer,
        stop_reason,
        planned_total,
        stats,
        &*progress,
    )
}

/// What every model call of the run shares: the model, settings, rendered root prompts, the
/// profile schema and the seed profiles as grounding.
fn call_ctx(run: &RunDir, model: Arc<Model>, vocab: &Arc<Vocabulary>) -> Result<Ctx, SynthError> {
    let prompts = Compiled::new(&run.manifest.prompts)?;
    let task = prompts.render("task", json!({}))?;
    let system = prompts.render("system", json!({}))?;
    Ok(Ctx {
        model,
        cfg: run.manifest.config.clone(),
        task,
        system,
        profile_schema: crate::schema::profile(vocab),
        profile_vocab: profile_vocab(vocab),
        vocab: Arc::clone(vocab),
        seed_sketches: run.seeds.iter().map(seed_sketch).collect(),
        seed_examples: run
            .seeds
            .iter()
            .map(|p| reply_shape(p).to_string())
            .collect(),
        prompts,
        calls: Default::default(),
        attempt: run.attempt,
    })
}

/// The number of children a node result gives, and its leaf reason if it is a leaf.
fn node_event(r: &NodeResult, depth: u32, resumed: bool) -> SynthEvent {
    SynthEvent::Node {
        id: r.node.clone(),
        depth,
        children: match &r.outcome {
            Outcome::Split(s) if s.list_child => 1,
            Outcome::Split(s) => s.values.len(),
            Outcome::Leaf { .. } => 0,
        },
        leaf: match &r.outcome {
            Outcome::Leaf { reason } => Some(reason.as_str()),
            _ => None,
        },
        resumed,
    }
}

/// The tree, breadth-first to the configured depth: stored node results are replayed, the
/// rest expanded level by level; `tree.json` is written after every level.
async fn grow_tree(
    ctx: &Arc<Ctx>,
    dir: &Path,
    concurrency: usize,
    progress: &dyn SynthProgress,
    stats: &mut AttemptStats,
) -> Result<Tree, SynthError> {
    let cfg = &ctx.cfg;
    let mut tree = Tree::new();
    let mut stored: HashMap<String, NodeResult> = state::load_nodes(dir)?
        .into_iter()
        .map(|r| (r.node.clone(), r))
        .collect();
    for depth in 0..=cfg.depth {
        let pending = tree.pending_at(depth);
        if pending.is_empty() {
            break;
        }
        if depth == cfg.depth {
            for &i in &pending {
                tree.make_leaf(i, LeafReason::MaxDepth);
            }
            break;
        }
        if target_budget_met(&tree, cfg) {
            for &i in &pending {
                tree.make_leaf(i, LeafReason::TargetBudget);
            }
            break;
        }
        let (done, todo): (Vec<usize>, Vec<usize>) = pending
            .iter()
            .partition(|&&i| stored.contains_key(&tree.nodes[i].id));
        progress.event(&SynthEvent::Level {
            depth,
            to_expand: todo.len(),
            resumed: done.len(),
        });
        for &i in &done {
            progress.event(&node_event(&stored[&tree.nodes[i].id], depth, true));
        }
        stats.nodes_resumed += done.len();
        let work: Vec<(String, Vec<Constraint>)> = todo
            .iter()
            .map(|&i| (tree.nodes[i].id.clone(), tree.nodes[i].constraints.clone()))
            .collect();
        for r in expand_level(ctx, dir, work, depth, concurrency, progress).await? {
            stats.nodes_expanded += 1;
            stored.insert(r.node.clone(), r);
        }
        // Apply in breadth-first order, so child ids and order never depend on timing.
        for &i in &pending {
            let id = tree.nodes[i].id.clone();
            let r = stored.remove(&id).ok_or_else(|| {
                SynthError::state(state::node_path(dir, &id), "the node result is missing")
            })?;
            tree.apply(&r)
                .map_err(|m| SynthError::state(state::node_path(dir, &id), m))?;
        }
        state::write_json_compact(&dir.join("tree.json"), &tree.view(&ctx.task))?;
    }
    Ok(tree)
}

/// With `--target` (and not `--full-tree`): whether the frontier, as leaves, already plans
/// `target × oversample` profiles, so the tree need not grow further.
fn target_budget_met(tree: &Tree, cfg: &SynthConfig) -> bool {
    let Some(t) = cfg.target.filter(|_| !cfg.full_tree) else {
        return false;
    };
    let planned: u64 = tree
        .nodes
        .iter()
        .filter(|n| n.status == Status::Leaf || n.status == Status::Pending)
        .map(|n| cfg.planned_per_leaf(n.list_valued()))
        .fold(0u64, u64::saturating_add);
    planned as f64 >= (t as f64 * cfg.oversample).ceil()
}

/// Expands the nodes of one level, `concurrency` at a time, storing each result as soon as
/// it is finished.
async fn expand_level(
    ctx: &Arc<Ctx>,
    dir: &Path,
    work: Vec<(String, Vec<Constraint>)>,
    depth: u32,
    concurrency: usize,
    progress: &dyn SynthProgress,
) -> Result<Vec<NodeResult>, SynthError> {
    let mut results = futures::stream::iter(work)
        .map(|(id, constraints)| {
            let ctx = Arc::clone(ctx);
            AbortOnDrop(tokio::spawn(expand_node(ctx, id, constraints)))
        })
        .buffer_unordered(concurrency);
    // Node files are written off the async workers while the level goes on; every write is
    // awaited before this function returns (also on an error), so nothing writes after.
    let mut writes: tokio::task::JoinSet<Result<(), SynthError>> = tokio::task::JoinSet::new();
    let mut out = Vec::new();
    while let Some(r) = results.next().await {
        let r = match r.map_err(join_error).and_then(|x| x) {
            Ok(r) => r,
            Err(e) => {
                drop(results);
                while writes.join_next().await.is_some() {}
                return Err(e);
            }
        };
        let path = state::node_path(dir, &r.node);
        let copy = r.clone();
        writes.spawn_blocking(move || state::write_json(&path, &copy));
        progress.event(&node_event(&r, depth, false));
        out.push(r);
    }
    drop(results);
    while let Some(w) = writes.join_next().await {
        w.map_err(join_error)??;
    }
    Ok(out)
}

/// One plan per leaf (how many profiles, under which constraints, seeded by which sketches),
/// in a seeded shuffled order.
fn plan_leaves(tree: &Tree, cfg: &SynthConfig) -> Vec<Arc<LeafPlan>> {
    let mut plans: Vec<Arc<LeafPlan>> = tree
        .leaves()
        .iter()
        .map(|&i| {
            let n = &tree.nodes[i];
            let sketches = if n.leaf_reason == Some(LeafReason::NoDimension) {
                n.samples.clone()
            } else {
                n.inherited.clone()
            };
            Arc::new(LeafPlan {
                id: n.id.clone(),
                planned: cfg.planned_per_leaf(n.list_valued()),
                constraints: n.constraints.clone(),
                sketches,
            })
        })
        .collect();
    Rng::for_key(cfg.seed, &["leaf-order"]).shuffle(&mut plans);
    plans
}

/// Consumes the stored leaf jobs of earlier attempts (checked against the plan, which must
/// give the same jobs in the same order). Returns a stop, if one was reached, and the number
/// of stored batches.
fn replay_jobs(
    dir: &Path,
    plans: &[Arc<LeafPlan>],
    jobs: &mut Jobs,
    consumer: &mut Consumer,
    progress: &dyn SynthProgress,
    stats: &mut AttemptStats,
) -> Result<(Option<Stop>, u64), SynthError> {
    let (replayed, batch_no) = state::load_jobs(dir)?;
    for rec in &replayed {
        let Some(job) = jobs.next() else {
            return Err(SynthError::state(
                dir.join(state::LEAVES_DIR),
                format!(
                    "stored leaf job {} is beyond the plan (the tree or settings changed)",
                    rec.seq
                ),
            ));
        };
        let plan = &plans[job.plan];
        if job.seq != rec.seq
            || plan.id != rec.leaf
            || job.start != rec.start
            || job.count != rec.count
        {
            return Err(SynthError::state(
                dir.join(state::LEAVES_DIR),
                format!(
                    "stored leaf job {} (leaf `{}` from sample {}) does not match the plan (leaf `{}` from sample {})",
                    rec.seq, rec.leaf, rec.start, plan.id, job.start
                ),
            ));
        }
        stats.leaf_jobs_resumed += 1;
        if let Some(s) = consumer.before(rec) {
            return Ok((Some(s), batch_no));
        }
        let s = consumer.consume(rec, true);
        progress.event(&SynthEvent::Leaf {
            totals: consumer.totals,
            resumed: true,
        });
        if s.is_some() {
            return Ok((s, batch_no));
        }
    }
    Ok((None, batch_no))
}

/// The leaf phase of this process: the remaining jobs run `concurrency` at a time and are
/// consumed in sequence order; finished jobs are stored in batches.
struct LeafRun<'a> {
    ctx: &'a Arc<Ctx>,
    plans: &'a [Arc<LeafPlan>],
    dir: &'a Path,
    attempt: u32,
    concurrency: usize,
}

impl LeafRun<'_> {
    async fn run(
        &self,
        jobs: Jobs,
        consumer: &mut Consumer,
        batch_no: &mut u64,
        progress: &dyn SynthProgress,
        stats: &mut AttemptStats,
    ) -> Result<Option<Stop>, SynthError> {
        let mut pending: Vec<JobRecord> = Vec::new();
        let mut last_flush = Instant::now();
        let plans = self.plans.to_vec();
        let ctx = Arc::clone(self.ctx);
        let mut stream = futures::stream::iter(jobs)
            .map(move |job| {
                let ctx = Arc::clone(&ctx);
                let plan = Arc::clone(&plans[job.plan]);
                AbortOnDrop(tokio::spawn(run_job(ctx, plan, job)))
            })
            .buffered(self.concurrency);
        let mut stop = None;
        while let Some(r) = stream.next().await {
            let rec = match r.map_err(join_error).and_then(|x| x) {
                Ok(rec) => rec,
                Err(e) => {
                    // Keep what was consumed: a resume must not redo it.
                    drop(stream);
                    flush(self.dir, batch_no, self.attempt, &mut pending)?;
                    return Err(e);
                }
            };
            if let Some(s) = consumer.before(&rec) {
                stop = Some(s);
                break;
            }
            let s = consumer.consume(&rec, false);
            stats.leaf_jobs_run += 1;
            pending.push(rec);
            progress.event(&SynthEvent::Leaf {
                totals: consumer.totals,
                resumed: false,
            });
            if s.is_some() || pending.len() >= FLUSH_JOBS || last_flush.elapsed() >= FLUSH_EVERY {
                flush(self.dir, batch_no, self.attempt, &mut pending)?;
                last_flush = Instant::now();
            }
            if s.is_some() {
                stop = s;
                break;
            }
        }
        drop(stream);
        flush(self.dir, batch_no, self.attempt, &mut pending)?;
        Ok(stop)
    }
}

/// Why the leaf phase ended; a re-finalised finished run keeps the reason it had.
fn stop_reason(stop: Option<Stop>, finished: bool, run: &RunDir, cfg: &SynthConfig) -> String {
    let previous_stop = run
        .manifest
        .summary
        .as_ref()
        .and_then(|s| s.get("stop_reason"))
        .and_then(Value::as_str)
        .map(str::to_string);
    match stop {
        Some(s) => s.as_str().to_string(),
        None if finished && previous_stop.is_some() => previous_stop.unwrap_or_default(),
        None if cfg.target.is_some() && cfg.max_topup_rounds > 0 => "topup_rounds_exhausted".into(),
        None => "plan_exhausted".into(),
    }
}

pub(crate) fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}
