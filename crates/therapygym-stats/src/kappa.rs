//! Cohen's kappa, unweighted and weighted, as `sklearn.metrics.cohen_kappa_score`.

use serde::{Deserialize, Serialize};

use crate::error::StatsError;
use crate::stat::{Stat, reason};

/// Disagreement weights for [`cohen_kappa_score`] (sklearn's `weights=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KappaWeights {
    /// Plain Cohen's kappa: every disagreement costs 1 (`weights=None`).
    Unweighted,
    /// |i - j| (`weights="linear"`).
    Linear,
    /// (i - j)^2 (`weights="quadratic"`).
    Quadratic,
}

/// Cohen's kappa between two raters, as
/// `sklearn.metrics.cohen_kappa_score(a, b, labels=labels, weights=weights)`.
///
/// As in sklearn, the weights use the *position* of a label in `labels` (sorted union of `a` and
/// `b` when `labels` is `None`), not its numeric value, and pairs where either rating is not in
/// `labels` are dropped. Undefined where sklearn returns NaN (`replace_undefined_by`) or raises
/// because no rating of `a` is among the labels.
pub fn cohen_kappa_score(
    a: &[i64],
    b: &[i64],
    labels: Option<&[i64]>,
    weights: KappaWeights,
) -> Result<Stat, StatsError> {
    if a.len() != b.len() {
        return Err(StatsError::LengthMismatch {
            left: a.len(),
            right: b.len(),
        });
    }
    let labels: Vec<i64> = match labels {
        Some(l) => {
            let mut sorted = l.to_vec();
            sorted.sort_unstable();
            if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
                return Err(StatsError::DuplicateLabel(w[0]));
            }
            l.to_vec()
        }
        None => {
            let mut u: Vec<i64> = a.iter().chain(b).copied().collect();
            u.sort_unstable();
            u.dedup();
            u
        }
    };
    let k = labels.len();
    let index_of = |v: i64| labels.iter().position(|&l| l == v);
    if !a.iter().any(|&v| index_of(v).is_some()) {
        return Ok(Stat::undefined(reason::KAPPA_NO_LABEL_IN_Y1));
    }
    // confusion[i][j]: a (rows, sklearn's y_true) has label i, b has label j.
    let mut confusion = vec![0.0f64; k * k];
    for (&va, &vb) in a.iter().zip(b) {
        if let (Some(i), Some(j)) = (index_of(va), index_of(vb)) {
            confusion[i * k + j] += 1.0;
        }
    }
    let total: f64 = confusion.iter().sum();
    if total == 0.0 {
        return Ok(Stat::undefined(reason::KAPPA_NO_PAIRS));
    }
    let col: Vec<f64> = (0..k)
        .map(|j| (0..k).map(|i| confusion[i * k + j]).sum())
        .collect();
    let row: Vec<f64> = (0..k)
        .map(|i| confusion[i * k..(i + 1) * k].iter().sum())
        .collect();
    let weight = |i: usize, j: usize| -> f64 {
        let d = i.abs_diff(j) as f64;
        match weights {
            KappaWeights::Unweighted => f64::from(u8::from(i != j)),
            KappaWeights::Linear => d,
            KappaWeights::Quadratic => d * d,
        }
    };
    let (mut observed, mut expected) = (0.0, 0.0);
    for i in 0..k {
        for j in 0..k {
            let w = weight(i, j);
            observed += w * confusion[i * k + j];
            // sklearn: expected = outer(sum0, sum1) / total, sum0 = column sums.
            expected += w * (col[i] * row[j] / total);
        }
    }
    if expected == 0.0 {
        return Ok(Stat::undefined(reason::KAPPA_NO_CHANCE_DISAGREEMENT));
    }
    Ok(Stat::finite_or(
        1.0 - observed / expected,
        reason::NON_FINITE,
    ))
}

/// Quadratic-weighted kappa, as
/// `sklearn.metrics.cohen_kappa_score(a, b, weights="quadratic", labels=labels)`.
pub fn quadratic_weighted_kappa(a: &[i64], b: &[i64], labels: &[i64]) -> Result<Stat, StatsError> {
    cohen_kappa_score(a, b, Some(labels), KappaWeights::Quadratic)
}

/// Converts integral scores (e.g. 0..=6 stored as f64) to labels for the kappa functions.
pub fn scores_to_labels(scores: &[f64]) -> Result<Vec<i64>, StatsError> {
    scores
        .iter()
        .enumerate()
        .map(|(index, &value)| {
            if value.is_finite() && value.fract() == 0.0 && value.abs() < 9.0e15 {
                Ok(value as i64)
            } else {
                Err(StatsError::NotALabel { index, value })
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sklearn_docstring_example() {
        // cohen_kappa_score(["negative","positive","negative","neutral","positive"],
        //                   ["negative","positive","negative","neutral","negative"]) == 0.6875
        let a = [0, 2, 0, 1, 2];
        let b = [0, 2, 0, 1, 0];
        let k = cohen_kappa_score(&a, &b, None, KappaWeights::Unweighted).unwrap();
        assert!((k.value().unwrap() - 0.6875).abs() < 1e-12);
    }

    #[test]
    fn single_shared_label_is_undefined() {
        let k = quadratic_weighted_kappa(&[3, 3, 3], &[3, 3, 3], &[0, 1, 2, 3, 4, 5, 6]).unwrap();
        assert_eq!(k, Stat::undefined(reason::KAPPA_NO_CHANCE_DISAGREEMENT));
    }

    #[test]
    fn perfect_and_empty() {
        let labels = [0, 1, 2, 3, 4, 5, 6];
        let k = quadratic_weighted_kappa(&[0, 3, 6], &[0, 3, 6], &labels).unwrap();
        assert_eq!(k, Stat::Value(1.0));
        let e = quadratic_weighted_kappa(&[], &[], &labels).unwrap();
        assert!(!e.is_defined());
        assert!(matches!(
            quadratic_weighted_kappa(&[1], &[1], &[1, 1]),
            Err(StatsError::DuplicateLabel(1))
        ));
    }

    #[test]
    fn labels_from_scores() {
        assert_eq!(scores_to_labels(&[0.0, 6.0]).unwrap(), vec![0, 6]);
        assert!(scores_to_labels(&[2.5]).is_err());
    }
}
