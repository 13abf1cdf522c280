//! Intraclass correlations from the two-way ANOVA of a complete `units x raters` matrix, as
//! `pingouin.intraclass_corr` (which drops incomplete units with `nan_policy="omit"`; use
//! [`complete_units`] for that step).

use serde::{Deserialize, Serialize};

use crate::error::StatsError;
use crate::stat::{Stat, reason};

/// Mean squares of the two-way ANOVA without replication.
#[derive(Debug, Clone, Copy, PartialEq)]
struct MeanSquares {
    n: f64,
    k: f64,
    /// Between units (rows).
    msb: f64,
    /// Between raters (columns).
    msj: f64,
    /// Residual.
    mse: f64,
}

fn mean_squares(matrix: &[Vec<f64>]) -> Result<Result<MeanSquares, Stat>, StatsError> {
    let n = matrix.len();
    let k = matrix.first().map_or(0, Vec::len);
    for (row, r) in matrix.iter().enumerate() {
        if r.len() != k {
            return Err(StatsError::Ragged {
                row,
                len: r.len(),
                expected: k,
            });
        }
        if let Some(col) = r.iter().position(|v| !v.is_finite()) {
            return Err(StatsError::NonFinite {
                index: row * k + col,
            });
        }
    }
    if n < 2 {
        return Ok(Err(Stat::undefined(reason::ICC_FEWER_THAN_2_UNITS)));
    }
    if k < 2 {
        return Ok(Err(Stat::undefined(reason::ICC_FEWER_THAN_2_RATERS)));
    }
    if n * k < 5 {
        return Ok(Err(Stat::undefined(reason::ICC_FEWER_THAN_5_RATINGS)));
    }
    let first = matrix[0][0];
    if matrix.iter().flatten().all(|&v| v == first) {
        return Ok(Err(Stat::undefined(reason::ICC_CONSTANT)));
    }
    let (nf, kf) = (n as f64, k as f64);
    let grand = matrix.iter().flatten().sum::<f64>() / (nf * kf);
    let row_means: Vec<f64> = matrix.iter().map(|r| r.iter().sum::<f64>() / kf).collect();
    let col_means: Vec<f64> = (0..k)
        .map(|j| matrix.iter().map(|r| r[j]).sum::<f64>() / nf)
        .collect();
    let ss_rows = kf * row_means.iter().map(|m| (m - grand).powi(2)).sum::<f64>();
    let ss_cols = nf * col_means.iter().map(|m| (m - grand).powi(2)).sum::<f64>();
    let mut ss_err = 0.0;
    for (r, rm) in matrix.iter().zip(&row_means) {
        for (x, cm) in r.iter().zip(&col_means) {
            ss_err += (x - rm - cm + grand).powi(2);
        }
    }
    Ok(Ok(MeanSquares {
        n: nf,
        k: kf,
        msb: ss_rows / (nf - 1.0),
        msj: ss_cols / (kf - 1.0),
        mse: ss_err / ((nf - 1.0) * (kf - 1.0)),
    }))
}

fn ratio(num: f64, den: f64) -> Stat {
    if den == 0.0 {
        Stat::undefined(reason::ICC_ZERO_DENOMINATOR)
    } else {
        Stat::finite_or(num / den, reason::NON_FINITE)
    }
}

/// ICC(2,1) = ICC(A,1): two-way random effects, absolute agreement, single rater. This is
/// pingouin's row `"ICC2"` (named `"ICC(A,1)"` since pingouin 0.7). `matrix[unit][rater]`, complete.
///
/// Absolute agreement is what judge validation needs: a rater who is consistently one point
/// harsher lowers it. Undefined with fewer than 2 units or raters, fewer than 5 ratings in all
/// (pingouin's ANOVA asserts at least 5, so e.g. 2 units x 2 raters is undefined there too), or
/// constant ratings.
pub fn icc2_1(matrix: &[Vec<f64>]) -> Result<Stat, StatsError> {
    Ok(match mean_squares(matrix)? {
        Ok(m) => ratio(
            m.msb - m.mse,
            m.msb + (m.k - 1.0) * m.mse + m.k * (m.msj - m.mse) / m.n,
        ),
        Err(undefined) => undefined,
    })
}

/// ICC(3,1) = ICC(C,1): two-way mixed, consistency, single rater (pingouin `"ICC3"` /
/// `"ICC(C,1)"`). Ignores constant offsets between raters; compare with [`icc2_1`] to see bias.
pub fn icc3_1(matrix: &[Vec<f64>]) -> Result<Stat, StatsError> {
    Ok(match mean_squares(matrix)? {
        Ok(m) => ratio(m.msb - m.mse, m.msb + (m.k - 1.0) * m.mse),
        Err(undefined) => undefined,
    })
}

/// Both single-rater ICCs plus how many complete units they used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IccResult {
    /// Units rated by every rater (the rows that entered the ANOVA).
    pub n_units: usize,
    /// Number of raters.
    pub n_raters: usize,
    /// [`icc2_1`].
    pub icc2_1: Stat,
    /// [`icc3_1`].
    pub icc3_1: Stat,
}

/// From `raters[rater][unit]` with missing ratings, keeps the units every rater rated and returns
/// them as a `units x raters` matrix: pingouin's listwise deletion (`nan_policy="omit"`).
pub fn complete_units(raters: &[Vec<Option<f64>>]) -> Result<Vec<Vec<f64>>, StatsError> {
    let n_units = raters.first().map_or(0, Vec::len);
    if let Some((row, r)) = raters.iter().enumerate().find(|(_, r)| r.len() != n_units) {
        return Err(StatsError::Ragged {
            row,
            len: r.len(),
            expected: n_units,
        });
    }
    Ok((0..n_units)
        .filter_map(|u| raters.iter().map(|r| r[u]).collect::<Option<Vec<f64>>>())
        .collect())
}

/// ICC(2,1) and ICC(3,1) over the units every rater rated, from `raters[rater][unit]`.
pub fn icc_complete(raters: &[Vec<Option<f64>>]) -> Result<IccResult, StatsError> {
    let m = complete_units(raters)?;
    Ok(IccResult {
        n_units: m.len(),
        n_raters: raters.len(),
        icc2_1: icc2_1(&m)?,
        icc3_1: icc3_1(&m)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// pingouin's docstring: dataset "icc" (8 wines x 4 judges) gives ICC(A,1) 0.728, ICC(C,1) 0.729.
    #[test]
    fn pingouin_docstring_wines() {
        let m = vec![
            vec![1.0, 2.0, 0.0, 1.0],
            vec![1.0, 3.0, 3.0, 2.0],
            vec![3.0, 8.0, 1.0, 4.0],
            vec![6.0, 4.0, 3.0, 3.0],
            vec![6.0, 5.0, 5.0, 6.0],
            vec![7.0, 5.0, 6.0, 2.0],
            vec![8.0, 7.0, 7.0, 9.0],
            vec![9.0, 9.0, 9.0, 8.0],
        ];
        let a = icc2_1(&m).unwrap().value().unwrap();
        let c = icc3_1(&m).unwrap().value().unwrap();
        assert!((a - 0.728).abs() < 5e-4, "{a}");
        assert!((c - 0.729).abs() < 5e-4, "{c}");
    }

    #[test]
    fn perfect_agreement_is_one() {
        let m = vec![vec![1.0, 1.0], vec![4.0, 4.0], vec![2.0, 2.0]];
        assert!((icc2_1(&m).unwrap().value().unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn undefined_and_errors() {
        assert_eq!(
            icc2_1(&[vec![1.0, 2.0]]).unwrap(),
            Stat::undefined(reason::ICC_FEWER_THAN_2_UNITS)
        );
        assert_eq!(
            icc3_1(&[vec![1.0], vec![2.0]]).unwrap(),
            Stat::undefined(reason::ICC_FEWER_THAN_2_RATERS)
        );
        assert_eq!(
            icc2_1(&[vec![3.0, 3.0], vec![3.0, 3.0], vec![3.0, 3.0]]).unwrap(),
            Stat::undefined(reason::ICC_CONSTANT)
        );
        assert_eq!(
            icc2_1(&[vec![1.0, 2.0], vec![3.0, 5.0]]).unwrap(),
            Stat::undefined(reason::ICC_FEWER_THAN_5_RATINGS)
        );
        assert!(icc2_1(&[vec![1.0, 2.0], vec![1.0]]).is_err());
    }

    #[test]
    fn listwise_deletion() {
        let raters = vec![
            vec![Some(1.0), None, Some(3.0)],
            vec![Some(2.0), Some(2.0), Some(4.0)],
        ];
        assert_eq!(
            complete_units(&raters).unwrap(),
            vec![vec![1.0, 2.0], vec![3.0, 4.0]]
        );
    }
}
