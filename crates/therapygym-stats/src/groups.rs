//! Known-groups validity: does a score separate dialogues known to be better (HIGH) from those
//! known to be worse (LOW)?
//!
//! - AUC: the probability that a HIGH dialogue outscores a LOW one, ties counting half; equal to
//!   `sklearn.metrics.roc_auc_score` with HIGH as the positive class, and to `U / (n_high n_low)`.
//! - Cliff's δ = `2 AUC - 1` (in [-1, 1]).
//! - The one-sided Mann–Whitney test (HIGH greater), as `scipy.stats.mannwhitneyu(high, low,
//!   alternative="greater", method="asymptotic")`: normal approximation with the tie correction
//!   and scipy's default continuity correction (`z = (U - n_high n_low / 2 - 0.5) / σ`).
//! - A percentile bootstrap interval for the AUC (and so for δ), resampling each group on its own
//!   (the groups are fixed by design).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::bootstrap::{BootstrapConfig, Ci, interval};
use crate::compare::{FEWER_THAN_2, check_resample_pairs};
use crate::correlation::{check_finite, rank_average_into};
use crate::error::StatsError;
use crate::stat::{Stat, reason};

/// An empty group: no comparison exists.
pub const EMPTY_GROUP: &str = "a group has no scored dialogue";
/// Every value of both groups is equal: the normal approximation has no spread (scipy: z = -inf).
pub const ALL_TIED: &str = "every value is tied: no spread for the normal approximation";

/// The Mann–Whitney U test of HIGH greater than LOW.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MannWhitney {
    /// U of the HIGH group: pairs HIGH > LOW, plus half the ties.
    pub u: Stat,
    /// The continuity-corrected normal deviate.
    pub z: Stat,
    /// One-sided p-value (HIGH greater).
    pub p_greater: Stat,
}

/// The known-groups comparison of one score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupComparison {
    pub n_high: usize,
    pub n_low: usize,
    /// P(HIGH > LOW) + P(tie) / 2.
    pub auc: Stat,
    pub auc_ci: Ci,
    /// Cliff's δ = 2 AUC - 1.
    pub cliffs_delta: Stat,
    pub cliffs_delta_ci: Ci,
    pub mann_whitney: MannWhitney,
}

/// Upper-tail probability of the standard normal, `scipy.stats.norm.sf`, to about 1e-15
/// relative: `sf(z) = Q(1/2, z^2/2) / 2` with the regularised incomplete gamma function (series
/// below `x < 1.5`, Lentz's continued fraction above).
pub fn normal_sf(z: f64) -> f64 {
    if z.is_nan() {
        return f64::NAN;
    }
    let x = z * z / 2.0;
    let (p, q) = gamma_half(x);
    if z >= 0.0 {
        0.5 * q.unwrap_or(1.0 - p)
    } else {
        0.5 + 0.5 * p
    }
}

/// `(P(1/2, x), Some(Q))` when Q came from the continued fraction (accurate in the tail), else
/// `(P, None)`.
fn gamma_half(x: f64) -> (f64, Option<f64>) {
    const A: f64 = 0.5;
    // ln Γ(1/2) = ln √π.
    const LN_GAMMA_HALF: f64 = 0.572_364_942_924_700_1;
    const EPS: f64 = 1e-17;
    const TINY: f64 = 1e-300;
    if x <= 0.0 {
        return (0.0, Some(1.0));
    }
    if x.is_infinite() {
        return (1.0, Some(0.0));
    }
    let front = (-x + A * x.ln() - LN_GAMMA_HALF).exp();
    if x < A + 1.0 {
        let (mut ap, mut del) = (A, 1.0 / A);
        let mut sum = del;
        for _ in 0..1000 {
            ap += 1.0;
            del *= x / ap;
            sum += del;
            if del.abs() < sum.abs() * EPS {
                break;
            }
        }
        ((sum * front).min(1.0), None)
    } else {
        let mut b = x + 1.0 - A;
        let mut c = 1.0 / TINY;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..1000 {
            let an = -f64::from(i) * (f64::from(i) - A);
            b += 2.0;
            d = an * d + b;
            if d.abs() < TINY {
                d = TINY;
            }
            c = b + an / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            let del = d * c;
            h *= del;
            if (del - 1.0).abs() < EPS {
                break;
            }
        }
        let q = (front * h).clamp(0.0, 1.0);
        (1.0 - q, Some(q))
    }
}

/// Reusable buffers for ranking `high ++ low` many times (the bootstrap).
#[derive(Default)]
struct Ranker {
    values: Vec<f64>,
    order: Vec<usize>,
    ranks: Vec<f64>,
}

impl Ranker {
    /// U of the HIGH values, and the tie term `Σ (t³ - t)` over groups of tied values.
    fn u_and_ties(
        &mut self,
        high: impl Iterator<Item = f64>,
        low: impl Iterator<Item = f64>,
    ) -> (f64, f64) {
        self.values.clear();
        self.values.extend(high);
        let n_high = self.values.len();
        self.values.extend(low);
        rank_average_into(&self.values, &mut self.order, &mut self.ranks);
        let r_high: f64 = self.ranks[..n_high].iter().sum();
        let n1 = n_high as f64;
        let u = r_high - n1 * (n1 + 1.0) / 2.0;
        // `order` is sorted by value: walk the runs of equal values.
        let mut ties = 0.0;
        let mut start = 0;
        while start < self.order.len() {
            let v = self.values[self.order[start]];
            let mut end = start + 1;
            while end < self.order.len() && self.values[self.order[end]] == v {
                end += 1;
            }
            let t = (end - start) as f64;
            ties += t * t * t - t;
            start = end;
        }
        (u, ties)
    }
}

fn mann_whitney_of(u: f64, ties: f64, n_high: usize, n_low: usize) -> MannWhitney {
    let (n1, n2) = (n_high as f64, n_low as f64);
    let n = n1 + n2;
    let mu = n1 * n2 / 2.0;
    let s = (n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)))).sqrt();
    let numerator = u - mu - 0.5;
    let (z, p) = if s > 0.0 {
        let z = numerator / s;
        (
            Stat::finite_or(z, reason::NON_FINITE),
            Stat::finite_or(normal_sf(z).clamp(0.0, 1.0), reason::NON_FINITE),
        )
    } else {
        // All tied: U = μ, so the corrected numerator is -0.5, z = -inf and scipy's p is 1.
        (Stat::undefined(ALL_TIED), Stat::Value(1.0))
    };
    MannWhitney {
        u: Stat::Value(u),
        z,
        p_greater: p,
    }
}

/// The one-sided Mann–Whitney test of `high` greater than `low` (see the module docs).
pub fn mann_whitney_greater(high: &[f64], low: &[f64]) -> Result<MannWhitney, StatsError> {
    check_finite(high)?;
    check_finite(low)?;
    if high.is_empty() || low.is_empty() {
        let u = Stat::undefined(EMPTY_GROUP);
        return Ok(MannWhitney {
            u: u.clone(),
            z: u.clone(),
            p_greater: u,
        });
    }
    let (u, ties) = Ranker::default().u_and_ties(high.iter().copied(), low.iter().copied());
    Ok(mann_whitney_of(u, ties, high.len(), low.len()))
}

/// The AUC of `high` against `low` (see the module docs).
pub fn auc(high: &[f64], low: &[f64]) -> Result<Stat, StatsError> {
    check_finite(high)?;
    check_finite(low)?;
    if high.is_empty() || low.is_empty() {
        return Ok(Stat::undefined(EMPTY_GROUP));
    }
    let (u, _) = Ranker::default().u_and_ties(high.iter().copied(), low.iter().copied());
    Ok(Stat::Value(u / (high.len() * low.len()) as f64))
}

/// AUC, Cliff's δ and the Mann–Whitney test with bootstrap intervals; each resample draws the
/// HIGH indices, then the LOW indices, from one seeded stream.
pub fn known_groups(
    high: &[f64],
    low: &[f64],
    config: &BootstrapConfig,
) -> Result<GroupComparison, StatsError> {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut draw = |n: usize| -> Vec<usize> { (0..n).map(|_| rng.random_range(0..n)).collect() };
    let mut ra = Vec::new();
    let mut rb = Vec::new();
    if !high.is_empty() && !low.is_empty() {
        for _ in 0..config.resamples {
            ra.push(draw(high.len()));
            rb.push(draw(low.len()));
        }
    }
    let mut g = known_groups_from_resamples(high, low, &ra, &rb, config.level)?;
    g.auc_ci.n_resamples = config.resamples;
    g.cliffs_delta_ci.n_resamples = config.resamples;
    Ok(g)
}

/// [`known_groups`] on given resample index sets, one list per group (to compare with a
/// reference).
pub fn known_groups_from_resamples(
    high: &[f64],
    low: &[f64],
    resamples_high: &[Vec<usize>],
    resamples_low: &[Vec<usize>],
    level: f64,
) -> Result<GroupComparison, StatsError> {
    check_finite(high)?;
    check_finite(low)?;
    check_resample_pairs(resamples_high, resamples_low, high.len(), low.len())?;
    let mann_whitney = mann_whitney_greater(high, low)?;
    let auc = auc(high, low)?;
    let n_resamples = resamples_high.len();
    let auc_ci = if high.len() < 2 || low.len() < 2 {
        Ci::undefined(level, n_resamples, 0, FEWER_THAN_2)
    } else {
        let mut ranker = Ranker::default();
        let mut draws = Vec::with_capacity(n_resamples);
        for (ih, il) in resamples_high.iter().zip(resamples_low) {
            if ih.is_empty() || il.is_empty() {
                continue;
            }
            let (u, _) = ranker.u_and_ties(ih.iter().map(|&i| high[i]), il.iter().map(|&i| low[i]));
            draws.push(u / (ih.len() * il.len()) as f64);
        }
        interval(&mut draws, n_resamples, level)?
    };
    let delta = |s: &Stat| s.clone().map(|a| 2.0 * a - 1.0);
    let cliffs_delta_ci = Ci {
        low: delta(&auc_ci.low),
        high: delta(&auc_ci.high),
        ..auc_ci.clone()
    };
    Ok(GroupComparison {
        n_high: high.len(),
        n_low: low.len(),
        cliffs_delta: delta(&auc),
        auc,
        auc_ci,
        cliffs_delta_ci,
        mann_whitney,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_ties_half_and_delta_follows() {
        let g = known_groups(&[3.0, 4.0, 4.0], &[1.0, 4.0], &BootstrapConfig::new(200, 1)).unwrap();
        // Pairs: 3>1, 3<4, 4>1, 4=4, 4>1, 4=4 → (3 + 2·0.5) / 6.
        assert_eq!(g.mann_whitney.u, Stat::Value(4.0));
        assert_eq!(g.auc, Stat::Value(4.0 / 6.0));
        let delta = g.cliffs_delta.value().unwrap();
        assert!((delta - 1.0 / 3.0).abs() < 1e-15, "{delta}");
        assert!(g.auc_ci.bounds().is_some());
    }

    #[test]
    fn empty_and_tied_groups_are_undefined_not_zero() {
        let g = known_groups(&[], &[1.0], &BootstrapConfig::new(10, 1)).unwrap();
        assert!(!g.auc.is_defined() && !g.mann_whitney.p_greater.is_defined());
        let g = known_groups(&[2.0, 2.0], &[2.0, 2.0], &BootstrapConfig::new(10, 1)).unwrap();
        assert_eq!(g.auc, Stat::Value(0.5));
        assert_eq!(g.mann_whitney.p_greater, Stat::Value(1.0));
        assert!(!g.mann_whitney.z.is_defined());
        let g = known_groups(&[2.0], &[1.0, 3.0], &BootstrapConfig::new(10, 1)).unwrap();
        assert!(g.auc.is_defined() && !g.auc_ci.low.is_defined());
    }

    #[test]
    fn normal_tail_is_symmetric_and_known() {
        assert_eq!(normal_sf(0.0), 0.5);
        assert!((normal_sf(1.959_963_984_540_054) - 0.025).abs() < 1e-15);
        assert!((normal_sf(-1.0) + normal_sf(1.0) - 1.0).abs() < 1e-15);
    }
}
