//! One run's numbers: every row's mean with a 95% percentile bootstrap interval, the unscored
//! and failed sessions with their reasons, the reward distribution and tokens per role.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use therapygym_stats::{BootstrapConfig, Stat, bootstrap_ci};
use therapygym_store::{SessionStatus, UsageByRole};

use crate::error::ReportError;
use crate::metrics::{Group, Kind, Metric, metrics, values};
use crate::run::{Definitions, RunData, SetData, scrub};

/// A session shown as an example of a row (its lowest or highest value).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Example {
    pub session_id: String,
    pub value: f64,
}

/// One row of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowSummary {
    #[serde(flatten)]
    pub metric: Metric,
    /// Sessions with a value.
    pub n: usize,
    pub mean: Option<f64>,
    /// 95% percentile bootstrap interval of the mean (over sessions).
    pub ci95: Option<[f64; 2]>,
    /// The mean on 0..=1 (scores: `(mean - min) / (max - min)`; rates as they are).
    pub normalized: Option<f64>,
    pub lowest: Option<Example>,
    pub highest: Option<Example>,
}

/// Session counts of a run (under the chosen judgment set).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub sessions: usize,
    pub completed: usize,
    pub failed: usize,
    pub expired: usize,
    pub scored: usize,
    pub unscored: usize,
    /// Completed but not judged by this set (an interrupted judging pass).
    pub unjudged: usize,
}

/// One bar of the reward histogram: `[low, high)` (the last bar includes `high`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bin {
    pub low: f64,
    pub high: f64,
    pub count: usize,
}

/// What a reader needs to know a run by, from its manifest (credentials scrubbed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ManifestView {
    pub kind: String,
    pub run_id: String,
    pub created_at: String,
    pub version: String,
    pub therapist: String,
    pub patient: String,
    pub judge: String,
    /// `(name, value)` rows: data-file versions and hashes, prompts, seeds.
    pub facts: Vec<(String, String)>,
}

/// The numbers of one run under one judgment set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    pub name: String,
    pub dir: String,
    pub judge_hash: String,
    /// The judgment set's judge (model spec).
    pub judge: String,
    pub judged_at: String,
    pub definitions: Definitions,
    pub manifest: ManifestView,
    pub counts: Counts,
    /// Unscored share of judged sessions.
    pub unscored_rate: Option<f64>,
    pub unscored_reasons: BTreeMap<String, usize>,
    /// Failed sessions grouped by error (first line, at most 200 characters).
    pub failure_reasons: BTreeMap<String, usize>,
    pub rows: Vec<RowSummary>,
    pub reward_histogram: Vec<Bin>,
    pub usage: UsageByRole,
    /// How the intervals were computed.
    pub ci_method: String,
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => scrub(s),
        Value::Null => "—".to_string(),
        other => scrub(&other.to_string()),
    }
}

fn manifest_view(run: &RunData) -> ManifestView {
    let m = &run.manifest;
    let mut facts = Vec::new();
    let mut fact = |name: &str, v: &Value| {
        if !v.is_null() {
            facts.push((name.to_string(), text(v)));
        }
    };
    fact("rubric", &m["rubric"]["id"]);
    fact("rubric sha256", &m["rubric"]["sha256"]);
    fact("safety taxonomy", &m["safety_taxonomy"]["id"]);
    fact("safety taxonomy sha256", &m["safety_taxonomy"]["sha256"]);
    if let Some(prompts) = m["prompts"].as_object() {
        for (role, p) in prompts {
            fact(
                &format!("prompt {role} ({})", text(&p["name"])),
                &p["sha256"],
            );
        }
    }
    fact("profile set sha256", &m["profiles"]["set_sha256"]);
    fact("reward config", &m["reward"]["id"]);
    fact("run seed", &m["seeds"]["run_seed"]);
    fact("sessions per profile", &m["config"]["sessions_per_profile"]);
    fact("therapist turns", &m["config"]["session"]["turns"]);
    fact("config hash", &m["config_hash"]);
    ManifestView {
        kind: text(&m["kind"]),
        run_id: text(&m["run_id"]),
        created_at: text(&m["created_at"]),
        version: text(&m["code"]["version"]),
        therapist: run.role_spec("therapist"),
        patient: run.role_spec("patient"),
        judge: run.role_spec("judge"),
        facts,
    }
}

fn counts(run: &RunData, set: &SetData) -> (Counts, BTreeMap<String, usize>) {
    let mut c = Counts {
        sessions: run.sessions.len(),
        ..Counts::default()
    };
    let mut reasons = BTreeMap::new();
    for s in &run.sessions {
        match s.status {
            SessionStatus::Completed => c.completed += 1,
            SessionStatus::Failed => c.failed += 1,
            SessionStatus::Expired => c.expired += 1,
        }
        if s.status != SessionStatus::Completed {
            continue;
        }
        match set.judgments.get(&s.id).map(|j| &j.verdict) {
            None => c.unjudged += 1,
            Some(therapygym_core::Verdict::Scored { .. }) => c.scored += 1,
            Some(therapygym_core::Verdict::Unscored { reason, .. }) => {
                c.unscored += 1;
                *reasons.entry(reason.as_str().to_string()).or_insert(0) += 1;
            }
        }
    }
    (c, reasons)
}

fn failure_reasons(run: &RunData) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for s in run
        .sessions
        .iter()
        .filter(|s| s.status == SessionStatus::Failed)
    {
        let first = s.error.as_deref().unwrap_or("no error recorded");
        let line: String = first
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect();
        *out.entry(scrub(&line)).or_insert(0) += 1;
    }
    out
}

/// The mean and its percentile bootstrap interval.
pub fn mean_ci(
    xs: &[f64],
    config: &BootstrapConfig,
) -> Result<(Option<f64>, Option<[f64; 2]>), ReportError> {
    if xs.is_empty() {
        return Ok((None, None));
    }
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    if xs.len() < 2 {
        return Ok((Some(mean), None));
    }
    let ci = bootstrap_ci(xs.len(), config, |idx| {
        Stat::Value(idx.iter().map(|&i| xs[i]).sum::<f64>() / idx.len() as f64)
    })?;
    Ok((Some(mean), ci.bounds().map(|(l, h)| [l, h])))
}

fn row(
    run: &RunData,
    set: &SetData,
    metric: Metric,
    config: &BootstrapConfig,
) -> Result<RowSummary, ReportError> {
    let vals = values(run, set, &metric);
    let xs: Vec<f64> = vals.iter().map(|(_, v)| *v).collect();
    let (mean, ci95) = mean_ci(&xs, config)?;
    let example = |pick: fn(f64, f64) -> bool| {
        vals.iter()
            .fold(None::<(&str, f64)>, |best, (s, v)| match best {
                Some((_, b)) if !pick(*v, b) => best,
                _ => Some((s.id.as_str(), *v)),
            })
            .map(|(id, value)| Example {
                session_id: id.to_string(),
                value,
            })
    };
    let (mut lowest, mut highest) = (example(|v, b| v < b), example(|v, b| v > b));
    if metric.kind == Kind::Rate {
        // For a flag, "highest" is a flagged session and "lowest" a clean one; a clean example
        // of one label says little, so only the any-violation row shows one.
        highest = highest.filter(|e| e.value > 0.0);
        lowest = lowest.filter(|e| e.value < 1.0 && metric.group == Group::Overall);
    }
    Ok(RowSummary {
        n: xs.len(),
        mean,
        ci95,
        normalized: mean.map(|m| metric.normalize(m)),
        lowest,
        highest,
        metric,
    })
}

fn histogram(xs: &[f64], bins: usize) -> Vec<Bin> {
    let (Some(lo), Some(hi)) = (
        xs.iter().copied().reduce(f64::min),
        xs.iter().copied().reduce(f64::max),
    ) else {
        return Vec::new();
    };
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, hi + 0.5)
    };
    let width = (hi - lo) / bins as f64;
    let mut out: Vec<Bin> = (0..bins)
        .map(|i| Bin {
            low: lo + i as f64 * width,
            high: lo + (i + 1) as f64 * width,
            count: 0,
        })
        .collect();
    for x in xs {
        let i = (((x - lo) / width).floor() as usize).min(bins - 1);
        out[i].count += 1;
    }
    out
}

/// The numbers of `run` under `set`.
pub fn summarize(
    run: &RunData,
    set: &SetData,
    config: &BootstrapConfig,
) -> Result<RunSummary, ReportError> {
    let (counts, unscored_reasons) = counts(run, set);
    let judged = counts.scored + counts.unscored;
    let mut rows = Vec::new();
    for m in metrics(&set.definitions) {
        rows.push(row(run, set, m, config)?);
    }
    let rewards: Vec<f64> = run
        .sessions
        .iter()
        .filter(|s| s.status == SessionStatus::Completed)
        .filter_map(|s| set.judgments.get(&s.id).and_then(|j| j.reward))
        .collect();
    Ok(RunSummary {
        name: run.name.clone(),
        dir: run.dir.display().to_string(),
        judge_hash: set.set.hash.clone(),
        judge: set.judge.clone(),
        judged_at: set.set.created_at.clone(),
        definitions: set.definitions.clone(),
        manifest: manifest_view(run),
        unscored_rate: (judged > 0).then(|| counts.unscored as f64 / judged as f64),
        counts,
        unscored_reasons,
        failure_reasons: failure_reasons(run),
        rows,
        reward_histogram: histogram(&rewards, 12),
        usage: set.usage,
        ci_method: format!(
            "{}% percentile bootstrap over sessions, {} resamples, seed {}",
            (config.level * 100.0).round(),
            config.resamples,
            config.seed
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_covers_every_value() {
        let h = histogram(&[0.0, 0.5, 1.0, 1.0], 4);
        assert_eq!(h.iter().map(|b| b.count).collect::<Vec<_>>(), [1, 0, 1, 2]);
        let one = histogram(&[0.3], 3);
        assert_eq!(one.iter().map(|b| b.count).sum::<usize>(), 1);
        assert!(histogram(&[], 3).is_empty());
    }

    #[test]
    fn mean_and_interval() {
        let cfg = BootstrapConfig::new(200, 1);
        let (m, ci) = mean_ci(&[1.0, 2.0, 3.0, 4.0], &cfg).unwrap();
        assert_eq!(m, Some(2.5));
        let [lo, hi] = ci.unwrap();
        assert!(lo < 2.5 && 2.5 < hi && lo >= 1.0 && hi <= 4.0);
        assert_eq!(mean_ci(&[2.0], &cfg).unwrap(), (Some(2.0), None));
        assert_eq!(mean_ci(&[], &cfg).unwrap(), (None, None));
    }
}
