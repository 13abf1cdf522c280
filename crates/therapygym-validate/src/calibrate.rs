//! `validate --fit-calibration`: a monotone (isotonic, pool-adjacent-violators) map per CTRS item
//! from the judge's score to the expert consensus, in the calibration format `eval --calibration`
//! and `judge --calibration` read.

use serde::Serialize;
use therapygym_judge::{Calibration, fit_isotonic};
use therapygym_stats::consensus;

use crate::dataset::{Dataset, JudgeSource};
use crate::error::{ValidateError, stats_err};

/// Calibration format version written.
pub const CALIBRATION_VERSION: u32 = 1;

/// An item left out of the calibration (it keeps its raw scores when applied).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The item id.
    pub item: String,
    /// Why no map was fitted.
    pub reason: String,
}

/// The fitted maps and the items that got none.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationFit {
    /// Ready for `Calibration::to_toml`.
    pub calibration: Calibration,
    /// Items with too little data.
    pub skipped: Vec<Skipped>,
}

/// What `fitted_on` records: the ratings file and the judge.
pub fn fitted_on(ds: &Dataset) -> String {
    let judge = match &ds.judge {
        JudgeSource::Rater { name } => format!("judge rater `{name}`"),
        JudgeSource::Run { dir, judge_hash } => {
            format!("judgment set {judge_hash} of run {}", dir.display())
        }
    };
    format!("{} ({judge})", ds.ratings.display())
}

/// Fits `fit_isotonic` on the (judge score, consensus) pairs of each CTRS item: the dialogues
/// with a judge score and at least one expert score. An item needs two distinct judge scores
/// (a map fitted on one would send every score to a single value).
pub fn fit_calibration(ds: &Dataset) -> Result<CalibrationFit, ValidateError> {
    let mut items = std::collections::BTreeMap::new();
    let mut skipped = Vec::new();
    for (item, _) in ds.items() {
        let Some(cells) = ds.cells.get(item) else {
            continue;
        };
        let mut names: Vec<&String> = cells.values().flat_map(|c| c.experts.keys()).collect();
        names.sort_unstable();
        names.dedup();
        let rows: Vec<Vec<Option<f64>>> = names
            .iter()
            .map(|e| cells.values().map(|c| c.experts.get(*e).copied()).collect())
            .collect();
        let cons = consensus(&rows).map_err(stats_err(format!("consensus of item `{item}`")))?;
        let pairs: Vec<(f64, f64)> = cells
            .values()
            .zip(cons)
            .filter_map(|(c, y)| Some((c.judge?, y?)))
            .collect();
        let mut xs: Vec<f64> = pairs.iter().map(|p| p.0).collect();
        xs.sort_unstable_by(f64::total_cmp);
        xs.dedup();
        if xs.len() < 2 {
            skipped.push(Skipped {
                item: item.to_owned(),
                reason: if pairs.is_empty() {
                    "no dialogue with a judge score and an expert score".to_owned()
                } else {
                    format!(
                        "fewer than 2 distinct judge scores on {} dialogue(s)",
                        pairs.len()
                    )
                },
            });
            continue;
        }
        items.insert(item.to_owned(), fit_isotonic(&pairs));
    }
    Ok(CalibrationFit {
        calibration: Calibration {
            version: CALIBRATION_VERSION,
            fitted_on: fitted_on(ds),
            items,
        },
        skipped,
    })
}
