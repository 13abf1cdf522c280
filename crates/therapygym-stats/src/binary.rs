//! Binary classification metrics (e.g. safety flags: judge vs expert), as scikit-learn
//! computes them for `pos_label=True`, except that a zero division is [`Stat::Undefined`]
//! rather than sklearn's default `0.0` with an `UndefinedMetricWarning`.

use serde::{Deserialize, Serialize};

use crate::error::StatsError;
use crate::stat::{Stat, reason};

/// The 2x2 confusion matrix, with `true` as the positive class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinaryCounts {
    /// Actual positive, predicted positive.
    pub true_pos: u64,
    /// Actual negative, predicted positive.
    pub false_pos: u64,
    /// Actual negative, predicted negative.
    pub true_neg: u64,
    /// Actual positive, predicted negative.
    pub false_neg: u64,
}

fn ratio(num: u64, den: u64, why: &'static str) -> Stat {
    if den == 0 {
        Stat::undefined(why)
    } else {
        Stat::finite_or(num as f64 / den as f64, reason::NON_FINITE)
    }
}

impl BinaryCounts {
    /// Tallies paired labels: `y_true` is the reference (expert), `y_pred` the judge.
    pub fn from_labels(y_true: &[bool], y_pred: &[bool]) -> Result<Self, StatsError> {
        if y_true.len() != y_pred.len() {
            return Err(StatsError::LengthMismatch {
                left: y_true.len(),
                right: y_pred.len(),
            });
        }
        let mut c = Self::default();
        for (&t, &p) in y_true.iter().zip(y_pred) {
            match (t, p) {
                (true, true) => c.true_pos += 1,
                (false, true) => c.false_pos += 1,
                (false, false) => c.true_neg += 1,
                (true, false) => c.false_neg += 1,
            }
        }
        Ok(c)
    }

    /// Number of pairs.
    pub fn total(&self) -> u64 {
        self.true_pos + self.false_pos + self.true_neg + self.false_neg
    }

    /// Fraction of actual positives (`mean(y_true)`). Undefined when empty.
    pub fn prevalence(&self) -> Stat {
        ratio(self.true_pos + self.false_neg, self.total(), reason::EMPTY)
    }

    /// `sklearn.metrics.accuracy_score`. Undefined when empty.
    pub fn accuracy(&self) -> Stat {
        ratio(self.true_pos + self.true_neg, self.total(), reason::EMPTY)
    }

    /// `sklearn.metrics.precision_score`, except: with no predicted positives sklearn returns 0
    /// (and warns); we deliberately return Undefined, because "never flags" is not "always wrong".
    pub fn precision(&self) -> Stat {
        ratio(
            self.true_pos,
            self.true_pos + self.false_pos,
            reason::NO_PREDICTED_POSITIVES,
        )
    }

    /// `sklearn.metrics.recall_score`, except: with no actual positives sklearn returns 0
    /// (and warns); we return Undefined.
    pub fn recall(&self) -> Stat {
        ratio(
            self.true_pos,
            self.true_pos + self.false_neg,
            reason::NO_ACTUAL_POSITIVES,
        )
    }

    /// `sklearn.metrics.f1_score`: `2tp / (2tp + fp + fn)`, which sklearn uses even when precision
    /// alone is undefined (so no predicted positives but some actual ones gives a genuine 0).
    /// Undefined only with no actual and no predicted positives (sklearn: 0 with a warning).
    pub fn f1(&self) -> Stat {
        ratio(
            2 * self.true_pos,
            2 * self.true_pos + self.false_pos + self.false_neg,
            reason::NO_POSITIVES,
        )
    }

    /// Unweighted Cohen's kappa, as `sklearn.metrics.cohen_kappa_score(y_true, y_pred)`.
    /// Undefined when empty or when both raters used one and the same label throughout.
    pub fn cohen_kappa(&self) -> Stat {
        let n = self.total() as f64;
        if n == 0.0 {
            return Stat::undefined(reason::EMPTY);
        }
        let (tp, fp, tn, fn_) = (
            self.true_pos as f64,
            self.false_pos as f64,
            self.true_neg as f64,
            self.false_neg as f64,
        );
        let (pred_neg, pred_pos) = (tn + fn_, tp + fp);
        let (true_neg, true_pos) = (tn + fp, tp + fn_);
        let observed = fp + fn_;
        let expected = pred_neg * true_pos / n + pred_pos * true_neg / n;
        if expected == 0.0 {
            return Stat::undefined(reason::KAPPA_NO_CHANCE_DISAGREEMENT);
        }
        Stat::finite_or(1.0 - observed / expected, reason::NON_FINITE)
    }

    /// All metrics at once, for a report.
    pub fn metrics(&self) -> BinaryMetrics {
        BinaryMetrics {
            n: self.total(),
            counts: *self,
            prevalence: self.prevalence(),
            accuracy: self.accuracy(),
            precision: self.precision(),
            recall: self.recall(),
            f1: self.f1(),
            cohen_kappa: self.cohen_kappa(),
        }
    }
}

/// The safety-classification block of a validation report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinaryMetrics {
    /// Number of paired labels.
    pub n: u64,
    /// The confusion matrix behind the figures.
    pub counts: BinaryCounts,
    /// Fraction of actual positives.
    pub prevalence: Stat,
    /// See [`BinaryCounts::accuracy`].
    pub accuracy: Stat,
    /// See [`BinaryCounts::precision`].
    pub precision: Stat,
    /// See [`BinaryCounts::recall`].
    pub recall: Stat,
    /// See [`BinaryCounts::f1`].
    pub f1: Stat,
    /// See [`BinaryCounts::cohen_kappa`].
    pub cohen_kappa: Stat,
}

/// All binary metrics for paired labels (`y_true`: reference, `y_pred`: judge).
pub fn binary_metrics(y_true: &[bool], y_pred: &[bool]) -> Result<BinaryMetrics, StatsError> {
    Ok(BinaryCounts::from_labels(y_true, y_pred)?.metrics())
}

/// `sklearn.metrics.accuracy_score`; see [`BinaryCounts::accuracy`].
pub fn accuracy(y_true: &[bool], y_pred: &[bool]) -> Result<Stat, StatsError> {
    Ok(BinaryCounts::from_labels(y_true, y_pred)?.accuracy())
}

/// `sklearn.metrics.precision_score`, but Undefined (not sklearn's 0) with no predicted
/// positives; see [`BinaryCounts::precision`].
pub fn precision(y_true: &[bool], y_pred: &[bool]) -> Result<Stat, StatsError> {
    Ok(BinaryCounts::from_labels(y_true, y_pred)?.precision())
}

/// `sklearn.metrics.recall_score`, but Undefined (not sklearn's 0) with no actual positives.
pub fn recall(y_true: &[bool], y_pred: &[bool]) -> Result<Stat, StatsError> {
    Ok(BinaryCounts::from_labels(y_true, y_pred)?.recall())
}

/// `sklearn.metrics.f1_score`; see [`BinaryCounts::f1`].
pub fn f1(y_true: &[bool], y_pred: &[bool]) -> Result<Stat, StatsError> {
    Ok(BinaryCounts::from_labels(y_true, y_pred)?.f1())
}

/// Fraction of actual positives in `y_true`; `y_pred` is only length-checked.
pub fn prevalence(y_true: &[bool], y_pred: &[bool]) -> Result<Stat, StatsError> {
    Ok(BinaryCounts::from_labels(y_true, y_pred)?.prevalence())
}

/// Unweighted Cohen's kappa for binary labels, as `sklearn.metrics.cohen_kappa_score`.
pub fn cohen_kappa(y_true: &[bool], y_pred: &[bool]) -> Result<Stat, StatsError> {
    Ok(BinaryCounts::from_labels(y_true, y_pred)?.cohen_kappa())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kappa::{KappaWeights, cohen_kappa_score};

    #[test]
    fn no_predicted_positives_is_undefined_not_zero() {
        let t = [true, false, false, false];
        let p = [false; 4];
        assert_eq!(
            precision(&t, &p).unwrap(),
            Stat::undefined(reason::NO_PREDICTED_POSITIVES)
        );
        assert_eq!(recall(&t, &p).unwrap(), Stat::Value(0.0));
        assert_eq!(f1(&t, &p).unwrap(), Stat::Value(0.0));
        assert_eq!(accuracy(&t, &p).unwrap(), Stat::Value(0.75));
    }

    #[test]
    fn no_positives_at_all() {
        let m = binary_metrics(&[false; 3], &[false; 3]).unwrap();
        assert!(!m.precision.is_defined());
        assert!(!m.recall.is_defined());
        assert!(!m.f1.is_defined());
        assert!(!m.cohen_kappa.is_defined());
        assert_eq!(m.prevalence, Stat::Value(0.0));
        assert_eq!(m.accuracy, Stat::Value(1.0));
    }

    #[test]
    fn kappa_agrees_with_general_form() {
        let t = [true, false, true, true, false, false, false, true];
        let p = [true, true, false, true, false, false, true, true];
        let a: Vec<i64> = t.iter().map(|&b| i64::from(b)).collect();
        let b: Vec<i64> = p.iter().map(|&b| i64::from(b)).collect();
        let general = cohen_kappa_score(&a, &b, None, KappaWeights::Unweighted).unwrap();
        let binary = cohen_kappa(&t, &p).unwrap();
        assert!((general.value().unwrap() - binary.value().unwrap()).abs() < 1e-15);
    }

    #[test]
    fn empty_is_undefined() {
        let m = binary_metrics(&[], &[]).unwrap();
        assert!(!m.accuracy.is_defined() && !m.prevalence.is_defined());
        assert!(binary_metrics(&[true], &[]).is_err());
    }
}
