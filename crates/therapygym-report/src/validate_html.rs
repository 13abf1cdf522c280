//! `therapygym validate --html FILE`: the agreement tables with their intervals, and per item a
//! judge-vs-expert-consensus scatter (jittered) with the identity line and, when a calibration
//! was fitted, the calibration curve.

use serde::Serialize;
use therapygym_validate::stats::consensus;
use therapygym_validate::{Dataset, Report};

use crate::charts::scatter;
use crate::error::ReportError;
use crate::html::ser;

/// A calibration curve per item: `(raw judge score, calibrated score)` knots.
pub type Curves = std::collections::BTreeMap<String, Vec<(f64, f64)>>;

#[derive(Debug, Serialize)]
struct ItemChart {
    id: String,
    n: usize,
    svg: String,
}

/// The (judge, consensus) pairs of one item: dialogues with a judge score and an expert score.
fn points(ds: &Dataset, item: &str) -> Vec<(f64, f64)> {
    let Some(cells) = ds.cells.get(item) else {
        return Vec::new();
    };
    let rows: Vec<Vec<Option<f64>>> = ds
        .experts
        .iter()
        .map(|e| cells.values().map(|c| c.experts.get(e).copied()).collect())
        .collect();
    let cons = consensus(&rows).unwrap_or_default();
    cells
        .values()
        .zip(cons)
        .filter_map(|(c, m)| Some((c.judge?, m?)))
        .collect()
}

/// The validation page.
pub fn validation_html(
    report: &Report,
    ds: &Dataset,
    curves: Option<&Curves>,
) -> Result<String, ReportError> {
    let range = (
        f64::from(ds.catalog.min_score),
        f64::from(ds.catalog.max_score),
    );
    let mut charts = Vec::new();
    for (id, _) in &report.items.0 {
        let pts = points(ds, id);
        let curve = curves.and_then(|c| c.get(id)).map(Vec::as_slice);
        charts.push(ItemChart {
            id: id.clone(),
            n: pts.len(),
            svg: scatter(id, ("judge score", "expert consensus"), &pts, range, curve)?,
        });
    }
    let env = crate::html::environment()?;
    let ctx = minijinja::context! {
        title => "TherapyGym judge validation",
        version => env!("CARGO_PKG_VERSION"),
        r => ser(report),
        // Lists of (id, value): rubric and taxonomy order (template maps are sorted).
        items => ser(&report.items.0),
        labels => ser(&report.safety.0),
        charts => ser(&charts),
        calibrated => curves.is_some(),
    };
    crate::html::render(&env, "validate.html", ctx, None)
}
