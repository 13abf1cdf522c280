//! Krippendorff's alpha with missing ratings, as the PyPI package `krippendorff` (0.9.0):
//! `krippendorff.alpha(reliability_data=data, level_of_measurement=level)`.
//!
//! Definition (the package's): the value domain is the sorted set of distinct observed values; the
//! coincidence matrix `o` sums, over units with `m_u >= 2` ratings, `n_uc * (n_uk - [c == k]) /
//! (m_u - 1)`; `n_v` are its column sums; `e = (n_c n_k - [c == k] n_c) / (n - 1)`; and
//! `alpha = 1 - sum(o * d) / sum(e * d)`. The ordinal distance is
//! `d(c, k) = (sum_{g=c..=k} n_g - (n_c + n_k) / 2)^2` over that domain. Values that are observed
//! only in single-rated units are in the domain but have `n_g = 0`, and values that are never
//! observed would contribute `n_g = 0` too, so passing the full scale (e.g. 0..=6) as
//! `value_domain` would give the same alpha: the domain choice does not change the number.

use serde::{Deserialize, Serialize};

use crate::correlation::cmp_f64;
use crate::error::StatsError;
use crate::stat::{Stat, reason};

/// Level of measurement, which picks the distance between two values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Any two different values disagree equally.
    Nominal,
    /// Distance grows with how many (pairable) ratings lie between the two values.
    Ordinal,
    /// Squared difference of the values.
    Interval,
}

/// Krippendorff's alpha over `data[rater][unit]`, `None` meaning "not rated".
///
/// Undefined where the package raises (fewer than two distinct values; no unit with two ratings)
/// or returns NaN (all pairable ratings equal). Errors on ragged rows or a non-finite rating
/// (the package reads NaN as missing; here missing must be `None`).
pub fn krippendorff_alpha(data: &[Vec<Option<f64>>], level: Level) -> Result<Stat, StatsError> {
    let n_units = data.first().map_or(0, Vec::len);
    for (row, r) in data.iter().enumerate() {
        if r.len() != n_units {
            return Err(StatsError::Ragged {
                row,
                len: r.len(),
                expected: n_units,
            });
        }
        if let Some(col) = r.iter().position(|v| v.is_some_and(|v| !v.is_finite())) {
            return Err(StatsError::NonFinite {
                index: row * n_units + col,
            });
        }
    }
    let mut domain: Vec<f64> = data.iter().flatten().flatten().copied().collect();
    domain.sort_unstable_by(|a, b| cmp_f64(*a, *b));
    domain.dedup_by(|a, b| a == b);
    let v = domain.len();
    if v <= 1 {
        return Ok(Stat::undefined(reason::ALPHA_ONE_VALUE));
    }
    let index_of = |x: f64| domain.binary_search_by(|d| cmp_f64(*d, x)).ok();

    // Coincidence matrix, accumulated unit by unit over the distinct values each unit received.
    let mut o = vec![0.0f64; v * v];
    let mut unit_counts: Vec<(usize, f64)> = Vec::new();
    let mut any_pairable = false;
    for u in 0..n_units {
        unit_counts.clear();
        for r in data {
            if let Some(idx) = r[u].and_then(index_of) {
                match unit_counts.iter_mut().find(|(i, _)| *i == idx) {
                    Some((_, c)) => *c += 1.0,
                    None => unit_counts.push((idx, 1.0)),
                }
            }
        }
        let m_u: f64 = unit_counts.iter().map(|(_, c)| c).sum();
        if m_u < 2.0 {
            continue;
        }
        any_pairable = true;
        for &(c, n_c) in &unit_counts {
            for &(k, n_k) in &unit_counts {
                let pairs = if c == k { n_c * (n_k - 1.0) } else { n_c * n_k };
                o[c * v + k] += pairs / (m_u - 1.0);
            }
        }
    }
    if !any_pairable {
        return Ok(Stat::undefined(reason::ALPHA_NO_PAIRABLE_UNIT));
    }
    let n_v: Vec<f64> = (0..v).map(|k| (0..v).map(|c| o[c * v + k]).sum()).collect();
    let n: f64 = n_v.iter().sum();

    // Prefix sums of n_v for the ordinal metric: sum_{g=i..=j} n_g = cum[j + 1] - cum[i].
    let mut cum = vec![0.0; v + 1];
    for (i, nv) in n_v.iter().enumerate() {
        cum[i + 1] = cum[i] + nv;
    }
    let distance = |c: usize, k: usize| -> f64 {
        match level {
            Level::Nominal => f64::from(u8::from(c != k)),
            Level::Interval => {
                let d = domain[c] - domain[k];
                d * d
            }
            Level::Ordinal => {
                let (lo, hi) = (c.min(k), c.max(k));
                let s = cum[hi + 1] - cum[lo] - (n_v[lo] + n_v[hi]) / 2.0;
                s * s
            }
        }
    };
    let (mut d_o, mut d_e) = (0.0, 0.0);
    for c in 0..v {
        for k in 0..v {
            let d = distance(c, k);
            let diag = if c == k { n_v[c] } else { 0.0 };
            d_o += o[c * v + k] * d;
            d_e += (n_v[c] * n_v[k] - diag) / (n - 1.0) * d;
        }
    }
    if d_e == 0.0 {
        return Ok(Stat::undefined(reason::ALPHA_NO_EXPECTED_DISAGREEMENT));
    }
    Ok(Stat::finite_or(1.0 - d_o / d_e, reason::NON_FINITE))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAN: Option<f64> = None;

    fn row(v: &[f64]) -> Vec<Option<f64>> {
        v.iter()
            .map(|&x| if x.is_nan() { None } else { Some(x) })
            .collect()
    }

    fn alpha(data: &[Vec<Option<f64>>], level: Level) -> f64 {
        krippendorff_alpha(data, level).unwrap().value().unwrap()
    }

    #[test]
    fn package_docstring_examples() {
        let n = f64::NAN;
        let data = vec![
            row(&[n, n, n, n, n, 3., 4., 1., 2., 1., 1., 3., 3., n, 3.]),
            row(&[1., n, 2., 1., 3., 3., 4., 3., n, n, n, n, n, n, n]),
            row(&[n, n, 2., 1., 3., 4., 4., n, 2., 1., 1., 3., 3., n, 4.]),
        ];
        assert!((alpha(&data, Level::Nominal) - 0.691358).abs() < 5e-7);
        assert!((alpha(&data, Level::Interval) - 0.810845).abs() < 5e-7);
        let data2 = vec![
            row(&[1., 2., 3., 3., 2., 1., 4., 1., 2., n, n, n]),
            row(&[1., 2., 3., 3., 2., 2., 4., 1., 2., 5., n, 3.]),
            row(&[n, 3., 3., 3., 2., 3., 4., 2., 2., 5., 1., n]),
            row(&[1., 2., 3., 3., 2., 4., 4., 1., 2., 5., 1., n]),
        ];
        assert!((alpha(&data2, Level::Ordinal) - 0.815).abs() < 5e-4);
    }

    #[test]
    fn undefined_cases() {
        let one_value = vec![vec![Some(2.0), Some(2.0)], vec![Some(2.0), NAN]];
        assert_eq!(
            krippendorff_alpha(&one_value, Level::Ordinal).unwrap(),
            Stat::undefined(reason::ALPHA_ONE_VALUE)
        );
        let no_pairs = vec![vec![Some(1.0), NAN], vec![NAN, Some(2.0)]];
        assert_eq!(
            krippendorff_alpha(&no_pairs, Level::Interval).unwrap(),
            Stat::undefined(reason::ALPHA_NO_PAIRABLE_UNIT)
        );
        // Pairable ratings all equal; a second value only in a single-rated unit.
        let flat = vec![vec![Some(1.0), Some(5.0)], vec![Some(1.0), NAN]];
        assert_eq!(
            krippendorff_alpha(&flat, Level::Nominal).unwrap(),
            Stat::undefined(reason::ALPHA_NO_EXPECTED_DISAGREEMENT)
        );
        assert!(
            krippendorff_alpha(&[], Level::Nominal)
                .unwrap()
                .reason()
                .is_some()
        );
    }

    #[test]
    fn errors() {
        assert!(matches!(
            krippendorff_alpha(&[vec![Some(1.0)], vec![]], Level::Nominal),
            Err(StatsError::Ragged { row: 1, .. })
        ));
        assert!(matches!(
            krippendorff_alpha(&[vec![Some(f64::NAN)]], Level::Nominal),
            Err(StatsError::NonFinite { index: 0 })
        ));
    }
}
