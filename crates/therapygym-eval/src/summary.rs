//! The run summary: per-item means (0–6) and normalised with 95% CIs, the CTRS normalised mean,
//! safety rates (per label, per-label mean and any-violation), unscored counts, mean reward.
//! Computed from the store, so it covers every attempt of a resumed run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use therapygym_core::Verdict;
use therapygym_store::{RunStore, SessionStatus};

use crate::assets::Assets;
use crate::error::EvalError;
use crate::run::PlannedSession;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionCounts {
    pub planned: u64,
    /// Sessions whose transcript finished (scored or unscored).
    pub completed: u64,
    /// Sessions that could not finish.
    pub failed: u64,
    /// Completed sessions the judge could not score.
    pub unscored: u64,
    /// Completed sessions not judged yet (an interrupted judging pass).
    pub unjudged: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemSummary {
    pub mean: Option<f64>,
    pub normalized: Option<f64>,
    /// 95% t-interval of the normalised mean.
    pub ci95: Option<[f64; 2]>,
    pub n: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibrated_mean: Option<f64>,
    pub reward: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CtrsSummary {
    pub items: BTreeMap<String, ItemSummary>,
    /// Item ids in rubric order (JSON objects are unordered).
    pub item_order: Vec<String>,
    /// Mean over scored sessions of each session's mean score/6 over the reward items.
    pub normalized_mean: Option<f64>,
    pub ci95: Option<[f64; 2]>,
    pub n: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelSummary {
    pub rate: Option<f64>,
    pub n: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SafetySummary {
    pub labels: BTreeMap<String, LabelSummary>,
    /// Share of sessions with at least one violation.
    pub any_violation_rate: Option<f64>,
    /// Share of (session, label) pairs flagged (the paper's likely "Safety Avg").
    pub per_label_mean_rate: Option<f64>,
    pub n: u64,
    pub taxonomy: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardSummary {
    pub mean: Option<f64>,
    pub ci95: Option<[f64; 2]>,
    pub n: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub run_dir: String,
    pub judge_hash: String,
    pub sessions: SessionCounts,
    pub unscored_rate: Option<f64>,
    pub unscored_reasons: BTreeMap<String, u64>,
    pub ctrs: CtrsSummary,
    pub safety: SafetySummary,
    pub reward: RewardSummary,
    pub attempts: u32,
}

/// Two-sided 97.5% quantile of Student's t (for 95% intervals).
fn t975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => T[df - 1],
        31..=60 => 2.042 - (df - 30) as f64 * (2.042 - 2.000) / 30.0,
        61..=120 => 2.000 - (df - 60) as f64 * (2.000 - 1.980) / 60.0,
        _ => 1.960,
    }
}

pub fn mean(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        None
    } else {
        Some(xs.iter().sum::<f64>() / xs.len() as f64)
    }
}

/// Mean ± t·sd/√n; None below two values.
pub fn ci95(xs: &[f64]) -> Option<[f64; 2]> {
    if xs.len() < 2 {
        return None;
    }
    let m = mean(xs)?;
    let var = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64;
    let half = t975(xs.len() - 1) * (var / xs.len() as f64).sqrt();
    Some([m - half, m + half])
}

/// Normalised scores live in [0, 1]; a t-interval on few sessions can overshoot it.
fn clamp01([lo, hi]: [f64; 2]) -> [f64; 2] {
    [lo.clamp(0.0, 1.0), hi.clamp(0.0, 1.0)]
}

pub fn summarize(
    store: &RunStore,
    judge_hash: &str,
    planned: &[PlannedSession],
    assets: &Assets,
) -> Result<Summary, EvalError> {
    let statuses = store.session_statuses()?;
    let judgments = store.judgments(judge_hash)?;
    let planned_ids: Vec<&str> = planned.iter().map(|p| p.id.as_str()).collect();
    let in_plan = |id: &str| planned_ids.is_empty() || planned_ids.contains(&id);
    let completed: Vec<&String> = statuses
        .iter()
        .filter(|(id, s)| **s == SessionStatus::Completed && in_plan(id))
        .map(|(id, _)| id)
        .collect();
    let failed = statuses
        .iter()
        .filter(|(id, s)| **s == SessionStatus::Failed && in_plan(id))
        .count() as u64;
    let rubric = &assets.rubric;
    let span = f64::from(rubric.max_score - rubric.min_score);
    let mut item_scores: BTreeMap<&str, Vec<f64>> = rubric
        .items
        .iter()
        .map(|i| (i.id.as_str(), Vec::new()))
        .collect();
    let mut item_calibrated: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut session_norm = Vec::new();
    let labels: Vec<&str> = assets.taxonomy.enabled_ids();
    let mut label_flags: BTreeMap<&str, Vec<f64>> =
        labels.iter().map(|l| (*l, Vec::new())).collect();
    let mut any = Vec::new();
    let mut rewards = Vec::new();
    let mut unscored = 0u64;
    let mut unjudged = 0u64;
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for id in &completed {
        let Some(row) = judgments.get(*id) else {
            unjudged += 1;
            continue;
        };
        match &row.verdict {
            Verdict::Unscored { reason, .. } => {
                unscored += 1;
                *reasons.entry(reason.as_str().to_string()).or_default() += 1;
            }
            Verdict::Scored { judgment } => {
                for (item, v) in item_scores.iter_mut() {
                    if let Some(s) = judgment.ctrs.get(*item) {
                        v.push(f64::from(s.score));
                    }
                }
                if let Some(serde_json::Value::Object(cal)) = &row.calibrated {
                    for (k, v) in cal {
                        if let Some(x) = v.as_f64() {
                            item_calibrated.entry(k.clone()).or_default().push(x);
                        }
                    }
                }
                let norms: Vec<f64> = rubric
                    .reward_items()
                    .filter_map(|i| judgment.ctrs.get(&i.id))
                    .map(|s| (f64::from(s.score) - f64::from(rubric.min_score)) / span)
                    .collect();
                if let Some(m) = mean(&norms) {
                    session_norm.push(m);
                }
                let mut any_flag = false;
                for (label, v) in label_flags.iter_mut() {
                    if let Some(f) = judgment.safety.get(*label) {
                        v.push(if f.flag { 1.0 } else { 0.0 });
                        any_flag |= f.flag;
                    }
                }
                any.push(if any_flag { 1.0 } else { 0.0 });
                if let Some(r) = row.reward {
                    rewards.push(r);
                }
            }
        }
    }
    let items = rubric
        .items
        .iter()
        .map(|i| {
            let v = &item_scores[i.id.as_str()];
            let norm: Vec<f64> = v
                .iter()
                .map(|s| (s - f64::from(rubric.min_score)) / span)
                .collect();
            (
                i.id.clone(),
                ItemSummary {
                    mean: mean(v),
                    normalized: mean(&norm),
                    ci95: ci95(&norm).map(clamp01),
                    n: v.len() as u64,
                    calibrated_mean: item_calibrated.get(&i.id).and_then(|c| mean(c)),
                    reward: i.reward,
                },
            )
        })
        .collect();
    let all_flags: Vec<f64> = label_flags.values().flatten().copied().collect();
    let judged = completed.len() as u64 - unjudged;
    Ok(Summary {
        run_dir: store.dir().display().to_string(),
        judge_hash: judge_hash.to_string(),
        sessions: SessionCounts {
            planned: planned.len().max(statuses.len()) as u64,
            completed: completed.len() as u64,
            failed,
            unscored,
            unjudged,
        },
        unscored_rate: if judged == 0 {
            None
        } else {
            Some(unscored as f64 / judged as f64)
        },
        unscored_reasons: reasons,
        ctrs: CtrsSummary {
            items,
            item_order: rubric.items.iter().map(|i| i.id.clone()).collect(),
            normalized_mean: mean(&session_norm),
            ci95: ci95(&session_norm).map(clamp01),
            n: session_norm.len() as u64,
        },
        safety: SafetySummary {
            labels: label_flags
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        LabelSummary {
                            rate: mean(v),
                            n: v.len() as u64,
                        },
                    )
                })
                .collect(),
            any_violation_rate: mean(&any),
            per_label_mean_rate: mean(&all_flags),
            n: any.len() as u64,
            taxonomy: assets.taxonomy.version_id(),
        },
        reward: RewardSummary {
            mean: mean(&rewards),
            ci95: ci95(&rewards),
            n: rewards.len() as u64,
        },
        attempts: store.attempts()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_interval() {
        let [lo, hi] = ci95(&[1.0, 2.0, 3.0]).unwrap();
        // mean 2, sd 1, t(2) = 4.303: 2 ± 4.303/√3
        assert!((hi - 2.0 - 4.303 / 3f64.sqrt()).abs() < 1e-9);
        assert!((2.0 - lo - 4.303 / 3f64.sqrt()).abs() < 1e-9);
        assert_eq!(ci95(&[1.0]), None);
        assert_eq!(mean(&[]), None);
    }
}
