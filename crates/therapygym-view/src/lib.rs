//! The transcript viewer of one run: a session list filterable by profile, conversational
//! style, item score range, safety label, status and judgment set and sortable by reward; a page
//! per session with the transcript, the profile the patient played, each item's score with its
//! rationale and each safety flag with its evidence highlighted in the transcript, and every
//! judgment set side by side.
//!
//! One renderer ([`Pages`]) serves both the read-only web app ([`server`]) and the static
//! export ([`export`]). Model text is escaped by the templates; the list's own inline script is
//! the only one a page may run (CSP by hash), and it writes text with `textContent` only.

mod export;
mod render;
pub mod server;

use std::path::PathBuf;

pub use export::{Exported, export};
pub use render::{Pages, SCRIPT};
pub use therapygym_report::RunData;

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error(transparent)]
    Report(#[from] therapygym_report::ReportError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Input(String),
}
