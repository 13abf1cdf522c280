//! Pearson, Spearman and Kendall tau-b correlations, and the mean absolute error, matching
//! `scipy.stats.pearsonr`, `spearmanr`, `kendalltau(variant="b")` and
//! `sklearn.metrics.mean_absolute_error`.
//!
//! Where scipy returns NaN (constant input, fewer than two observations) or raises (pearsonr on
//! fewer than two pairs), these return [`Stat::Undefined`].

use std::cmp::Ordering;

use crate::error::StatsError;
use crate::stat::{Stat, reason};

/// Orders finite floats; inputs are validated finite before any sort, so the fallback never fires.
pub(crate) fn cmp_f64(a: f64, b: f64) -> Ordering {
    a.partial_cmp(&b).unwrap_or(Ordering::Equal)
}

/// Rejects unequal lengths and non-finite values: both are caller bugs, not statistical situations.
pub(crate) fn check_pair(x: &[f64], y: &[f64]) -> Result<(), StatsError> {
    if x.len() != y.len() {
        return Err(StatsError::LengthMismatch {
            left: x.len(),
            right: y.len(),
        });
    }
    check_finite(x)?;
    check_finite(y)
}

pub(crate) fn check_finite(x: &[f64]) -> Result<(), StatsError> {
    match x.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(StatsError::NonFinite { index }),
        None => Ok(()),
    }
}

fn is_constant(x: &[f64]) -> bool {
    x.first().is_none_or(|&first| x.iter().all(|&v| v == first))
}

/// Ranks with ties given their average rank (1-based), as `scipy.stats.rankdata(method="average")`.
pub fn rank_average(x: &[f64]) -> Result<Vec<f64>, StatsError> {
    check_finite(x)?;
    let mut order: Vec<usize> = (0..x.len()).collect();
    let mut ranks = vec![0.0; x.len()];
    rank_average_into(x, &mut order, &mut ranks);
    Ok(ranks)
}

/// Average ranks of `x` into `ranks`, using `order` as scratch (both resized to `x.len()`).
pub(crate) fn rank_average_into(x: &[f64], order: &mut Vec<usize>, ranks: &mut Vec<f64>) {
    order.clear();
    order.extend(0..x.len());
    order.sort_unstable_by(|&a, &b| cmp_f64(x[a], x[b]));
    ranks.clear();
    ranks.resize(x.len(), 0.0);
    let mut start = 0;
    while start < order.len() {
        let v = x[order[start]];
        let mut end = start + 1;
        while end < order.len() && x[order[end]] == v {
            end += 1;
        }
        // Positions start..end (0-based) share ranks start+1..=end; their mean is (start+1+end)/2.
        let avg = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = avg;
        }
        start = end;
    }
}

/// Pearson's r on validated input. Mirrors scipy: centred vectors, clipped to [-1, 1], and
/// rounded to exactly +-1 for two observations.
pub(crate) fn pearson_core(x: &[f64], y: &[f64]) -> Stat {
    let n = x.len();
    if n < 2 {
        return Stat::undefined(reason::FEWER_THAN_2_PAIRS);
    }
    if is_constant(x) {
        return Stat::undefined(reason::CONSTANT_X);
    }
    if is_constant(y) {
        return Stat::undefined(reason::CONSTANT_Y);
    }
    let mx = x.iter().sum::<f64>() / n as f64;
    let my = y.iter().sum::<f64>() / n as f64;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (&a, &b) in x.iter().zip(y) {
        let (da, db) = (a - mx, b - my);
        sxy += da * db;
        sxx += da * da;
        syy += db * db;
    }
    let mut r = (sxy / (sxx.sqrt() * syy.sqrt())).clamp(-1.0, 1.0);
    if n == 2 {
        r = r.round();
    }
    Stat::finite_or(r, reason::NON_FINITE)
}

/// Pearson's product-moment correlation, as `scipy.stats.pearsonr(x, y).statistic`.
///
/// Undefined for fewer than 2 pairs (scipy raises) or a constant input (scipy returns NaN).
pub fn pearson(x: &[f64], y: &[f64]) -> Result<Stat, StatsError> {
    check_pair(x, y)?;
    Ok(pearson_core(x, y))
}

/// Spearman's rho with average ranks for ties, as `scipy.stats.spearmanr(x, y).statistic`.
///
/// Undefined for fewer than 2 pairs or a constant input (scipy returns NaN for both).
pub fn spearman(x: &[f64], y: &[f64]) -> Result<Stat, StatsError> {
    check_pair(x, y)?;
    if x.len() < 2 {
        return Ok(Stat::undefined(reason::FEWER_THAN_2_PAIRS));
    }
    if is_constant(x) {
        return Ok(Stat::undefined(reason::CONSTANT_X));
    }
    if is_constant(y) {
        return Ok(Stat::undefined(reason::CONSTANT_Y));
    }
    let mut order = Vec::with_capacity(x.len());
    let (mut rx, mut ry) = (Vec::new(), Vec::new());
    rank_average_into(x, &mut order, &mut rx);
    rank_average_into(y, &mut order, &mut ry);
    // spearmanr uses np.corrcoef on the ranks: no n == 2 rounding, but ranks of two distinct
    // values are (1, 2), so the result is exactly +-1 anyway.
    Ok(pearson_core(&rx, &ry))
}

/// Scratch buffers for [`kendall_core`], so bootstrap loops do not allocate per resample.
#[derive(Debug, Default, Clone)]
pub(crate) struct KendallScratch {
    perm: Vec<u32>,
    y_dense: Vec<u32>,
    seq: Vec<u32>,
    buf: Vec<u32>,
}

/// Number of pairs i < j with `a[i] > a[j]`, by bottom-up merge sort (sorts `a`).
fn count_inversions(a: &mut Vec<u32>, buf: &mut Vec<u32>) -> u64 {
    let n = a.len();
    buf.clear();
    buf.resize(n, 0);
    let mut inversions = 0u64;
    let mut width = 1;
    let (mut src, mut dst) = (a, buf);
    while width < n {
        let mut lo = 0;
        while lo < n {
            let mid = (lo + width).min(n);
            let hi = (lo + 2 * width).min(n);
            let (mut i, mut j, mut k) = (lo, mid, lo);
            while i < mid && j < hi {
                if src[j] < src[i] {
                    // src[j] is smaller than every remaining left element.
                    inversions += (mid - i) as u64;
                    dst[k] = src[j];
                    j += 1;
                } else {
                    dst[k] = src[i];
                    i += 1;
                }
                k += 1;
            }
            dst[k..k + (mid - i)].copy_from_slice(&src[i..mid]);
            k += mid - i;
            dst[k..k + (hi - j)].copy_from_slice(&src[j..hi]);
            lo = hi;
        }
        std::mem::swap(&mut src, &mut dst);
        width *= 2;
    }
    inversions
}

/// Kendall's tau-b on validated input, following scipy's algorithm: dense ranks, a lexicographic
/// sort, and `con - dis = tot - xtie - ytie + ntie - 2 * dis` in exact integer arithmetic.
pub(crate) fn kendall_core(x: &[f64], y: &[f64], s: &mut KendallScratch) -> Stat {
    let n = x.len();
    if n < 2 {
        return Stat::undefined(reason::FEWER_THAN_2_PAIRS);
    }
    // Dense ranks of y, and ties in y.
    s.perm.clear();
    s.perm.extend(0..n as u32);
    s.perm
        .sort_unstable_by(|&a, &b| cmp_f64(y[a as usize], y[b as usize]));
    s.y_dense.clear();
    s.y_dense.resize(n, 0);
    let mut ytie = 0u64;
    let mut dense = 0u32;
    let mut run = 1u64;
    for k in 0..n {
        let i = s.perm[k] as usize;
        if k > 0 {
            if y[i] == y[s.perm[k - 1] as usize] {
                run += 1;
            } else {
                ytie += run * (run - 1) / 2;
                run = 1;
                dense += 1;
            }
        }
        s.y_dense[i] = dense;
    }
    ytie += run * (run - 1) / 2;

    // Sort by (x, dense y); count ties in x and joint ties, then discordant pairs as inversions.
    let y_dense = &s.y_dense;
    s.perm.sort_unstable_by(|&a, &b| {
        cmp_f64(x[a as usize], x[b as usize]).then(y_dense[a as usize].cmp(&y_dense[b as usize]))
    });
    let (mut xtie, mut ntie) = (0u64, 0u64);
    let (mut xrun, mut jrun) = (1u64, 1u64);
    for k in 1..n {
        let (a, b) = (s.perm[k - 1] as usize, s.perm[k] as usize);
        if x[a] == x[b] {
            xrun += 1;
            if y_dense[a] == y_dense[b] {
                jrun += 1;
            } else {
                ntie += jrun * (jrun - 1) / 2;
                jrun = 1;
            }
        } else {
            xtie += xrun * (xrun - 1) / 2;
            ntie += jrun * (jrun - 1) / 2;
            xrun = 1;
            jrun = 1;
        }
    }
    xtie += xrun * (xrun - 1) / 2;
    ntie += jrun * (jrun - 1) / 2;

    s.seq.clear();
    s.seq.extend(s.perm.iter().map(|&i| y_dense[i as usize]));
    let dis = count_inversions(&mut s.seq, &mut s.buf);

    let tot = (n as u64) * (n as u64 - 1) / 2;
    if xtie == tot {
        return Stat::undefined(reason::CONSTANT_X);
    }
    if ytie == tot {
        return Stat::undefined(reason::CONSTANT_Y);
    }
    let con_minus_dis = tot as i128 - xtie as i128 - ytie as i128 + ntie as i128 - 2 * dis as i128;
    let tau = con_minus_dis as f64 / ((tot - xtie) as f64).sqrt() / ((tot - ytie) as f64).sqrt();
    Stat::finite_or(tau.clamp(-1.0, 1.0), reason::NON_FINITE)
}

/// Kendall's tau-b (ties corrected in both variables), as
/// `scipy.stats.kendalltau(x, y, variant="b").statistic`. O(n log n).
///
/// Undefined for fewer than 2 pairs or a constant input.
pub fn kendall_tau_b(x: &[f64], y: &[f64]) -> Result<Stat, StatsError> {
    check_pair(x, y)?;
    Ok(kendall_core(x, y, &mut KendallScratch::default()))
}

/// Mean absolute error, as `sklearn.metrics.mean_absolute_error(x, y)`. Undefined when empty.
pub fn mae(x: &[f64], y: &[f64]) -> Result<Stat, StatsError> {
    check_pair(x, y)?;
    if x.is_empty() {
        return Ok(Stat::undefined(reason::EMPTY));
    }
    let sum: f64 = x.iter().zip(y).map(|(a, b)| (a - b).abs()).sum();
    Ok(Stat::finite_or(sum / x.len() as f64, reason::NON_FINITE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: Result<Stat, StatsError>) -> f64 {
        s.unwrap().value().unwrap()
    }

    fn brute_kendall(x: &[f64], y: &[f64]) -> Option<f64> {
        let n = x.len();
        let (mut s, mut tx, mut ty) = (0i64, 0i64, 0i64);
        let mut tot = 0i64;
        for i in 0..n {
            for j in i + 1..n {
                tot += 1;
                let a = (x[i] - x[j]).signum() as i64 * i64::from(x[i] != x[j]);
                let b = (y[i] - y[j]).signum() as i64 * i64::from(y[i] != y[j]);
                s += a * b;
                tx += i64::from(a == 0);
                ty += i64::from(b == 0);
            }
        }
        if tx == tot || ty == tot {
            return None;
        }
        Some(s as f64 / (((tot - tx) * (tot - ty)) as f64).sqrt())
    }

    #[test]
    fn ranks_average_ties() {
        assert_eq!(
            rank_average(&[10.0, 20.0, 10.0, 30.0, 20.0, 20.0]).unwrap(),
            vec![1.5, 4.0, 1.5, 6.0, 4.0, 4.0]
        );
    }

    #[test]
    fn undefined_cases() {
        assert!(!pearson(&[1.0], &[2.0]).unwrap().is_defined());
        assert!(!spearman(&[], &[]).unwrap().is_defined());
        assert!(!kendall_tau_b(&[3.0], &[1.0]).unwrap().is_defined());
        assert_eq!(
            spearman(&[2.0, 2.0, 2.0], &[1.0, 2.0, 3.0]).unwrap(),
            Stat::undefined(reason::CONSTANT_X)
        );
        assert_eq!(
            pearson(&[1.0, 2.0, 3.0], &[5.0, 5.0, 5.0]).unwrap(),
            Stat::undefined(reason::CONSTANT_Y)
        );
        assert_eq!(
            kendall_tau_b(&[1.0, 2.0], &[4.0, 4.0]).unwrap(),
            Stat::undefined(reason::CONSTANT_Y)
        );
        assert!(!mae(&[], &[]).unwrap().is_defined());
    }

    #[test]
    fn errors_on_bad_input() {
        assert!(matches!(
            pearson(&[1.0, 2.0], &[1.0]),
            Err(StatsError::LengthMismatch { .. })
        ));
        assert!(matches!(
            spearman(&[1.0, f64::NAN], &[1.0, 2.0]),
            Err(StatsError::NonFinite { index: 1 })
        ));
    }

    #[test]
    fn two_points_are_exactly_plus_minus_one() {
        assert_eq!(v(pearson(&[0.1, 0.7], &[3.0, -2.0])), -1.0);
        assert_eq!(v(spearman(&[0.1, 0.7], &[3.0, 4.0])), 1.0);
        assert_eq!(v(kendall_tau_b(&[0.1, 0.7], &[3.0, 4.0])), 1.0);
    }

    #[test]
    fn kendall_matches_brute_force_with_ties() {
        let mut state = 12345u64;
        let mut next = |m: u64| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) % m) as f64
        };
        for n in [2usize, 3, 5, 17, 64, 100] {
            for _ in 0..20 {
                let x: Vec<f64> = (0..n).map(|_| next(5)).collect();
                let y: Vec<f64> = (0..n).map(|_| next(4)).collect();
                let got = kendall_tau_b(&x, &y).unwrap().value();
                let want = brute_kendall(&x, &y);
                match (got, want) {
                    (Some(g), Some(w)) => assert!((g - w).abs() < 1e-12, "{g} vs {w}"),
                    (None, None) => {}
                    other => panic!("mismatch {other:?} for {x:?} {y:?}"),
                }
            }
        }
    }

    #[test]
    fn inversions_counted() {
        let mut a = vec![3, 1, 2, 5, 4, 0];
        let mut buf = Vec::new();
        // (3,1) (3,2) (3,0) (1,0) (2,0) (5,4) (5,0) (4,0)
        assert_eq!(count_inversions(&mut a, &mut buf), 8);
    }

    #[test]
    fn mae_simple() {
        assert_eq!(v(mae(&[1.0, 2.0, 3.0], &[2.0, 2.0, 1.0])), 1.0);
    }
}
