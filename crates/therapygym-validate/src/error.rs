//! Errors of the validation library. A problem with an input file names the file, the line (or
//! record) and what was expected ([`DataError`]); a problem with a run names the run directory.

use std::path::PathBuf;

use therapygym_core::DataError;
use therapygym_stats::StatsError;
use therapygym_store::StoreError;
use thiserror::Error;

/// Why a validation could not be computed. Undefined statistics are not errors: they are
/// [`therapygym_stats::Stat::Undefined`] values with a reason inside the report.
#[derive(Debug, Error)]
pub enum ValidateError {
    /// A ratings, rubric or taxonomy file is unreadable or malformed (names file, line, field).
    #[error(transparent)]
    Data(#[from] DataError),
    /// The run store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The run directory does not hold what `--run` needs (no judgments, unknown judge set, ...).
    #[error("run {}: {message}", dir.display())]
    Run {
        /// The run directory.
        dir: PathBuf,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A statistic rejected its input: a bug in this crate (inputs are validated on load).
    #[error("internal error computing {what}: {source}")]
    Stats {
        /// Which statistic.
        what: String,
        /// The statistics crate's complaint.
        #[source]
        source: StatsError,
    },
    /// Explicit resamples were requested but none were supplied for this number of units.
    #[error("no explicit resamples supplied for {n_units} units")]
    MissingResamples {
        /// The number of units that needed resampling.
        n_units: usize,
    },
}

/// Attaches the statistic's name to a [`StatsError`].
pub(crate) fn stats_err(what: impl Into<String>) -> impl FnOnce(StatsError) -> ValidateError {
    let what = what.into();
    move |source| ValidateError::Stats { what, source }
}
