//! `therapygym validate`: agreement between an LLM judge and human experts on
//! TherapyJudgeBench-style ratings.
//!
//! 1. [`read_ratings`] reads a ratings file (long format `dialogue_id, rater, item, score`, CSV or
//!    JSONL, or the wide layout) and checks every row against the rubric and taxonomy
//!    ([`Catalog`]); a malformed row is an error naming file, line and what was expected.
//! 2. [`Dataset::from_ratings`] (judge = the rows of `--judge-rater`) or [`Dataset::from_run`]
//!    (judge = a run's stored judgments, see [`load_run`]) splits judge and experts.
//! 3. [`validate`] computes the [`Report`]: per CTRS item judge-vs-experts and
//!    expert-vs-expert agreement, the session-level correlation, per safety label metrics, judge
//!    bias, and percentile bootstrap CIs over dialogues. [`render_text`] prints it as tables.
//! 4. [`fit_calibration`] fits the isotonic judge-to-consensus map per item.
//! 5. [`known_groups_report`] (`--known-groups LABEL=HIGH>LOW`) needs no expert ratings: on a
//!    run imported from a labelled corpus, it asks whether each score separates the dialogues
//!    labelled HIGH from those labelled LOW (AUC, Cliff's δ, Mann–Whitney), and sets the judge's
//!    behaviour counts against the corpus's annotations.
//!
//! Each statistic matches a named reference implementation (scipy, scikit-learn, the PyPI
//! `krippendorff` package, pingouin) to 1e-9: `tests/reference.rs` checks whole reports against
//! `tools/fixtures/gen_validate_fixtures.py`. Undefined statistics are `null` with a reason,
//! never NaN and never 0. Definitions: docs/validate.md.

mod calibrate;
mod dataset;
mod error;
mod known_groups;
mod ratings;
mod report;
mod text;

pub use calibrate::{CALIBRATION_VERSION, CalibrationFit, Skipped, fit_calibration, fitted_on};
pub use dataset::{Cell, Counts, Dataset, JudgeSource, RunCounts, RunJudgments, load_run};
pub use error::ValidateError;
pub use known_groups::{
    AnnotationMap, CodeAgreement, GroupRow, GroupSpec, KnownGroupsReport, known_groups_report,
    render_known_groups,
};
pub use ratings::{
    Catalog, CatalogItem, Dimension, Layout, RaterKind, RatingRow, RatingsFile, parse_ratings,
    read_ratings,
};
pub use report::{
    BootstrapInfo, ExpertCis, ExpertVsExpert, Interval, ItemReport, JudgeCis, JudgeVsExperts,
    LabelCis, LabelReport, Ordered, PerExpert, Report, Resampling, SessionCis, SessionReport,
    validate, why,
};
pub use text::render_text;
/// The statistics crate, for its `Stat`, `BootstrapConfig` and reasons.
pub use therapygym_stats as stats;

/// The default judge rater name (`--judge-rater`).
pub const DEFAULT_JUDGE_RATER: &str = "judge";
