//! Helpers that turn `raters x units` rating tables with missing entries into the paired vectors
//! the statistics take: consensus scores, pairwise-complete pairs, averages over raters and pairs.

use crate::error::StatsError;
use crate::stat::{Averaged, Stat};

fn check_rows(rows: &[Vec<Option<f64>>], n_units: usize) -> Result<(), StatsError> {
    for (row, r) in rows.iter().enumerate() {
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
    Ok(())
}

/// Per-unit mean of the raters who rated it (`None` where nobody did): the expert consensus.
pub fn consensus(raters: &[Vec<Option<f64>>]) -> Result<Vec<Option<f64>>, StatsError> {
    let n_units = raters.first().map_or(0, Vec::len);
    check_rows(raters, n_units)?;
    Ok((0..n_units)
        .map(|u| {
            let (sum, n) = raters
                .iter()
                .filter_map(|r| r[u])
                .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
            (n > 0).then(|| sum / n as f64)
        })
        .collect())
}

/// The units both `x` and `y` rated, with their scores (pairwise-complete deletion).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Paired {
    /// Indices of the units kept, ascending.
    pub units: Vec<usize>,
    /// `x` scores on those units.
    pub x: Vec<f64>,
    /// `y` scores on those units.
    pub y: Vec<f64>,
}

impl Paired {
    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.units.len()
    }

    /// Whether there is no pair.
    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }
}

/// Keeps the units where both `x` and `y` are present.
pub fn paired(x: &[Option<f64>], y: &[Option<f64>]) -> Result<Paired, StatsError> {
    if x.len() != y.len() {
        return Err(StatsError::LengthMismatch {
            left: x.len(),
            right: y.len(),
        });
    }
    let mut out = Paired::default();
    for (u, (a, b)) in x.iter().zip(y).enumerate() {
        if let (Some(a), Some(b)) = (a, b) {
            if !a.is_finite() || !b.is_finite() {
                return Err(StatsError::NonFinite { index: u });
            }
            out.units.push(u);
            out.x.push(*a);
            out.y.push(*b);
        }
    }
    Ok(out)
}

/// `f(reference, rater)` on the units both rated, for each rater, averaged over raters
/// (undefined parts skipped): e.g. quadratic-weighted kappa of the judge against each expert.
pub fn mean_against_each<F>(
    reference: &[Option<f64>],
    raters: &[Vec<Option<f64>>],
    mut f: F,
) -> Result<Averaged, StatsError>
where
    F: FnMut(&[f64], &[f64]) -> Result<Stat, StatsError>,
{
    let parts = raters
        .iter()
        .map(|r| {
            let p = paired(reference, r)?;
            f(&p.x, &p.y)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Averaged::of(parts))
}

/// `f(rater_i, rater_j)` on the units both rated, for every pair i < j (in that order), averaged
/// over pairs (undefined parts skipped): e.g. Spearman averaged over expert pairs.
pub fn mean_over_rater_pairs<F>(
    raters: &[Vec<Option<f64>>],
    mut f: F,
) -> Result<Averaged, StatsError>
where
    F: FnMut(&[f64], &[f64]) -> Result<Stat, StatsError>,
{
    let mut parts = Vec::new();
    for i in 0..raters.len() {
        for j in i + 1..raters.len() {
            let p = paired(&raters[i], &raters[j])?;
            parts.push(f(&p.x, &p.y)?);
        }
    }
    Ok(Averaged::of(parts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlation::spearman;

    #[test]
    fn consensus_ignores_missing() {
        let raters = vec![
            vec![Some(1.0), None, None],
            vec![Some(3.0), Some(4.0), None],
        ];
        assert_eq!(
            consensus(&raters).unwrap(),
            vec![Some(2.0), Some(4.0), None]
        );
        assert!(consensus(&[vec![Some(1.0)], vec![]]).is_err());
    }

    #[test]
    fn pairs_and_averages() {
        let a = vec![Some(1.0), Some(2.0), None, Some(4.0)];
        let b = vec![Some(1.0), None, Some(3.0), Some(2.0)];
        let p = paired(&a, &b).unwrap();
        assert_eq!(p.units, vec![0, 3]);
        assert_eq!(p.len(), 2);
        let c = vec![Some(2.0), Some(2.0), Some(2.0), Some(2.0)];
        let avg = mean_over_rater_pairs(&[a, b, c], spearman).unwrap();
        // (a,b): pairs (1,1) and (4,2), rho = 1; (a,c) and (b,c): c constant -> undefined.
        assert_eq!(avg.parts.len(), 3);
        assert_eq!(avg.n_defined, 1);
        assert_eq!(avg.mean, Stat::Value(1.0));
    }
}
