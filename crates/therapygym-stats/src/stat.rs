//! The [`Stat`] value type: a statistic that is either a finite number or undefined with a reason.
//!
//! Agreement statistics are routinely undefined (constant scores, too few pairs). Reporting those
//! as `NaN` breaks JSON and reporting them as `0` is a lie, so every function in this crate returns
//! a [`Stat`] that serialises as `{"value": 0.42}` or `{"value": null, "reason": "..."}`.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Reasons used by this crate for [`Stat::Undefined`], public so callers can match on them.
pub mod reason {
    /// No observations at all.
    pub const EMPTY: &str = "no observations";
    /// A correlation needs at least two (x, y) pairs.
    pub const FEWER_THAN_2_PAIRS: &str = "fewer than 2 paired observations";
    /// Every x value is equal, so a correlation has no denominator.
    pub const CONSTANT_X: &str = "constant x values (e.g. constant judge scores)";
    /// Every y value is equal, so a correlation has no denominator.
    pub const CONSTANT_Y: &str = "constant y values (e.g. constant consensus scores)";
    /// Kappa's chance agreement is total (both raters used a single, shared label).
    pub const KAPPA_NO_CHANCE_DISAGREEMENT: &str =
        "expected disagreement is zero (fewer than 2 labels in use)";
    /// No rating of the first rater is among the labels (sklearn raises here).
    pub const KAPPA_NO_LABEL_IN_Y1: &str = "no rating of the first rater is among the labels";
    /// Every retained pair had a label outside `labels`.
    pub const KAPPA_NO_PAIRS: &str = "no paired ratings within the labels";
    /// Precision with no predicted positives (sklearn returns 0 with a warning).
    pub const NO_PREDICTED_POSITIVES: &str = "no predicted positives";
    /// Recall with no actual positives (sklearn returns 0 with a warning).
    pub const NO_ACTUAL_POSITIVES: &str = "no actual positives";
    /// F1 with neither actual nor predicted positives.
    pub const NO_POSITIVES: &str = "no actual and no predicted positives";
    /// Krippendorff's alpha needs at least two distinct values.
    pub const ALPHA_ONE_VALUE: &str = "fewer than 2 distinct values in the data";
    /// Krippendorff's alpha needs one unit with two or more ratings.
    pub const ALPHA_NO_PAIRABLE_UNIT: &str = "no unit rated by at least 2 raters";
    /// Krippendorff's alpha: every pairable rating has the same value.
    pub const ALPHA_NO_EXPECTED_DISAGREEMENT: &str =
        "expected disagreement is zero (all pairable ratings equal)";
    /// ICC needs two complete units.
    pub const ICC_FEWER_THAN_2_UNITS: &str = "fewer than 2 units rated by every rater";
    /// ICC needs two raters.
    pub const ICC_FEWER_THAN_2_RATERS: &str = "fewer than 2 raters";
    /// pingouin's two-way ANOVA refuses fewer than 5 ratings (asserts `n * k >= 5`).
    pub const ICC_FEWER_THAN_5_RATINGS: &str =
        "fewer than 5 ratings in complete units (pingouin requires 5)";
    /// ICC with all ratings equal is 0/0.
    pub const ICC_CONSTANT: &str = "constant ratings (no variance)";
    /// The ICC denominator vanished.
    pub const ICC_ZERO_DENOMINATOR: &str = "ICC denominator is zero";
    /// A bootstrap needs at least one unit.
    pub const BOOTSTRAP_NO_UNITS: &str = "no units to resample";
    /// Fewer than half of the bootstrap resamples gave a defined statistic.
    pub const BOOTSTRAP_TOO_FEW_VALID: &str =
        "fewer than half of the bootstrap resamples were defined";
    /// A bootstrap with zero resamples.
    pub const BOOTSTRAP_NO_RESAMPLES: &str = "no bootstrap resamples";
    /// A resample index pointed past the last unit.
    pub const INDEX_OUT_OF_RANGE: &str = "resample index out of range";
    /// Averaging a list of statistics none of which is defined.
    pub const NONE_DEFINED: &str = "no defined value to average";
    /// A computation produced a non-finite number (should not happen; defensive).
    pub const NON_FINITE: &str = "computation produced a non-finite value";
}

/// A statistic: a finite number or undefined with a human-readable reason. Never NaN.
#[derive(Debug, Clone, PartialEq)]
pub enum Stat {
    /// A finite value.
    Value(f64),
    /// The statistic does not exist for this data; the string says why.
    Undefined(Cow<'static, str>),
}

impl Stat {
    /// An undefined statistic with the given reason.
    pub fn undefined(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::Undefined(reason.into())
    }

    /// `Value(v)` when `v` is finite, otherwise `Undefined(reason)`: the single gate that keeps
    /// NaN and infinities out of reports.
    pub fn finite_or(v: f64, reason: &'static str) -> Self {
        if v.is_finite() {
            Self::Value(v)
        } else {
            Self::Undefined(Cow::Borrowed(reason))
        }
    }

    /// The value, if defined.
    pub fn value(&self) -> Option<f64> {
        match self {
            Self::Value(v) => Some(*v),
            Self::Undefined(_) => None,
        }
    }

    /// Whether the statistic is defined.
    pub fn is_defined(&self) -> bool {
        matches!(self, Self::Value(_))
    }

    /// The reason it is undefined, if it is.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Value(_) => None,
            Self::Undefined(r) => Some(r),
        }
    }

    /// Applies `f` to a defined value; undefined passes through unchanged.
    pub fn map(self, f: impl FnOnce(f64) -> f64) -> Self {
        match self {
            Self::Value(v) => Self::finite_or(f(v), reason::NON_FINITE),
            u @ Self::Undefined(_) => u,
        }
    }
}

impl From<Stat> for Option<f64> {
    fn from(s: Stat) -> Self {
        s.value()
    }
}

#[derive(Serialize)]
struct StatRepr<'a> {
    value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

#[derive(Deserialize)]
struct StatReprOwned {
    value: Option<f64>,
    #[serde(default)]
    reason: Option<String>,
}

impl Serialize for Stat {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let repr = match self {
            Self::Value(v) if v.is_finite() => StatRepr {
                value: Some(*v),
                reason: None,
            },
            Self::Value(_) => StatRepr {
                value: None,
                reason: Some(reason::NON_FINITE),
            },
            Self::Undefined(r) => StatRepr {
                value: None,
                reason: Some(r.as_ref()),
            },
        };
        repr.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Stat {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let repr = StatReprOwned::deserialize(deserializer)?;
        Ok(match repr.value {
            Some(v) => Stat::finite_or(v, reason::NON_FINITE),
            None => Stat::Undefined(Cow::Owned(
                repr.reason.unwrap_or_else(|| "undefined".to_owned()),
            )),
        })
    }
}

/// A mean over several statistics (e.g. over experts or expert pairs), keeping the parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Averaged {
    /// Mean of the defined parts; undefined when none is defined.
    pub mean: Stat,
    /// How many parts were defined (and entered the mean).
    pub n_defined: usize,
    /// Each part, in input order.
    pub parts: Vec<Stat>,
}

impl Averaged {
    /// Averages the defined parts, skipping undefined ones. Skipping (rather than poisoning the
    /// mean) matches `numpy.nanmean`, which is how the reference fixtures average; `n_defined`
    /// lets a report show how many parts contributed.
    pub fn of(parts: Vec<Stat>) -> Self {
        let (sum, n) = parts
            .iter()
            .filter_map(Stat::value)
            .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
        let mean = if n == 0 {
            Stat::undefined(reason::NONE_DEFINED)
        } else {
            Stat::finite_or(sum / n as f64, reason::NON_FINITE)
        };
        Self {
            mean,
            n_defined: n,
            parts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_value_and_undefined() {
        let v = serde_json::to_string(&Stat::Value(0.5)).unwrap();
        assert_eq!(v, r#"{"value":0.5}"#);
        let u = serde_json::to_string(&Stat::undefined(reason::CONSTANT_X)).unwrap();
        assert_eq!(
            u,
            r#"{"value":null,"reason":"constant x values (e.g. constant judge scores)"}"#
        );
    }

    #[test]
    fn never_serialises_nan() {
        let s = serde_json::to_string(&Stat::Value(f64::NAN)).unwrap();
        assert!(s.contains("null"), "{s}");
        assert_eq!(
            Stat::finite_or(f64::INFINITY, "x"),
            Stat::undefined("x".to_owned())
        );
    }

    #[test]
    fn round_trips() {
        for s in [Stat::Value(-0.25), Stat::undefined("why")] {
            let j = serde_json::to_string(&s).unwrap();
            let back: Stat = serde_json::from_str(&j).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn averaged_skips_undefined() {
        let a = Averaged::of(vec![
            Stat::Value(1.0),
            Stat::undefined("x"),
            Stat::Value(0.0),
        ]);
        assert_eq!(a.mean, Stat::Value(0.5));
        assert_eq!(a.n_defined, 2);
        let none = Averaged::of(vec![Stat::undefined("x")]);
        assert!(!none.mean.is_defined());
        assert!(!Averaged::of(vec![]).mean.is_defined());
    }
}
