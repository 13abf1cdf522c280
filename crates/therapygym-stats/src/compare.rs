//! Differences between two runs: the difference of means with a percentile bootstrap interval
//! and a t test, paired (the same units scored twice, e.g. base vs trained policy on the same
//! profiles and seeds) or unpaired; and Holm's step-down correction over a family of p-values.
//!
//! References (tests/compare_reference.rs, fixtures from tools/fixtures/gen_compare_fixtures.py):
//! the interval is `scipy.stats.bootstrap(..., method="percentile")` (`paired=True` for paired
//! data) on the same resample indices, the tests are `scipy.stats.ttest_rel` and
//! `scipy.stats.ttest_ind(equal_var=False)`, and Holm is `statsmodels`' `multipletests(method="holm")`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::bootstrap::{BootstrapConfig, Ci, bootstrap_ci, bootstrap_ci_from_resamples, interval};
use crate::correlation::{check_finite, check_pair};
use crate::error::StatsError;
use crate::stat::{Stat, reason};
use crate::tdist::{TTest, paired_t_test, welch_t_test};

/// Why a difference has no interval: a resample of one observation is always that observation
/// (scipy's `bootstrap` refuses such a sample too).
pub const FEWER_THAN_2: &str = "fewer than 2 observations in a sample: no bootstrap interval";

/// How two runs' values were compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pairing {
    /// Unit `i` of `a` and unit `i` of `b` are the same unit: resample pairs, paired t test.
    Paired,
    /// Independent samples: resample each on its own, Welch's t test.
    Unpaired,
}

impl Pairing {
    /// How a report names the method.
    pub fn method(self) -> &'static str {
        match self {
            Pairing::Paired => "paired bootstrap of the mean difference; paired t test",
            Pairing::Unpaired => "independent bootstrap of each mean; Welch's t test",
        }
    }
}

/// `mean(b) - mean(a)` with its interval and test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    pub pairing: Pairing,
    /// Observations of `a` and `b` (equal when paired).
    pub n_a: usize,
    pub n_b: usize,
    pub mean_a: Stat,
    pub mean_b: Stat,
    /// `mean(b) - mean(a)`.
    pub difference: Stat,
    /// Percentile bootstrap interval of the difference.
    pub ci: Ci,
    /// The t test of the difference (two-sided).
    pub test: TTest,
}

fn mean(x: &[f64]) -> Stat {
    if x.is_empty() {
        Stat::undefined(reason::EMPTY)
    } else {
        Stat::Value(x.iter().sum::<f64>() / x.len() as f64)
    }
}

fn mean_at(x: &[f64], idx: &[usize]) -> f64 {
    idx.iter().map(|&i| x[i]).sum::<f64>() / idx.len() as f64
}

fn difference_of(a: &[f64], b: &[f64]) -> Stat {
    match (mean(a).value(), mean(b).value()) {
        (Some(x), Some(y)) => Stat::Value(y - x),
        _ => Stat::undefined(reason::EMPTY),
    }
}

/// Paired difference: `b[i] - a[i]` resampled by unit.
pub fn paired_difference(
    a: &[f64],
    b: &[f64],
    config: &BootstrapConfig,
) -> Result<Difference, StatsError> {
    check_pair(a, b)?;
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
    let ci = if d.len() < 2 {
        Ci::undefined(config.level, config.resamples, 0, FEWER_THAN_2)
    } else {
        bootstrap_ci(d.len(), config, |idx| Stat::Value(mean_at(&d, idx)))?
    };
    paired_result(a, b, ci)
}

/// [`paired_difference`] on given resample index sets (to compare with a reference).
pub fn paired_difference_from_resamples(
    a: &[f64],
    b: &[f64],
    resamples: &[Vec<usize>],
    level: f64,
) -> Result<Difference, StatsError> {
    check_pair(a, b)?;
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
    let ci = if d.len() < 2 {
        Ci::undefined(level, resamples.len(), 0, FEWER_THAN_2)
    } else {
        bootstrap_ci_from_resamples(d.len(), resamples, level, |idx| {
            Stat::Value(mean_at(&d, idx))
        })?
    };
    paired_result(a, b, ci)
}

fn paired_result(a: &[f64], b: &[f64], ci: Ci) -> Result<Difference, StatsError> {
    Ok(result(Pairing::Paired, a, b, ci, paired_t_test(a, b)?))
}

fn result(pairing: Pairing, a: &[f64], b: &[f64], ci: Ci, test: TTest) -> Difference {
    Difference {
        pairing,
        n_a: a.len(),
        n_b: b.len(),
        mean_a: mean(a),
        mean_b: mean(b),
        difference: difference_of(a, b),
        ci,
        test,
    }
}

/// Unpaired difference: each sample resampled on its own from one seeded stream (per resample,
/// `a`'s indices then `b`'s).
pub fn unpaired_difference(
    a: &[f64],
    b: &[f64],
    config: &BootstrapConfig,
) -> Result<Difference, StatsError> {
    check_finite(a)?;
    check_finite(b)?;
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut ia = vec![0usize; a.len()];
    let mut ib = vec![0usize; b.len()];
    let mut draws = Vec::new();
    if !a.is_empty() && !b.is_empty() {
        draws.reserve(config.resamples);
        for _ in 0..config.resamples {
            ia.iter_mut()
                .for_each(|i| *i = rng.random_range(0..a.len()));
            ib.iter_mut()
                .for_each(|i| *i = rng.random_range(0..b.len()));
            draws.push(mean_at(b, &ib) - mean_at(a, &ia));
        }
    }
    unpaired_result(a, b, draws, config.resamples, config.level)
}

/// [`unpaired_difference`] on given resample index sets, one list per sample.
pub fn unpaired_difference_from_resamples(
    a: &[f64],
    b: &[f64],
    resamples_a: &[Vec<usize>],
    resamples_b: &[Vec<usize>],
    level: f64,
) -> Result<Difference, StatsError> {
    check_finite(a)?;
    check_finite(b)?;
    check_resample_pairs(resamples_a, resamples_b, a.len(), b.len())?;
    let mut draws = Vec::with_capacity(resamples_a.len());
    for (ia, ib) in resamples_a.iter().zip(resamples_b) {
        if !ia.is_empty() && !ib.is_empty() {
            draws.push(mean_at(b, ib) - mean_at(a, ia));
        }
    }
    unpaired_result(a, b, draws, resamples_a.len(), level)
}

/// Resample index lists of two samples: as many for each, every index within its sample.
pub(crate) fn check_resample_pairs(
    resamples_a: &[Vec<usize>],
    resamples_b: &[Vec<usize>],
    n_a: usize,
    n_b: usize,
) -> Result<(), StatsError> {
    if resamples_a.len() != resamples_b.len() {
        return Err(StatsError::LengthMismatch {
            left: resamples_a.len(),
            right: resamples_b.len(),
        });
    }
    for (ia, ib) in resamples_a.iter().zip(resamples_b) {
        for (idx, n) in [(ia, n_a), (ib, n_b)] {
            if let Some(&index) = idx.iter().find(|&&i| i >= n) {
                return Err(StatsError::IndexOutOfRange { index, n_units: n });
            }
        }
    }
    Ok(())
}

fn unpaired_result(
    a: &[f64],
    b: &[f64],
    mut draws: Vec<f64>,
    n_resamples: usize,
    level: f64,
) -> Result<Difference, StatsError> {
    let ci = if a.len() < 2 || b.len() < 2 {
        Ci::undefined(level, n_resamples, 0, FEWER_THAN_2)
    } else {
        interval(&mut draws, n_resamples, level)?
    };
    Ok(result(Pairing::Unpaired, a, b, ci, welch_t_test(a, b)?))
}

/// Holm's step-down adjusted p-values (the family is the defined p-values; `None` stays
/// `None`): sorted ascending, `p_(k) · (m - k + 1)`, made monotone, capped at 1.
pub fn holm(p_values: &[Option<f64>]) -> Vec<Option<f64>> {
    let mut order: Vec<usize> = (0..p_values.len())
        .filter(|&i| p_values[i].is_some_and(f64::is_finite))
        .collect();
    order.sort_by(|&i, &j| {
        let (a, b) = (p_values[i].unwrap_or(1.0), p_values[j].unwrap_or(1.0));
        a.total_cmp(&b).then(i.cmp(&j))
    });
    let m = order.len();
    let mut out = vec![None; p_values.len()];
    let mut running = 0.0f64;
    for (k, &i) in order.iter().enumerate() {
        let adj = (p_values[i].unwrap_or(1.0) * (m - k) as f64).min(1.0);
        running = running.max(adj);
        out[i] = Some(running);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holm_by_hand() {
        // m = 3: 0.01·3 = 0.03, 0.04·2 = 0.08, 0.03 is 2nd smallest: sorted [0.01, 0.03, 0.04]
        // -> [0.03, 0.06, 0.06 (monotone: max(0.04, 0.06))].
        let adj = holm(&[Some(0.01), Some(0.04), None, Some(0.03)]);
        let want = [Some(0.03), Some(0.06), None, Some(0.06)];
        for (a, w) in adj.iter().zip(want) {
            match (a, w) {
                (Some(a), Some(w)) => assert!((a - w).abs() < 1e-15, "{adj:?}"),
                (a, w) => assert_eq!(*a, w),
            }
        }
        assert_eq!(holm(&[Some(0.9), Some(0.8)]), vec![Some(1.0), Some(1.0)]);
        assert!(holm(&[]).is_empty());
    }

    #[test]
    fn paired_and_unpaired_see_the_same_shift() {
        let a: Vec<f64> = (0..30).map(|i| f64::from(i % 7)).collect();
        let b: Vec<f64> = a.iter().map(|x| x + 1.0).collect();
        let cfg = BootstrapConfig::new(500, 1);
        let p = paired_difference(&a, &b, &cfg).unwrap();
        assert_eq!(p.difference, Stat::Value(1.0));
        // Every difference is exactly 1: the paired interval collapses onto it.
        assert_eq!(p.ci.bounds(), Some((1.0, 1.0)));
        assert_eq!(p.test.p_value, Stat::Value(0.0));
        let u = unpaired_difference(&a, &b, &cfg).unwrap();
        let (lo, hi) = u.ci.bounds().unwrap();
        assert!(lo < 1.0 && 1.0 < hi, "{lo} {hi}");
        assert_eq!(
            u,
            unpaired_difference(&a, &b, &cfg).unwrap(),
            "seeded: reproducible"
        );
        let none = unpaired_difference(&[], &b, &cfg).unwrap();
        assert!(none.ci.bounds().is_none() && none.difference.value().is_none());
        assert!(paired_difference(&a, &b[..3], &cfg).is_err());
    }
}
