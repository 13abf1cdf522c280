//! `therapygym report`: the numbers of one or more runs ([`Report`], also the `--json` output)
//! and the self-contained HTML page drawn from them.

use serde::Serialize;
use therapygym_stats::BootstrapConfig;

use crate::charts::{WhiskerRow, css_color, dot_whisker, histogram};
use crate::compare::{Comparison, compare};
use crate::error::ReportError;
use crate::html::ser;
use crate::metrics::{Group, Kind};
use crate::numbers::{Example, RowSummary, RunSummary, summarize};
use crate::run::{RunData, SetData};
use crate::transcript::{SessionView, session_view, slug};

/// Report format version (`--json` consumers can check it).
pub const REPORT_VERSION: u32 = 1;

/// Every number of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub report_version: u32,
    pub generated_at: String,
    pub runs: Vec<RunSummary>,
    /// Each run after the first against the first (the baseline).
    pub comparisons: Vec<Comparison>,
}

/// The runs of a report, each with the judgment set it is read under.
pub type Inputs<'a> = [(&'a RunData, &'a SetData)];

impl Report {
    /// Summarises every run and compares each later run with the first.
    pub fn build(
        inputs: &Inputs<'_>,
        config: &BootstrapConfig,
        generated_at: &str,
    ) -> Result<Self, ReportError> {
        let mut runs = Vec::new();
        for (run, set) in inputs {
            runs.push(summarize(run, set, config)?);
        }
        let mut comparisons = Vec::new();
        if let Some((base, rest)) = inputs.split_first() {
            for other in rest {
                comparisons.push(compare(*base, *other, config)?);
            }
        }
        Ok(Self {
            report_version: REPORT_VERSION,
            generated_at: generated_at.to_string(),
            runs,
            comparisons,
        })
    }

    /// The self-contained HTML page (no script, nothing fetched).
    pub fn html(&self, inputs: &Inputs<'_>) -> Result<String, ReportError> {
        let env = crate::html::environment()?;
        let mut sections = vec![
            section(
                self,
                "items",
                "Rubric items",
                Group::Item,
                "mean score with 95% CI",
            )?,
            section(
                self,
                "overall",
                "Overall",
                Group::Overall,
                "normalised mean / rate with 95% CI",
            )?,
            section(
                self,
                "safety",
                "Safety labels",
                Group::Safety,
                "violation rate with 95% CI",
            )?,
        ];
        let measures = section(
            self,
            "measures",
            "Behaviour counts and derived scores",
            Group::Measure,
            "per-session mean with 95% CI",
        )?;
        if !measures.rows.is_empty() {
            sections.insert(1, measures);
        }
        let reward = histogram(
            "reward",
            "reward per session",
            &self
                .runs
                .iter()
                .map(|r| {
                    r.reward_histogram
                        .iter()
                        .map(|b| (b.low, b.high, b.count))
                        .collect()
                })
                .collect::<Vec<_>>(),
        )?;
        let reward_rows = rows_of(self, Group::Reward);
        let runs: Vec<_> = self
            .runs
            .iter()
            .enumerate()
            .map(|(i, s)| minijinja::context! { index => i, color => css_color(i), s => ser(s) })
            .collect();
        let ctx = minijinja::context! {
            title => format!("TherapyGym report — {}", self.runs.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(" vs ")),
            version => env!("CARGO_PKG_VERSION"),
            report => ser(self),
            runs => runs,
            sections => ser(&sections),
            reward_chart => reward,
            reward_rows => ser(&reward_rows),
            examples => ser(&examples(self, inputs)),
        };
        crate::html::render(&env, "report.html", ctx, None)
    }
}

/// The anchor of an example session of run `run` inside the report.
pub fn example_anchor(run: usize, session_id: &str) -> String {
    format!("ex-{run}-{}", slug(session_id))
}

#[derive(Debug, Clone, Serialize)]
struct Link {
    id: String,
    anchor: String,
    value: f64,
}

#[derive(Debug, Clone, Serialize)]
struct Cell {
    run: usize,
    row: RowSummary,
    lowest: Option<Link>,
    highest: Option<Link>,
}

#[derive(Debug, Clone, Serialize)]
struct TableRow {
    id: String,
    name: String,
    reward: bool,
    kind: &'static str,
    cells: Vec<Option<Cell>>,
}

#[derive(Debug, Clone, Serialize)]
struct Section {
    id: &'static str,
    title: &'static str,
    chart: String,
    rows: Vec<TableRow>,
}

fn link(run: usize, e: &Option<Example>) -> Option<Link> {
    e.as_ref().map(|e| Link {
        id: e.session_id.clone(),
        anchor: example_anchor(run, &e.session_id),
        value: e.value,
    })
}

/// The rows of `group`, by metric id in first-run order, one cell per run.
fn rows_of(r: &Report, group: Group) -> Vec<TableRow> {
    let mut ids: Vec<(&str, &RowSummary)> = Vec::new();
    for run in &r.runs {
        for row in run.rows.iter().filter(|x| x.metric.group == group) {
            if !ids.iter().any(|(id, _)| *id == row.metric.id) {
                ids.push((row.metric.id.as_str(), row));
            }
        }
    }
    ids.into_iter()
        .map(|(id, first)| TableRow {
            id: id.to_string(),
            name: first.metric.name.clone(),
            reward: first.metric.reward,
            kind: match first.metric.kind {
                Kind::Score { .. } => "score",
                Kind::Rate => "rate",
                Kind::Value => "value",
            },
            cells: r
                .runs
                .iter()
                .enumerate()
                .map(|(i, run)| {
                    run.rows.iter().find(|x| x.metric.id == id).map(|row| Cell {
                        run: i,
                        lowest: link(i, &row.lowest),
                        highest: link(i, &row.highest),
                        row: row.clone(),
                    })
                })
                .collect(),
        })
        .collect()
}

/// The x range of a group's chart: the rubric's scale for items, 0..1 for rates and means.
fn range_of(rows: &[TableRow]) -> (f64, f64) {
    let mut lo = 0.0f64;
    let mut hi = 1.0f64;
    for c in rows.iter().flat_map(|r| r.cells.iter().flatten()) {
        if let Kind::Score { min, max } = c.row.metric.kind {
            lo = lo.min(min);
            hi = hi.max(max);
        }
    }
    (lo, hi)
}

fn section(
    r: &Report,
    id: &'static str,
    title: &'static str,
    group: Group,
    x_label: &str,
) -> Result<Section, ReportError> {
    let rows = rows_of(r, group);
    let whiskers: Vec<WhiskerRow> = rows
        .iter()
        .map(|row| WhiskerRow {
            label: row.name.clone(),
            points: row
                .cells
                .iter()
                .map(|c| c.as_ref().and_then(|c| Some((c.row.mean?, c.row.ci95))))
                .collect(),
        })
        .collect();
    let chart = if rows.is_empty() {
        String::new()
    } else {
        dot_whisker(id, x_label, &whiskers, range_of(&rows))?
    };
    Ok(Section {
        id,
        title,
        chart,
        rows,
    })
}

#[derive(Debug, Clone, Serialize)]
struct ExampleView {
    run: usize,
    run_name: String,
    color: String,
    anchor: String,
    /// Why it is shown: "lowest Agenda (1)", ...
    why: Vec<String>,
    session: SessionView,
}

/// The sessions the tables link to, each rendered once per run.
fn examples(r: &Report, inputs: &Inputs<'_>) -> Vec<ExampleView> {
    let mut out: Vec<ExampleView> = Vec::new();
    for (i, (summary, (run, set))) in r.runs.iter().zip(inputs).enumerate() {
        for row in &summary.rows {
            for (which, e) in [("lowest", &row.lowest), ("highest", &row.highest)] {
                let Some(e) = e else { continue };
                let why = format!("{which} {} ({})", row.metric.name, fmt(e.value));
                let anchor = example_anchor(i, &e.session_id);
                if let Some(x) = out.iter_mut().find(|x| x.anchor == anchor) {
                    x.why.push(why);
                    continue;
                }
                let Some(s) = run.sessions.iter().find(|s| s.id == e.session_id) else {
                    continue;
                };
                out.push(ExampleView {
                    run: i,
                    run_name: summary.name.clone(),
                    color: css_color(i),
                    anchor,
                    why: vec![why],
                    session: session_view(run, s, &[*set]),
                });
            }
        }
    }
    out
}

fn fmt(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}
