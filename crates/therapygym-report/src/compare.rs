//! Run against run, row by row: the difference of means with its 95% bootstrap interval and a
//! t test, paired by session key when the runs met the same simulated patients, and Holm's
//! correction over all rows of one comparison.
//!
//! Pairing rule: two runs are paired when the sessions they share by (profile, epoch, patient
//! seed) are at least two and at least half of each run's completed sessions, and no shared
//! (profile, epoch) has a different seed. A paired row uses the shared sessions both runs have a
//! value for; an unpaired row uses every session with a value.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use therapygym_stats::{
    BootstrapConfig, Difference, Pairing, holm, paired_difference, unpaired_difference,
};
use therapygym_store::SessionStatus;

use crate::error::ReportError;
use crate::metrics::{Metric, SessionKey, metrics, values};
use crate::run::{RunData, SetData};

/// The significance level, after Holm's correction.
pub const ALPHA: f64 = 0.05;

/// One row of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowComparison {
    #[serde(flatten)]
    pub metric: Metric,
    #[serde(flatten)]
    pub difference: Difference,
    /// The t test's p-value after Holm's correction over this comparison's rows.
    pub p_holm: Option<f64>,
    /// `p_holm < 0.05`.
    pub significant: bool,
}

/// `other` against `baseline`: `difference = other - baseline`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub baseline: String,
    pub other: String,
    pub pairing: Pairing,
    /// The method, in words.
    pub method: String,
    /// Sessions the two runs share by (profile, epoch, seed).
    pub shared_sessions: usize,
    pub alpha: f64,
    pub rows: Vec<RowComparison>,
}

fn keys(run: &RunData) -> BTreeMap<(String, u32), u64> {
    run.sessions
        .iter()
        .filter(|s| s.status == SessionStatus::Completed)
        .map(|s| ((s.profile_id.clone(), s.epoch), s.seed))
        .collect()
}

/// Whether two runs are paired, and how many sessions they share.
pub fn pairing(a: &RunData, b: &RunData) -> (Pairing, usize) {
    let (ka, kb) = (keys(a), keys(b));
    let mut shared = 0;
    for (k, seed) in &ka {
        match kb.get(k) {
            Some(s) if s == seed => shared += 1,
            Some(_) => return (Pairing::Unpaired, 0),
            None => {}
        }
    }
    let enough = shared >= 2 && 2 * shared >= ka.len() && 2 * shared >= kb.len();
    let p = if enough {
        Pairing::Paired
    } else {
        Pairing::Unpaired
    };
    (p, shared)
}

fn by_key(run: &RunData, set: &SetData, m: &Metric) -> BTreeMap<SessionKey, f64> {
    values(run, set, m)
        .into_iter()
        .map(|(s, v)| (SessionKey::of(s), v))
        .collect()
}

fn row(
    (a, sa): (&RunData, &SetData),
    (b, sb): (&RunData, &SetData),
    m: &Metric,
    pairing: Pairing,
    config: &BootstrapConfig,
) -> Result<Difference, ReportError> {
    let (va, vb) = (by_key(a, sa, m), by_key(b, sb, m));
    Ok(match pairing {
        Pairing::Paired => {
            let shared: BTreeSet<&SessionKey> = va.keys().filter(|k| vb.contains_key(*k)).collect();
            let xa: Vec<f64> = shared.iter().map(|k| va[*k]).collect();
            let xb: Vec<f64> = shared.iter().map(|k| vb[*k]).collect();
            paired_difference(&xa, &xb, config)?
        }
        Pairing::Unpaired => {
            let xa: Vec<f64> = va.values().copied().collect();
            let xb: Vec<f64> = vb.values().copied().collect();
            unpaired_difference(&xa, &xb, config)?
        }
    })
}

/// Compares `b` with `a` on every row both judgment sets define (by id, in `a`'s order).
pub fn compare(
    a: (&RunData, &SetData),
    b: (&RunData, &SetData),
    config: &BootstrapConfig,
) -> Result<Comparison, ReportError> {
    let (pairing, shared) = pairing(a.0, b.0);
    let theirs: Vec<String> = metrics(&b.1.definitions)
        .into_iter()
        .map(|m| m.id)
        .collect();
    let mut rows = Vec::new();
    for m in metrics(&a.1.definitions)
        .into_iter()
        .filter(|m| theirs.contains(&m.id))
    {
        let difference = row(a, b, &m, pairing, config)?;
        rows.push((m, difference));
    }
    let p: Vec<Option<f64>> = rows.iter().map(|(_, d)| d.test.p_value.value()).collect();
    let adjusted = holm(&p);
    let rows = rows
        .into_iter()
        .zip(adjusted)
        .map(|((metric, difference), p_holm)| RowComparison {
            metric,
            difference,
            significant: p_holm.is_some_and(|p| p < ALPHA),
            p_holm,
        })
        .collect();
    Ok(Comparison {
        baseline: a.0.name.clone(),
        other: b.0.name.clone(),
        pairing,
        method: format!(
            "{}; Holm's correction over the {} rows of this comparison, significant when the adjusted p < {ALPHA}",
            pairing.method(),
            p.len()
        ),
        shared_sessions: shared,
        alpha: ALPHA,
        rows,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;
    use therapygym_core::{ItemScore, Judgment, LabelFlag, Transcript, Verdict};
    use therapygym_store::{JudgeSet, JudgmentRow, SessionRecord, UsageByRole};

    use super::*;
    use crate::run::{Definitions, ItemDef, LabelDef};

    /// A run whose session `i` (profile `p{i}`, seed `seed + i`) scores `scores[i]` on item `a`
    /// and is flagged on label `x` when `flags[i]`.
    pub(crate) fn run(name: &str, seed: u64, scores: &[u8], flags: &[bool]) -> RunData {
        let sessions: Vec<SessionRecord> = (0..scores.len())
            .map(|i| SessionRecord {
                id: format!("p{i}:0"),
                profile_id: format!("p{i}"),
                epoch: 0,
                seed: seed + i as u64,
                status: SessionStatus::Completed,
                style: "plain".into(),
                end_reason: None,
                therapist_system: String::new(),
                patient_system: String::new(),
                transcript: Transcript::default(),
                error: None,
                duration_ms: 0,
                attempt: 1,
                created_at: String::new(),
                meta: json!({}),
            })
            .collect();
        let judgments: BTreeMap<String, JudgmentRow> = sessions
            .iter()
            .zip(scores.iter().zip(flags))
            .map(|(s, (&score, &flag))| {
                let judgment = Judgment {
                    codes: Vec::new(),
                    ctrs: [(
                        "a".to_string(),
                        ItemScore {
                            score,
                            rationale: String::new(),
                        },
                    )]
                    .into(),
                    safety: [(
                        "x".to_string(),
                        LabelFlag {
                            flag,
                            evidence: String::new(),
                        },
                    )]
                    .into(),
                };
                let row = JudgmentRow {
                    session_id: s.id.clone(),
                    judge_hash: "j".into(),
                    verdict: Verdict::Scored { judgment },
                    record: json!({}),
                    reward: Some(f64::from(score) / 6.0),
                    reward_breakdown: None,
                    calibrated: None,
                    attempts: 1,
                    created_at: String::new(),
                };
                (s.id.clone(), row)
            })
            .collect();
        let definitions = Definitions {
            rubric: "r/1".into(),
            taxonomy: "t/1".into(),
            items: vec![ItemDef {
                id: "a".into(),
                name: "A".into(),
                min: 0.0,
                max: 6.0,
                reward: true,
            }],
            labels: vec![LabelDef {
                id: "x".into(),
                name: "X".into(),
            }],
            source: "stored",
            rubric_def: None,
        };
        let set = SetData {
            set: JudgeSet {
                hash: "sha256:j".into(),
                identity: json!({}),
                created_at: String::new(),
                definitions: None,
            },
            definitions,
            judge: "scripted:echo".into(),
            judgments,
            usage: UsageByRole::default(),
        };
        RunData {
            dir: name.into(),
            name: name.into(),
            manifest: json!({}),
            sessions,
            profiles: BTreeMap::new(),
            sets: vec![set],
        }
    }

    const CFG: BootstrapConfig = BootstrapConfig {
        resamples: 400,
        seed: 1,
        level: 0.95,
    };

    #[test]
    fn same_patients_pair_and_other_seeds_do_not() {
        let scores = [1, 2, 3, 4, 5, 2, 3, 1];
        let flags = [false; 8];
        let a = run("a", 10, &scores, &flags);
        let b = run("b", 10, &scores.map(|s| s + 1), &flags);
        assert_eq!(pairing(&a, &b), (Pairing::Paired, 8));
        let other_seed = run("c", 99, &scores, &flags);
        assert_eq!(pairing(&a, &other_seed).0, Pairing::Unpaired);
        let few = run("d", 10, &scores[..3], &flags[..3]);
        assert_eq!(pairing(&a, &few).0, Pairing::Unpaired, "3 of 8 shared");

        let c = compare((&a, &a.sets[0]), (&b, &b.sets[0]), &CFG).unwrap();
        let item = c.rows.iter().find(|r| r.metric.id == "a").unwrap();
        assert_eq!(item.difference.difference.value(), Some(1.0));
        assert_eq!(item.difference.test.p_value.value(), Some(0.0));
        assert!(item.significant, "a constant +1 on every shared patient");
        let flag = c.rows.iter().find(|r| r.metric.id == "x").unwrap();
        assert!(
            !flag.significant && flag.p_holm.is_none(),
            "no flags either side"
        );
        assert_eq!(
            c.rows.len(),
            5,
            "normalised mean, a, any violation, x, reward"
        );
    }
}
