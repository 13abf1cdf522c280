//! Percentile bootstrap confidence intervals over units (dialogues), seeded and reproducible.
//!
//! Each resample draws `n_units` unit indices uniformly with replacement from a `ChaCha8Rng`
//! seeded with the configured seed (see [`for_each_resample`]); the statistic sees only those indices, so one resampling scheme serves
//! every statistic (correlations, kappas, averages over expert pairs). Resamples on which the
//! statistic is undefined (e.g. a constant resample) are skipped and counted; the CI is the numpy
//! `linear` percentile of the valid values, and is undefined when fewer than half are valid.

use rand::distr::{Distribution, Uniform};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::correlation::{check_finite, cmp_f64};
use crate::error::StatsError;
use crate::stat::{Stat, reason};

/// Default number of bootstrap resamples for a report.
pub const DEFAULT_RESAMPLES: usize = 2000;
/// Default seed, so that two runs of the same report give the same intervals.
pub const DEFAULT_SEED: u64 = 20_240_601;
/// Default confidence level.
pub const DEFAULT_LEVEL: f64 = 0.95;

/// How to bootstrap: number of resamples, RNG seed and confidence level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BootstrapConfig {
    /// Number of resamples (B).
    pub resamples: usize,
    /// Seed of the `ChaCha8Rng` that draws the resamples.
    pub seed: u64,
    /// Confidence level in (0, 1), e.g. 0.95.
    pub level: f64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        Self {
            resamples: DEFAULT_RESAMPLES,
            seed: DEFAULT_SEED,
            level: DEFAULT_LEVEL,
        }
    }
}

impl BootstrapConfig {
    /// `resamples` resamples from `seed` at the default 95% level.
    pub fn new(resamples: usize, seed: u64) -> Self {
        Self {
            resamples,
            seed,
            level: DEFAULT_LEVEL,
        }
    }

    /// The same configuration at another confidence level.
    pub fn with_level(self, level: f64) -> Self {
        Self { level, ..self }
    }
}

/// A percentile bootstrap interval. `low`/`high` are both defined or both undefined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ci {
    /// Lower bound: the `100 * (1 - level) / 2` percentile of the valid resample statistics.
    pub low: Stat,
    /// Upper bound: the `100 * (1 + level) / 2` percentile.
    pub high: Stat,
    /// Confidence level.
    pub level: f64,
    /// Resamples drawn.
    pub n_resamples: usize,
    /// Resamples on which the statistic was defined (only these enter the percentiles).
    pub n_valid_resamples: usize,
}

impl Ci {
    /// `(low, high)` when defined.
    pub fn bounds(&self) -> Option<(f64, f64)> {
        Some((self.low.value()?, self.high.value()?))
    }

    pub(crate) fn undefined(
        level: f64,
        n_resamples: usize,
        n_valid: usize,
        why: &'static str,
    ) -> Self {
        Self {
            low: Stat::undefined(why),
            high: Stat::undefined(why),
            level,
            n_resamples,
            n_valid_resamples: n_valid,
        }
    }
}

/// A point estimate with its bootstrap interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The statistic on all units.
    pub value: Stat,
    /// Its bootstrap interval.
    pub ci: Ci,
}

fn check_level(level: f64) -> Result<(), StatsError> {
    if level > 0.0 && level < 1.0 {
        Ok(())
    } else {
        Err(StatsError::InvalidLevel(level))
    }
}

/// numpy's `_lerp`: `a + (b - a) t`, computed from `b` when `t >= 0.5` for symmetry.
fn lerp(a: f64, b: f64, t: f64) -> f64 {
    let diff = b - a;
    if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    }
}

/// The `q`-th percentile (0..=100) of ascending `sorted`, as
/// `numpy.percentile(a, q, method="linear")`. `None` when empty.
pub fn percentile_sorted(sorted: &[f64], q: f64) -> Result<Option<f64>, StatsError> {
    if !(0.0..=100.0).contains(&q) {
        return Err(StatsError::InvalidPercentile(q));
    }
    let n = sorted.len();
    if n == 0 {
        return Ok(None);
    }
    let virtual_index = (n - 1) as f64 * (q / 100.0);
    if virtual_index >= (n - 1) as f64 {
        return Ok(Some(sorted[n - 1]));
    }
    let prev = virtual_index.floor();
    let i = prev as usize;
    Ok(Some(lerp(sorted[i], sorted[i + 1], virtual_index - prev)))
}

/// `numpy.percentile(values, q)` (linear method) on unsorted values. `None` when empty.
pub fn percentile(values: &[f64], q: f64) -> Result<Option<f64>, StatsError> {
    check_finite(values)?;
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(|a, b| cmp_f64(*a, *b));
    percentile_sorted(&sorted, q)
}

/// Percentile interval from the valid statistics of `n_resamples` resamples (sorts `valid`).
pub(crate) fn interval(
    valid: &mut [f64],
    n_resamples: usize,
    level: f64,
) -> Result<Ci, StatsError> {
    let n_valid = valid.len();
    if n_resamples == 0 {
        return Ok(Ci::undefined(level, 0, 0, reason::BOOTSTRAP_NO_RESAMPLES));
    }
    if 2 * n_valid < n_resamples || n_valid == 0 {
        return Ok(Ci::undefined(
            level,
            n_resamples,
            n_valid,
            reason::BOOTSTRAP_TOO_FEW_VALID,
        ));
    }
    valid.sort_unstable_by(|a, b| cmp_f64(*a, *b));
    let alpha = (1.0 - level) / 2.0;
    let bound = |q: f64| -> Result<Stat, StatsError> {
        Ok(match percentile_sorted(valid, 100.0 * q)? {
            Some(v) => Stat::finite_or(v, reason::NON_FINITE),
            None => Stat::undefined(reason::BOOTSTRAP_TOO_FEW_VALID),
        })
    };
    Ok(Ci {
        low: bound(alpha)?,
        high: bound(1.0 - alpha)?,
        level,
        n_resamples,
        n_valid_resamples: n_valid,
    })
}

/// A uniform index below `n` drawn afresh from `rng` (Lemire's multiply-shift with rejection:
/// words whose low product half falls below `threshold = 2^32 mod n` are redrawn).
fn bounded_fresh(n: u32, threshold: u32, rng: &mut ChaCha8Rng) -> usize {
    loop {
        let m = u64::from(rng.next_u32()) * u64::from(n);
        if (m as u32) >= threshold {
            return (m >> 32) as usize;
        }
    }
}

/// Maps a buffer of uniform 32-bit words to uniform indices below `n` without bias: the
/// multiply-shift pass is branch-free, and the rare words Lemire's method rejects (probability
/// below `n / 2^32` each) are replaced, in order, by fresh draws from `rng`.
fn words_to_indices(words: &[u32], n: u32, idx: &mut [usize], rng: &mut ChaCha8Rng) {
    let threshold = n.wrapping_neg() % n;
    let mut rejected = false;
    for (slot, &w) in idx.iter_mut().zip(words) {
        let m = u64::from(w) * u64::from(n);
        *slot = (m >> 32) as usize;
        rejected |= (m as u32) < threshold;
    }
    if rejected {
        for (slot, &w) in idx.iter_mut().zip(words) {
            if ((u64::from(w) * u64::from(n)) as u32) < threshold {
                *slot = bounded_fresh(n, threshold, rng);
            }
        }
    }
}

/// Calls `f` on each of `resamples` seeded draws of `n_units` indices with replacement, reusing
/// one index buffer. The draws depend only on `(n_units, seed)` and the rand_chacha version:
/// each resample fills a buffer of 32-bit words from `ChaCha8Rng::seed_from_u64(seed)` and maps
/// them to indices without bias (block generation is several times faster than one call per draw).
pub fn for_each_resample(n_units: usize, resamples: usize, seed: u64, mut f: impl FnMut(&[usize])) {
    if n_units == 0 {
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut idx = vec![0usize; n_units];
    match u32::try_from(n_units) {
        Ok(n) => {
            let mut words = vec![0u32; n_units];
            for _ in 0..resamples {
                rng.fill(&mut words[..]);
                words_to_indices(&words, n, &mut idx, &mut rng);
                f(&idx);
            }
        }
        Err(_) => {
            let Ok(dist) = Uniform::new(0, n_units) else {
                return;
            };
            for _ in 0..resamples {
                for slot in idx.iter_mut() {
                    *slot = dist.sample(&mut rng);
                }
                f(&idx);
            }
        }
    }
}

/// The resample index sets [`bootstrap_ci`] uses for this `n_units` and configuration (for
/// inspection and tests; the bootstrap itself never materialises them).
pub fn draw_resamples(n_units: usize, config: &BootstrapConfig) -> Vec<Vec<usize>> {
    let mut out = Vec::with_capacity(config.resamples);
    for_each_resample(n_units, config.resamples, config.seed, |idx| {
        out.push(idx.to_vec());
    });
    out
}

/// Percentile bootstrap CI of `statistic` over `n_units` units.
///
/// `statistic` receives the resampled unit indices (length `n_units`, with repeats) and may keep
/// scratch state between calls (hence `FnMut`); see [`crate::PairedResampler`] for allocation-free
/// correlation statistics. Errors only on an invalid level.
pub fn bootstrap_ci<F>(
    n_units: usize,
    config: &BootstrapConfig,
    mut statistic: F,
) -> Result<Ci, StatsError>
where
    F: FnMut(&[usize]) -> Stat,
{
    check_level(config.level)?;
    if n_units == 0 {
        return Ok(Ci::undefined(
            config.level,
            config.resamples,
            0,
            reason::BOOTSTRAP_NO_UNITS,
        ));
    }
    let mut valid = Vec::with_capacity(config.resamples);
    for_each_resample(n_units, config.resamples, config.seed, |idx| {
        if let Some(v) = statistic(idx).value() {
            valid.push(v);
        }
    });
    interval(&mut valid, config.resamples, config.level)
}

/// Percentile CI of `statistic` on explicitly given resamples (e.g. drawn by numpy, to compare
/// with `numpy.percentile` on identical draws). Every index must be below `n_units`.
pub fn bootstrap_ci_from_resamples<I, R, F>(
    n_units: usize,
    resamples: I,
    level: f64,
    mut statistic: F,
) -> Result<Ci, StatsError>
where
    I: IntoIterator<Item = R>,
    R: AsRef<[usize]>,
    F: FnMut(&[usize]) -> Stat,
{
    check_level(level)?;
    let mut valid = Vec::new();
    let mut n_resamples = 0;
    for r in resamples {
        let idx = r.as_ref();
        if let Some(&index) = idx.iter().find(|&&i| i >= n_units) {
            return Err(StatsError::IndexOutOfRange { index, n_units });
        }
        n_resamples += 1;
        if let Some(v) = statistic(idx).value() {
            valid.push(v);
        }
    }
    interval(&mut valid, n_resamples, level)
}

/// The statistic on all units (indices `0..n_units`) with its bootstrap CI.
pub fn estimate_with_ci<F>(
    n_units: usize,
    config: &BootstrapConfig,
    mut statistic: F,
) -> Result<Estimate, StatsError>
where
    F: FnMut(&[usize]) -> Stat,
{
    let all: Vec<usize> = (0..n_units).collect();
    let value = statistic(&all);
    let ci = bootstrap_ci(n_units, config, statistic)?;
    Ok(Estimate { value, ci })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_percentiles() {
        let a = [1.0, 2.0, 3.0, 4.0];
        // np.percentile([1,2,3,4], [0, 2.5, 50, 97.5, 100]) = [1, 1.075, 2.5, 3.925, 4]
        let want = [
            (0.0, 1.0),
            (2.5, 1.075),
            (50.0, 2.5),
            (97.5, 3.925),
            (100.0, 4.0),
        ];
        for (q, w) in want {
            let got = percentile(&a, q).unwrap().unwrap();
            assert!((got - w).abs() < 1e-12, "{q}: {got} vs {w}");
        }
        assert_eq!(percentile(&[], 50.0).unwrap(), None);
        assert_eq!(percentile(&[7.0], 97.5).unwrap(), Some(7.0));
        assert!(percentile(&a, 101.0).is_err());
    }

    #[test]
    fn seeded_and_reproducible() {
        let cfg = BootstrapConfig::new(50, 7);
        let a = draw_resamples(10, &cfg);
        assert_eq!(a, draw_resamples(10, &cfg));
        assert_ne!(a, draw_resamples(10, &BootstrapConfig::new(50, 8)));
        assert!(a.iter().all(|r| r.len() == 10 && r.iter().all(|&i| i < 10)));
    }

    #[test]
    fn bootstrap_matches_explicit_draws() {
        let x: Vec<f64> = (0..20).map(|i| f64::from(i % 7)).collect();
        let stat =
            |idx: &[usize]| Stat::Value(idx.iter().map(|&i| x[i]).sum::<f64>() / idx.len() as f64);
        let cfg = BootstrapConfig::new(200, 3);
        let ci = bootstrap_ci(20, &cfg, stat).unwrap();
        let draws = draw_resamples(20, &cfg);
        let ci2 = bootstrap_ci_from_resamples(20, &draws, 0.95, stat).unwrap();
        assert_eq!(ci, ci2);
        let (lo, hi) = ci.bounds().unwrap();
        assert!(lo < hi);
        assert_eq!(ci.n_valid_resamples, 200);
    }

    #[test]
    fn skips_undefined_and_requires_half_valid() {
        let mut k = 0;
        let half = bootstrap_ci(5, &BootstrapConfig::new(10, 1), |_| {
            k += 1;
            if k % 2 == 0 {
                Stat::Value(f64::from(k))
            } else {
                Stat::undefined("x")
            }
        })
        .unwrap();
        assert_eq!(half.n_valid_resamples, 5);
        assert!(half.bounds().is_some());
        let mut k = 0;
        let too_few = bootstrap_ci(5, &BootstrapConfig::new(10, 1), |_| {
            k += 1;
            if k <= 4 {
                Stat::Value(1.0)
            } else {
                Stat::undefined("x")
            }
        })
        .unwrap();
        assert_eq!(too_few.n_valid_resamples, 4);
        assert_eq!(
            too_few.low,
            Stat::undefined(reason::BOOTSTRAP_TOO_FEW_VALID)
        );
    }

    #[test]
    fn edge_configs() {
        let none = bootstrap_ci(0, &BootstrapConfig::default(), |_| Stat::Value(1.0)).unwrap();
        assert_eq!(none.low, Stat::undefined(reason::BOOTSTRAP_NO_UNITS));
        let zero = bootstrap_ci(3, &BootstrapConfig::new(0, 1), |_| Stat::Value(1.0)).unwrap();
        assert!(zero.bounds().is_none());
        assert!(
            bootstrap_ci(3, &BootstrapConfig::default().with_level(1.0), |_| {
                Stat::Value(1.0)
            })
            .is_err()
        );
        assert!(matches!(
            bootstrap_ci_from_resamples(3, [vec![0, 3, 1]], 0.95, |_| Stat::Value(1.0)),
            Err(StatsError::IndexOutOfRange {
                index: 3,
                n_units: 3
            })
        ));
    }

    #[test]
    fn draws_are_uniform() {
        // 7 units x 70,000 draws: each count within 5 sigma of 10,000.
        let mut counts = [0u32; 7];
        for_each_resample(7, 10_000, 5, |idx| idx.iter().for_each(|&i| counts[i] += 1));
        let sigma = (70_000.0f64 * (1.0 / 7.0) * (6.0 / 7.0)).sqrt();
        for c in counts {
            assert!((f64::from(c) - 10_000.0).abs() < 5.0 * sigma, "{counts:?}");
        }
        // With n = 2^31 + 1 the words 0, 1, 2 are rejected and redrawn; all stay in range.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let n = (1u32 << 31) + 1;
        let words = [0u32, 1, 2, u32::MAX];
        let mut idx = [0usize; 4];
        words_to_indices(&words, n, &mut idx, &mut rng);
        assert!(idx.iter().all(|&i| i < n as usize), "{idx:?}");
        assert_eq!(idx[3], (n - 1) as usize);
    }

    #[test]
    fn ci_serialises_bounds_as_stats() {
        let ci = bootstrap_ci_from_resamples(2, [[0usize, 1]], 0.95, |_| Stat::Value(0.5)).unwrap();
        let j = serde_json::to_value(&ci).unwrap();
        assert_eq!(j["low"]["value"], 0.5);
        assert_eq!(j["n_valid_resamples"], 1);
        let none = bootstrap_ci(0, &BootstrapConfig::default(), |_| Stat::Value(1.0)).unwrap();
        let j = serde_json::to_value(&none).unwrap();
        assert!(j["high"]["value"].is_null());
        assert_eq!(j["high"]["reason"], reason::BOOTSTRAP_NO_UNITS);
    }

    #[test]
    fn estimate_uses_all_units() {
        let e = estimate_with_ci(4, &BootstrapConfig::new(20, 1), |idx| {
            Stat::Value(idx.len() as f64)
        })
        .unwrap();
        assert_eq!(e.value, Stat::Value(4.0));
    }
}
