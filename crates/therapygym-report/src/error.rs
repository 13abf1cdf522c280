use std::path::PathBuf;

use therapygym_stats::StatsError;
use therapygym_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("run {}: no judgment set yet; score it with `therapygym judge {}`", dir.display(), dir.display())]
    NoJudgments { dir: PathBuf },
    #[error("run {}: no judgment set `{prefix}`; the run has: {sets}", dir.display())]
    UnknownSet {
        dir: PathBuf,
        prefix: String,
        sets: String,
    },
    #[error("run {}: judgment set prefix `{prefix}` is ambiguous: {sets}", dir.display())]
    AmbiguousSet {
        dir: PathBuf,
        prefix: String,
        sets: String,
    },
    #[error("statistics: {0}")]
    Stats(#[from] StatsError),
    #[error("rendering {what}: {source}")]
    Render {
        what: String,
        #[source]
        source: minijinja::Error,
    },
    #[error("chart `{what}`: {message}")]
    Chart { what: String, message: String },
    #[error("{0}")]
    Input(String),
}
