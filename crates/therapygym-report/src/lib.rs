//! Results people look at.
//!
//! - [`Report`]: one or more runs — per item the mean on the rubric's scale with a 95%
//!   bootstrap interval, the normalised mean, per-label and any-violation rates, the reward
//!   distribution, unscored and failed sessions with their reasons, tokens and wall time per
//!   role — and, with two or more runs, each later run against the first, row by row: the
//!   difference with its bootstrap interval, paired by session when the runs met the same
//!   simulated patients, and significance after Holm's correction ([`compare`]). Rendered as
//!   one self-contained HTML file (inline SVG charts, no script, nothing fetched) or as JSON.
//! - [`Leaderboard`]: therapist runs ranked by the normalised mean and the any-violation
//!   rate, grouped into statistical tiers; HTML, Markdown or JSON.
//! - [`validation_html`]: the pictures of `therapygym validate`.
//!
//! Every table and chart is driven by a judgment set's own rubric and taxonomy
//! ([`run::Definitions`], rows in [`metrics`]); model text is always escaped (templates
//! auto-escape; see [`html`]). The viewer (`therapygym-view`) reuses [`run`], [`transcript`]
//! and [`html`].

pub mod charts;
pub mod compare;
mod error;
pub mod html;
mod leaderboard;
pub mod metrics;
mod numbers;
mod report;
pub mod run;
pub mod transcript;
mod validate_html;

pub use compare::{Comparison, RowComparison};
pub use error::ReportError;
pub use leaderboard::{Entry, Leaderboard, Ranking};
pub use numbers::{Counts, Example, ManifestView, RowSummary, RunSummary, mean_ci, summarize};
pub use report::{Inputs, REPORT_VERSION, Report, example_anchor};
pub use run::{Definitions, ItemDef, LabelDef, RunData, SetData, scrub};
/// The statistics crate (bootstrap settings for callers).
pub use therapygym_stats as stats;
pub use validate_html::{Curves, validation_html};
