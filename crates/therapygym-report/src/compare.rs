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
