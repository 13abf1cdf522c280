//! A synthesis run: create or resume the run directory, grow the tree breadth-first, run the
//! leaf jobs, consume their results in a fixed order (validation already done; deduplication,
//! counting and the stopping rules here), then write the outputs.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use therapygym_core::{Location, Profile, Vocabulary, builtin, parse_profile_value};
use therapygym_models::Model;

use crate::config::SynthConfig;
use crate::dedup::{DedupIndex, Prepared};
use crate::diversity::{DiversityReport, Removed};
use crate::error::SynthError;
use crate::expand::{Ctx, expand_node, seed_sketch};
use crate::leaves::{Jobs, LeafPlan, profile_vocab, run_job};
use crate::progress::{SynthEvent, SynthProgress, Totals};
use crate::prompts::{Compiled, SynthPrompts};
use crate::rng::Rng;
use crate::state::{
    self, AttemptRecord, Batch, JobRecord, Manifest, SCHEMA_REVISION, SeedInfo, now_unix,
};
use crate::tree::{LeafCounts, LeafReason, NodeResult, Status, Tree};
use crate::validate::reply_shape;

/// Leaf jobs are written in batches at least this often...
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// ...or when this many are waiting.
const FLUSH_JOBS: usize = 512;

/// A run directory, created or opened for resume.
#[derive(Debug)]
pub struct RunDir {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub seeds: Vec<Profile>,
    /// This process's attempt number (1 = first run).
    pub attempt: u32,
}

impl RunDir {
    /// Creates a new run directory. Refuses a non-empty existing one.
    pub fn create(
        out: &Path,
        config: SynthConfig,
        prompts: SynthPrompts,
        seeds: Vec<Profile>,
        seeds_source: &str,
    ) -> Result<Self, SynthError> {
        config.validate()?;
        prompts.check()?;
        if out.exists() {
            let non_empty = std::fs::read_dir(out)
                .map_err(|e| SynthError::io("read", out, e))?
                .next()
                .is_some();
            if non_empty {
                return Err(SynthError::RunDir(format!(
                    "{} already exists and is not empty; continue it with `--resume {}` or choose another `--out`",
                    out.display(),
                    out.display()
                )));
            }
        }
        state::create_dir(out)?;
        state::create_dir(&out.join(state::NODES_DIR))?;
        state::create_dir(&out.join(state::LEAVES_DIR))?;
        let seeds_text = state::seeds_to_jsonl(&seeds);
        state::write_bytes(&out.join(state::SEEDS_FILE), seeds_text.as_bytes())?;
        let vocab = builtin::vocabulary()?;
        let manifest = Manifest {
            schema_revision: SCHEMA_REVISION,
            status: "started".into(),
            config_hash: therapygym_core::hash::content_hash(&config),
            config,
            prompt_hashes: prompts.hashes(),
            prompts,
            vocab_hash: therapygym_core::hash::content_hash(&vocab),
            seed_profiles: SeedInfo {
                source: seeds_source.into(),
                count: seeds.len(),
                sha256: therapygym_core::hash::text_hash(&seeds_text),
            },
            attempts: vec![AttemptRecord {
                attempt: 1,
                pid: std::process::id(),
                started_unix: now_unix(),
                finished_unix: None,
                model_calls: None,
            }],
            summary: None,
        };
        state::write_json(&out.join(state::STATE_FILE), &manifest)?;
        Ok(Self {
            dir: out.to_path_buf(),
            manifest,
            seeds,
            attempt: 1,
        })
    }

    /// Opens a run directory to continue it (a finished run is re-finalised without calls).
    pub fn open(dir: &Path) -> Result<Self, SynthError> {
        let path = dir.join(state::STATE_FILE);
        if !path.is_file() {
            return Err(SynthError::RunDir(format!(
                "{} is not a synthesis run directory (no {})",
                dir.display(),
                state::STATE_FILE
            )));
        }
        let mut manifest: Manifest = state::read_json(&path)?;
        if manifest.schema_revision != SCHEMA_REVISION {
            return Err(SynthError::state(
                &path,
                format!(
                    "schema_revision {} is not supported (expected {SCHEMA_REVISION})",
                    manifest.schema_revision
                ),
            ));
        }
        if therapygym_core::hash::content_hash(&manifest.config) != manifest.config_hash {
            return Err(SynthError::state(
                &path,
                "the stored config does not match its hash (the file was edited)",
            ));
        }
        manifest.config.validate()?;
        manifest.prompts.check()?;
        let seeds_path = dir.join(state::SEEDS_FILE);
        let seeds_text = std::fs::read_to_string(&seeds_path)
            .map_err(|e| SynthError::io("read", &seeds_path, e))?;
        if therapygym_core::hash::text_hash(&seeds_text) != manifest.seed_profiles.sha256 {
            return Err(SynthError::state(
                &seeds_path,
                "the seed profiles changed since the run started",
            ));
        }
        let seeds = if seeds_text.trim().is_empty() {
            Vec::new()
        } else {
            therapygym_core::profile::parse_profiles(
                &seeds_text,
                &seeds_path,
                &builtin::vocabulary()?,
            )?
            .profiles
        };
        let attempt = u32::try_from(manifest.attempts.len() + 1).unwrap_or(u32::MAX);
        manifest.attempts.push(AttemptRecord {
            attempt,
            pid: std::process::id(),
            started_unix: now_unix(),
            finished_unix: None,
            model_calls: None,
        });
        state::write_json(&path, &manifest)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            seeds,
            attempt,
        })
    }

    pub fn config(&self) -> &SynthConfig {
        &self.manifest.config
    }
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    TargetReached,
    TopupStalled,
    GaveUp,
}

impl Stop {
    fn as_str(self) -> &'static str {
        match self {
            Stop::TargetReached => "target_reached",
            Stop::TopupStalled => "topup_stalled",
            Stop::GaveUp => "gave_up",
        }
    }
}

struct Kept {
    profile: Profile,
    leaf: String,
    index: u64,
    wave: u32,
}

/// Consumes leaf job records in sequence order: deduplication, counting, stopping rules.
struct Consumer {
    target: Option<usize>,
    give_up_after: usize,
    vocab: Arc<Vocabulary>,
    index: DedupIndex,
    kept: Vec<Kept>,
    rejections: BTreeMap<String, u64>,
    duplicates: BTreeMap<String, u64>,
    rejected_log: Vec<Value>,
    totals: Totals,
    repaired: u64,
    misses_in_row: usize,
    /// (wave, top-up, kept when the wave began)
    wave: Option<(u32, bool, usize)>,
    per_leaf: HashMap<String, LeafCounts>,
}

impl Consumer {
    fn new(cfg: &SynthConfig, vocab: Arc<Vocabulary>, seeds: &[Profile]) -> Self {
        let mut index = DedupIndex::new(cfg.near_dup_threshold);
        for s in seeds {
            index.insert(Prepared::of(s), true);
        }
        Self {
            target: cfg.target,
            give_up_after: cfg.give_up_after,
            vocab,
            index,
            kept: Vec::new(),
            rejections: BTreeMap::new(),
            duplicates: BTreeMap::new(),
            rejected_log: Vec::new(),
            totals: Totals::default(),
            repaired: 0,
            misses_in_row: 0,
            wave: None,
            per_leaf: HashMap::new(),
        }
    }

    /// Checked before a record is consumed: a top-up wave that kept nothing ends the phase.
    fn before(&mut self, rec: &JobRecord) -> Option<Stop> {
        match self.wave {
            Some((w, topup, at_start)) if w != rec.wave => {
                if topup && self.kept.len() == at_start {
                    return Some(Stop::TopupStalled);
                }
                self.wave = Some((rec.wave, rec.topup, self.kept.len()));
            }
            None => self.wave = Some((rec.wave, rec.topup, self.kept.len())),
            _ => {}
        }
        None
    }

    fn reject(&mut self, leaf: &str, index: u64, reason: &str, detail: Value) {
        *self.rejections.entry(reason.to_string()).or_insert(0) += 1;
        self.totals.rejected += 1;
        self.per_leaf.entry(leaf.to_string()).or_default().rejected += 1;
        self.rejected_log
            .push(json!({"leaf": leaf, "index": index, "reason": reason, "detail": detail}));
    }

    /// `stored`: the record was read back from the run directory, so its profiles are
    /// validated again (fresh ones were validated when they were generated).
    fn consume(&mut self, rec: &JobRecord, stored: bool) -> Option<Stop> {
        for c in &rec.candidates {
            if self.target.is_some_and(|t| self.kept.len() >= t) {
                return Some(Stop::TargetReached);
            }
            self.totals.candidates += 1;
            self.per_leaf
                .entry(rec.leaf.clone())
                .or_default()
                .candidates += 1;
            let mut kept_now = false;
            match (&c.profile, &c.rejection) {
                (Some(p), _) => {
                    let checked = if stored {
                        let v = serde_json::to_value(p).unwrap_or(Value::Null);
                        let at = Location {
                            file: "<stored synthesised profile>".into(),
                            line: None,
                            id: None,
                        };
                        parse_profile_value(&v, at, &self.vocab).map(|(p, _)| p)
                    } else {
                        Ok(p.clone())
                    };
                    match checked {
                        Ok(p) => match self.index.admit(Prepared::of(&p)) {
                            Ok(_) => {
                                self.totals.kept += 1;
                                self.per_leaf.entry(rec.leaf.clone()).or_default().kept += 1;
                                if c.repairs > 0 {
                                    self.repaired += 1;
                                }
                                self.kept.push(Kept {
                                    profile: p,
                                    leaf: rec.leaf.clone(),
                                    index: c.index,
                                    wave: rec.wave,
                                });
                                kept_now = true;
                            }
                            Err(d) => {
                                *self
                                    .duplicates
                                    .entry(d.kind.as_str().to_string())
                                    .or_insert(0) += 1;
                                self.totals.duplicates += 1;
                                self.per_leaf
                                    .entry(rec.leaf.clone())
                                    .or_default()
                                    .duplicates += 1;
                            }
                        },
                        Err(e) => self.reject(&rec.leaf, c.index, "invalid", json!(e.to_string())),
                    }
                }
                (None, Some(r)) => {
                    let detail = json!({"detail": r.detail, "raw": c.raw, "repairs": c.repairs});
                    self.reject(&rec.leaf, c.index, &r.reason, detail);
                }
                (None, None) => self.reject(
                    &rec.leaf,
                    c.index,
                    "model_error",
                    json!("no outcome recorded"),
                ),
            }
            if kept_now {
                self.misses_in_row = 0;
            } else {
                self.misses_in_row += 1;
                if self.misses_in_row >= self.give_up_after {
                    return Some(Stop::GaveUp);
                }
            }
        }
        if self.target.is_some_and(|t| self.kept.len() >= t) {
            return Some(Stop::TargetReached);
        }
        None
    }
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
    let prompts = Compiled::new(&run.manifest.prompts)?;
    let task = prompts.render("task", json!({}))?;
    let system = prompts.render("system", json!({}))?;
    let ctx = Arc::new(Ctx {
        model,
        cfg: cfg.clone(),
        task: task.clone(),
        system,
        profile_schema: crate::schema::profile(&vocab),
        profile_vocab: profile_vocab(&vocab),
        vocab: Arc::clone(&vocab),
        seed_sketches: run.seeds.iter().map(seed_sketch).collect(),
        seed_examples: run
            .seeds
            .iter()
            .map(|p| reply_shape(p).to_string())
            .collect(),
        prompts,
        calls: Default::default(),
        attempt: run.attempt,
    });
    let dir = run.dir.clone();
    progress.event(&SynthEvent::Started {
        attempt: run.attempt,
        target: cfg.target,
    });
    let mut stats = AttemptStats {
        attempt: run.attempt,
        ..AttemptStats::default()
    };

    // ---- The tree, breadth-first.
    let mut tree = Tree::new();
    let mut stored: HashMap<String, NodeResult> = state::load_nodes(&dir)?
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
        if let Some(t) = cfg.target
            && !cfg.full_tree
        {
            let planned: u64 = tree
                .nodes
                .iter()
                .filter(|n| n.status == Status::Leaf || n.status == Status::Pending)
                .map(|n| cfg.planned_per_leaf(n.list_valued()))
                .fold(0u64, u64::saturating_add);
            if planned as f64 >= (t as f64 * cfg.oversample).ceil() {
                for &i in &pending {
                    tree.make_leaf(i, LeafReason::TargetBudget);
                }
                break;
            }
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
            let n = &tree.nodes[i];
            let r = &stored[&n.id];
            progress.event(&SynthEvent::Node {
                id: n.id.clone(),
                depth,
                children: match &r.outcome {
                    crate::tree::Outcome::Split(s) if s.list_child => 1,
                    crate::tree::Outcome::Split(s) => s.values.len(),
                    crate::tree::Outcome::Leaf { .. } => 0,
                },
                leaf: match &r.outcome {
                    crate::tree::Outcome::Leaf { reason } => Some(reason.as_str()),
                    _ => None,
                },
                resumed: true,
            });
        }
        stats.nodes_resumed += done.len();
        let work: Vec<(String, Vec<crate::tree::Constraint>)> = todo
            .iter()
            .map(|&i| (tree.nodes[i].id.clone(), tree.nodes[i].constraints.clone()))
            .collect();
        let mut results = futures::stream::iter(work)
            .map(|(id, constraints)| {
                let ctx = Arc::clone(&ctx);
                AbortOnDrop(tokio::spawn(expand_node(ctx, id, constraints)))
            })
            .buffer_unordered(concurrency);
        // Node files are written off the async workers while the level goes on; every write
        // is awaited before this function returns (also on an error), so nothing writes after.
        let mut writes: tokio::task::JoinSet<Result<(), SynthError>> = tokio::task::JoinSet::new();
        while let Some(r) = results.next().await {
            let r = match r.map_err(join_error).and_then(|x| x) {
                Ok(r) => r,
                Err(e) => {
                    drop(results);
                    while writes.join_next().await.is_some() {}
                    return Err(e);
                }
            };
            let path = state::node_path(&dir, &r.node);
            let copy = r.clone();
            writes.spawn_blocking(move || state::write_json(&path, &copy));
            let children = match &r.outcome {
                crate::tree::Outcome::Split(s) if s.list_child => 1,
                crate::tree::Outcome::Split(s) => s.values.len(),
                crate::tree::Outcome::Leaf { .. } => 0,
            };
            progress.event(&SynthEvent::Node {
                id: r.node.clone(),
                depth,
                children,
                leaf: match &r.outcome {
                    crate::tree::Outcome::Leaf { reason } => Some(reason.as_str()),
                    _ => None,
                },
                resumed: false,
            });
            stats.nodes_expanded += 1;
            stored.insert(r.node.clone(), r);
        }
        drop(results);
        while let Some(w) = writes.join_next().await {
            w.map_err(join_error)??;
        }
        // Apply in breadth-first order, so child ids and order never depend on timing.
        for &i in &pending {
            let id = tree.nodes[i].id.clone();
            let r = stored.remove(&id).ok_or_else(|| {
                SynthError::state(state::node_path(&dir, &id), "the node result is missing")
            })?;
            tree.apply(&r)
                .map_err(|m| SynthError::state(state::node_path(&dir, &id), m))?;
        }
        state::write_json_compact(&dir.join("tree.json"), &tree.view(&task))?;
    }

    stats.tree_s = secs(started.elapsed());
    let leaves_started = Instant::now();

    // ---- The leaves.
    let leaf_nodes = tree.leaves();
    let mut plans: Vec<Arc<LeafPlan>> = leaf_nodes
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
    let (replayed, mut batch_no) = state::load_jobs(&dir)?;
    let mut stop: Option<Stop> = None;
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
            stop = Some(s);
            break;
        }
        let s = consumer.consume(rec, true);
        progress.event(&SynthEvent::Leaf {
            totals: consumer.totals,
            resumed: true,
        });
        if s.is_some() {
            stop = s;
            break;
        }
    }
    // A finished run is only re-finalised: its stored jobs are the whole leaf phase.
    let finished = run.manifest.status == "finished";
    if stop.is_none() && !finished {
        let mut pending: Vec<JobRecord> = Vec::new();
        let mut last_flush = Instant::now();
        let plans_for_stream = plans.clone();
        let ctx_for_stream = Arc::clone(&ctx);
        let mut stream = futures::stream::iter(jobs)
            .map(move |job| {
                let ctx = Arc::clone(&ctx_for_stream);
                let plan = Arc::clone(&plans_for_stream[job.plan]);
                AbortOnDrop(tokio::spawn(run_job(ctx, plan, job)))
            })
            .buffered(concurrency);
        while let Some(r) = stream.next().await {
            let rec = match r.map_err(join_error).and_then(|x| x) {
                Ok(rec) => rec,
                Err(e) => {
                    // Keep what was consumed: a resume must not redo it.
                    drop(stream);
                    flush(&dir, &mut batch_no, run.attempt, &mut pending)?;
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
                flush(&dir, &mut batch_no, run.attempt, &mut pending)?;
                last_flush = Instant::now();
            }
            if s.is_some() {
                stop = s;
                break;
            }
        }
        drop(stream);
        flush(&dir, &mut batch_no, run.attempt, &mut pending)?;
    }
    let previous_stop = run
        .manifest
        .summary
        .as_ref()
        .and_then(|s| s.get("stop_reason"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let stop_reason = match stop {
        Some(s) => s.as_str().to_string(),
        None if finished && previous_stop.is_some() => previous_stop.unwrap_or_default(),
        None if cfg.target.is_some() && cfg.max_topup_rounds > 0 => "topup_rounds_exhausted".into(),
        None => "plan_exhausted".into(),
    };
    if stop == Some(Stop::GaveUp) {
        progress.event(&SynthEvent::Warning(format!(
            "stopped after {} candidates in a row without a kept profile (`give_up_after`); rejections: {:?}",
            cfg.give_up_after, consumer.rejections
        )));
    }

    // ---- Outputs.
    stats.leaves_s = secs(leaves_started.elapsed());
    stats.model_calls = ctx.calls.load(Ordering::Relaxed);
    let summary = finalize(
        started,
        &mut run,
        &cfg,
        &vocab,
        &task,
        tree,
        consumer,
        stop_reason,
        planned_total,
        stats,
        &*progress,
    )?;
    Ok(summary)
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site; the pieces of a finished run"
)]
fn finalize(
    started: Instant,
    run: &mut RunDir,
    cfg: &SynthConfig,
    vocab: &Vocabulary,
    task: &str,
    mut tree: Tree,
    consumer: Consumer,
    stop_reason: String,
    planned_total: u64,
    mut stats: AttemptStats,
    progress: &dyn SynthProgress,
) -> Result<SynthSummary, SynthError> {
    let outputs_started = Instant::now();
    let dir = run.dir.clone();
    let Consumer {
        kept,
        rejections,
        duplicates,
        rejected_log,
        totals,
        repaired,
        per_leaf,
        index,
        ..
    } = consumer;
    // Ids in consumption order: `syn-000001`, ... (wider past a million).
    let width = kept.len().to_string().len().max(6);
    let mut kept = kept;
    for (i, k) in kept.iter_mut().enumerate() {
        k.profile.id = format!("syn-{:0width$}", i + 1);
    }
    // Holdout: round-robin over leaves in a seeded order, one profile per leaf per round.
    let k = cfg.holdout_size(kept.len());
    if k < cfg.holdout {
        progress.event(&SynthEvent::Warning(format!(
            "holdout is {k} profiles, not {} (`holdout` is capped at a fifth of the {} profiles)",
            cfg.holdout,
            kept.len()
        )));
    }
    let mut by_leaf: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, kp) in kept.iter().enumerate() {
        by_leaf.entry(kp.leaf.as_str()).or_default().push(i);
    }
    let mut leaf_order: Vec<&str> = by_leaf.keys().copied().collect();
    Rng::for_key(cfg.seed, &["holdout"]).shuffle(&mut leaf_order);
    let mut holdout_idx = Vec::new();
    let mut round = 0;
    while holdout_idx.len() < k {
        let mut any = false;
        for l in &leaf_order {
            if holdout_idx.len() >= k {
                break;
            }
            if let Some(&i) = by_leaf[l].get(round) {
                holdout_idx.push(i);
                any = true;
            }
        }
        if !any {
            break;
        }
        round += 1;
    }
    holdout_idx.sort_unstable();
    let is_holdout: std::collections::HashSet<usize> = holdout_idx.iter().copied().collect();
    let train: Vec<Profile> = kept
        .iter()
        .enumerate()
        .filter(|(i, _)| !is_holdout.contains(i))
        .map(|(_, k)| k.profile.clone())
        .collect();
    let holdout: Vec<Profile> = holdout_idx
        .iter()
        .map(|&i| kept[i].profile.clone())
        .collect();
    state::write_bytes(
        &dir.join("profiles.jsonl"),
        therapygym_core::profile::to_jsonl(&train).as_bytes(),
    )?;
    state::write_bytes(
        &dir.join("holdout.jsonl"),
        therapygym_core::profile::to_jsonl(&holdout).as_bytes(),
    )?;

    let mut prov = String::new();
    for (i, kp) in kept.iter().enumerate() {
        let attrs = tree
            .get(&kp.leaf)
            .map(|n| n.constraints.clone())
            .unwrap_or_default();
        let line = json!({"id": kp.profile.id, "split": if is_holdout.contains(&i) { "holdout" } else { "train" },
            "leaf": kp.leaf, "sample": kp.index, "wave": kp.wave, "attributes": attrs});
        prov.push_str(&line.to_string());
        prov.push('\n');
    }
    state::write_bytes(&dir.join("provenance.jsonl"), prov.as_bytes())?;
    let mut rej = String::new();
    for r in &rejected_log {
        rej.push_str(&r.to_string());
        rej.push('\n');
    }
    state::write_bytes(&dir.join("rejected.jsonl"), rej.as_bytes())?;

    // Tree with counts.
    for n in tree.nodes.iter_mut().filter(|n| n.status == Status::Leaf) {
        let mut c = per_leaf.get(&n.id).cloned().unwrap_or_default();
        c.planned = cfg.planned_per_leaf(n.list_valued());
        n.counts = Some(c);
    }
    tree.roll_up_kept();
    state::write_json_compact(&dir.join("tree.json"), &tree.view(task))?;

    let all: Vec<Profile> = kept.iter().map(|k| k.profile.clone()).collect();
    let removed = Removed {
        method: format!(
            "exact: equal normalised narrative text; near: Jaccard of word-{}-shingle sets >= {} (MinHash LSH candidates, exact check); seed_copy: duplicate of a seed profile",
            crate::text::SHINGLE_WORDS,
            index.threshold()
        ),
        near_threshold: index.threshold(),
        duplicates: duplicates.clone(),
        rejections: rejections.clone(),
    };
    let diversity = crate::diversity::report(&all, vocab, cfg.seed, removed);
    state::write_json(&dir.join("diversity.json"), &diversity)?;

    let mut leaf_reasons = BTreeMap::new();
    for n in &tree.nodes {
        if let Some(r) = n.leaf_reason {
            *leaf_reasons.entry(r.as_str().to_string()).or_insert(0) += 1;
        }
    }
    let tree_stats = TreeStats {
        nodes: tree.nodes.len(),
        expanded: tree
            .nodes
            .iter()
            .filter(|n| n.status == Status::Expanded)
            .count(),
        leaves: tree.leaves().len(),
        depth_reached: tree.nodes.iter().map(|n| n.depth).max().unwrap_or(0),
        dimensions: tree.dimensions().len(),
        leaf_reasons,
        planned_profiles: planned_total,
    };
    stats.outputs_s = secs(outputs_started.elapsed());
    stats.wall_s = secs(started.elapsed());
    let summary = SynthSummary {
        run_dir: dir.display().to_string(),
        stop_reason,
        target: cfg.target,
        profiles: kept.len(),
        train: train.len(),
        holdout: holdout.len(),
        candidates: totals.candidates,
        acceptance_rate: (totals.candidates > 0).then(|| {
            ((totals.kept as f64 / totals.candidates as f64) * 10_000.0).round() / 10_000.0
        }),
        rejected: totals.rejected,
        rejections,
        duplicates: totals.duplicates,
        duplicate_kinds: duplicates,
        repaired,
        tree: tree_stats,
        this_attempt: stats,
        diversity,
    };
    let m = &mut run.manifest;
    m.status = "finished".into();
    if let Some(a) = m.attempts.last_mut() {
        a.finished_unix = Some(now_unix());
        a.model_calls = Some(summary.this_attempt.model_calls);
    }
    m.summary = serde_json::to_value(&summary).ok();
    state::write_json(&dir.join(state::STATE_FILE), m)?;
    progress.event(&SynthEvent::Finished { totals });
    Ok(summary)
}
