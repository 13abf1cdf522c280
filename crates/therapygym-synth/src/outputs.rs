//! The outputs of a synthesis run, written when its leaf phase ends: final ids, the holdout
//! split, `profiles.jsonl`, `holdout.jsonl`, `provenance.jsonl`, `rejected.jsonl`, the counted
//! `tree.json`, `diversity.json`, and the summary in `synth.json`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

use serde_json::{Value, json};
use therapygym_core::{Profile, Vocabulary};

use crate::config::SynthConfig;
use crate::consume::{Consumer, Kept};
use crate::diversity::Removed;
use crate::error::SynthError;
use crate::progress::{SynthEvent, SynthProgress};
use crate::rng::Rng;
use crate::run::{AttemptStats, RunDir, SynthSummary, TreeStats, secs};
use crate::state::{self, now_unix};
use crate::tree::{LeafCounts, Status, Tree};

#[expect(
    clippy::too_many_arguments,
    reason = "one call site; the pieces of a finished run"
)]
pub(crate) fn finalize(
    started: Instant,
    run: &mut RunDir,
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
    let cfg = run.manifest.config.clone();
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
    let kept = with_final_ids(kept);
    let is_holdout = pick_holdout(&kept, &cfg, progress);
    let (train, holdout) = write_profiles(&dir, &kept, &is_holdout)?;
    write_provenance(&dir, &kept, &is_holdout, &tree)?;
    write_lines(&dir.join("rejected.jsonl"), &rejected_log)?;
    count_leaves(&mut tree, &per_leaf, &cfg);
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
        tree: tree_stats(&tree, planned_total),
        this_attempt: stats,
        diversity,
    };
    record_finish(run, &summary)?;
    progress.event(&SynthEvent::Finished { totals });
    Ok(summary)
}

/// Ids in consumption order: `syn-000001`, ... (wider past a million).
fn with_final_ids(mut kept: Vec<Kept>) -> Vec<Kept> {
    let width = kept.len().to_string().len().max(6);
    for (i, k) in kept.iter_mut().enumerate() {
        k.profile.id = format!("syn-{:0width$}", i + 1);
    }
    kept
}

/// The holdout: round-robin over leaves in a seeded order, one profile per leaf per round,
/// up to the configured size (at most a fifth of the set).
fn pick_holdout(kept: &[Kept], cfg: &SynthConfig, progress: &dyn SynthProgress) -> HashSet<usize> {
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
    let mut picked = HashSet::new();
    let mut round = 0;
    while picked.len() < k {
        let mut any = false;
        for l in &leaf_order {
            if picked.len() >= k {
                break;
            }
            if let Some(&i) = by_leaf[l].get(round) {
                picked.insert(i);
                any = true;
            }
        }
        if !any {
            break;
        }
        round += 1;
    }
    picked
}

/// `profiles.jsonl` and `holdout.jsonl`, each in consumption order.
fn write_profiles(
    dir: &Path,
    kept: &[Kept],
    is_holdout: &HashSet<usize>,
) -> Result<(Vec<Profile>, Vec<Profile>), SynthError> {
    let (mut train, mut holdout) = (Vec::new(), Vec::new());
    for (i, k) in kept.iter().enumerate() {
        if is_holdout.contains(&i) {
            holdout.push(k.profile.clone());
        } else {
            train.push(k.profile.clone());
        }
    }
    state::write_bytes(
        &dir.join("profiles.jsonl"),
        therapygym_core::profile::to_jsonl(&train).as_bytes(),
    )?;
    state::write_bytes(
        &dir.join("holdout.jsonl"),
        therapygym_core::profile::to_jsonl(&holdout).as_bytes(),
    )?;
    Ok((train, holdout))
}

/// `provenance.jsonl`: per profile its split, leaf, sample, wave and path attributes.
fn write_provenance(
    dir: &Path,
    kept: &[Kept],
    is_holdout: &HashSet<usize>,
    tree: &Tree,
) -> Result<(), SynthError> {
    let lines: Vec<Value> = kept
        .iter()
        .enumerate()
        .map(|(i, kp)| {
            let attrs = tree
                .get(&kp.leaf)
                .map(|n| n.constraints.clone())
                .unwrap_or_default();
            json!({"id": kp.profile.id, "split": if is_holdout.contains(&i) { "holdout" } else { "train" },
                "leaf": kp.leaf, "sample": kp.index, "wave": kp.wave, "attributes": attrs})
        })
        .collect();
    write_lines(&dir.join("provenance.jsonl"), &lines)
}

fn write_lines(path: &Path, lines: &[Value]) -> Result<(), SynthError> {
    let mut text = String::new();
    for l in lines {
        text.push_str(&l.to_string());
        text.push('\n');
    }
    state::write_bytes(path, text.as_bytes())
}

/// Every leaf gets its counts (planned, candidates, kept, rejected, duplicates); kept
/// profiles roll up to the root.
fn count_leaves(tree: &mut Tree, per_leaf: &HashMap<String, LeafCounts>, cfg: &SynthConfig) {
    for n in tree.nodes.iter_mut().filter(|n| n.status == Status::Leaf) {
        let mut c = per_leaf.get(&n.id).cloned().unwrap_or_default();
        c.planned = cfg.planned_per_leaf(n.list_valued());
        n.counts = Some(c);
    }
    tree.roll_up_kept();
}

fn tree_stats(tree: &Tree, planned_total: u64) -> TreeStats {
    let mut leaf_reasons = BTreeMap::new();
    for n in &tree.nodes {
        if let Some(r) = n.leaf_reason {
            *leaf_reasons.entry(r.as_str().to_string()).or_insert(0) += 1;
        }
    }
    TreeStats {
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
    }
}

/// `synth.json`: status `finished`, this attempt's end and model calls, and the summary.
fn record_finish(run: &mut RunDir, summary: &SynthSummary) -> Result<(), SynthError> {
    let m = &mut run.manifest;
    m.status = "finished".into();
    if let Some(a) = m.attempts.last_mut() {
        a.finished_unix = Some(now_unix());
        a.model_calls = Some(summary.this_attempt.model_calls);
    }
    m.summary = serde_json::to_value(summary).ok();
    state::write_json(&run.dir.join(state::STATE_FILE), m)
}
