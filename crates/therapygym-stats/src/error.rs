//! Caller errors: malformed input, as opposed to data for which a statistic is merely undefined
//! (that is a [`crate::Stat::Undefined`], not an error).

use thiserror::Error;

/// Input that no statistic can be computed on, whatever the data: a bug in the caller.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum StatsError {
    /// Two inputs that must be paired element-wise differ in length.
    #[error("inputs must have the same length, got {left} and {right}")]
    LengthMismatch {
        /// Length of the first input.
        left: usize,
        /// Length of the second input.
        right: usize,
    },
    /// NaN or an infinity in a score; missing ratings must be `None`, not NaN.
    #[error("non-finite value at index {index} (use None for a missing rating)")]
    NonFinite {
        /// Position of the offending value (row-major for matrices).
        index: usize,
    },
    /// A matrix whose rows differ in length.
    #[error("row {row} has {len} entries, expected {expected}")]
    Ragged {
        /// The offending row.
        row: usize,
        /// Its length.
        len: usize,
        /// The length of row 0.
        expected: usize,
    },
    /// The same label twice in a `labels` list.
    #[error("label {0} appears more than once in labels")]
    DuplicateLabel(i64),
    /// A score that should be an integer label is not one.
    #[error("score {value} at index {index} is not an integer label")]
    NotALabel {
        /// Position of the score.
        index: usize,
        /// The score.
        value: f64,
    },
    /// A confidence level outside (0, 1).
    #[error("confidence level must be in (0, 1), got {0}")]
    InvalidLevel(f64),
    /// A percentile outside [0, 100].
    #[error("percentile must be in [0, 100], got {0}")]
    InvalidPercentile(f64),
    /// A resample index or unit id past the number of units.
    #[error("index {index} out of range for {n_units} units")]
    IndexOutOfRange {
        /// The index.
        index: usize,
        /// The number of units.
        n_units: usize,
    },
}
