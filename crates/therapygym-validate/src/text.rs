//! The readable form of a [`Report`]: a few aligned tables, then every undefined statistic with
//! its reason (so a blank cell is never a mystery).

use std::fmt::Write;

use therapygym_stats::Stat;

use crate::dataset::JudgeSource;
use crate::report::{Interval, Report};

/// Undefined statistics met while rendering: (where, metric, reason).
#[derive(Default)]
struct Notes(Vec<(String, String, String)>);

impl Notes {
    fn stat(&mut self, at: &str, metric: &str, s: &Stat, digits: usize) -> String {
        match s {
            Stat::Value(v) => format!("{v:.digits$}"),
            Stat::Undefined(r) => {
                self.0
                    .push((at.to_owned(), metric.to_owned(), r.to_string()));
                "n/a".to_owned()
            }
        }
    }

    fn signed(&mut self, at: &str, metric: &str, s: &Stat, digits: usize) -> String {
        match s {
            Stat::Value(v) => format!("{v:+.digits$}"),
            other => self.stat(at, metric, other, digits),
        }
    }

    fn with_ci(&mut self, at: &str, metric: &str, s: &Stat, ci: &Interval, signed: bool) -> String {
        let v = if signed {
            self.signed(at, metric, s, 2)
        } else {
            self.stat(at, metric, s, 2)
        };
        if !s.is_defined() {
            return v;
        }
        match ci.bounds() {
            Some((lo, hi)) if signed => format!("{v} [{lo:+.2}, {hi:+.2}]"),
            Some((lo, hi)) => format!("{v} [{lo:.2}, {hi:.2}]"),
            None => {
                let r = ci.reason.clone().unwrap_or_else(|| "undefined".to_owned());
                self.0.push((at.to_owned(), format!("{metric} CI"), r));
                format!("{v} [n/a]")
            }
        }
    }
}

/// Left-aligns the first column and right-aligns the others.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
            let pad = w.saturating_sub(c.chars().count());
            if i == 0 {
                s.push_str(c);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str("  ");
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            }
        }
        s.trim_end().to_owned()
    };
    let _ = writeln!(out, "{}", line(header.to_vec()));
    for r in rows {
        let _ = writeln!(out, "{}", line(r.iter().map(String::as_str).collect()));
    }
}

/// Renders the report as text tables.
pub fn render_text(r: &Report) -> String {
    let mut out = String::new();
    let mut notes = Notes::default();
    write_header(&mut out, r);
    if !r.items.0.is_empty() {
        judge_item_table(&mut out, r, &mut notes);
        expert_item_table(&mut out, r, &mut notes);
    }
    session_table(&mut out, r, &mut notes);
    if !r.safety.0.is_empty() {
        safety_table(&mut out, r, &mut notes);
    }
    write_notes(&mut out, notes);
    out
}

/// What was compared with what: the ratings, the judge, the counts, the bootstrap.
fn write_header(out: &mut String, r: &Report) {
    let judge = match &r.judge {
        JudgeSource::Rater { name } => format!("rater `{name}`"),
        JudgeSource::Run { dir, judge_hash } => {
            format!("run {} (judgment set {judge_hash})", dir.display())
        }
    };
    let c = &r.counts;
    let _ = writeln!(
        out,
        "Judge-expert agreement: {} vs judge {judge}",
        r.ratings
    );
    let _ = writeln!(
        out,
        "{} dialogues; {} expert(s) ({}); {} expert and {} judge ratings; {} unscored row(s) skipped",
        c.dialogues,
        c.experts.len(),
        c.experts.join(", "),
        c.expert_ratings,
        c.judge_ratings,
        c.unscored_rows
    );
    if let Some(run) = &c.run {
        let _ = writeln!(
            out,
            "run: {} sessions, {} rated by experts: {} judged, {} unscored by the judge, {} without a judgment",
            run.sessions, run.rated_sessions, run.judged, run.judge_unscored, run.not_judged
        );
    }
    let b = &r.bootstrap;
    let _ = writeln!(
        out,
        "CIs: {:.0}% percentile bootstrap over dialogues, {} resamples{}; rubric {}, taxonomy {}",
        b.level * 100.0,
        b.resamples,
        b.seed.map(|s| format!(", seed {s}")).unwrap_or_default(),
        r.rubric,
        r.taxonomy
    );
}

fn judge_item_table(out: &mut String, r: &Report, notes: &mut Notes) {
    let _ = writeln!(out, "\nJudge vs expert consensus, per CTRS item");
    let rows: Vec<Vec<String>> = r
        .items
        .0
        .iter()
        .map(|(id, it)| {
            let j = &it.judge_vs_experts;
            let name = if it.reward {
                id.clone()
            } else {
                format!("{id} *")
            };
            vec![
                name,
                j.n.to_string(),
                notes.with_ci(id, "spearman", &j.spearman, &j.ci95.spearman, false),
                notes.with_ci(id, "pearson", &j.pearson, &j.ci95.pearson, false),
                notes.with_ci(
                    id,
                    "kendall_tau_b",
                    &j.kendall_tau_b,
                    &j.ci95.kendall_tau_b,
                    false,
                ),
                notes.stat(id, "mae", &j.mae, 2),
                notes.stat(id, "qwk", &j.qwk, 2),
                notes.stat(
                    id,
                    "krippendorff_alpha_ordinal (judge+experts)",
                    &j.krippendorff_alpha_ordinal,
                    2,
                ),
                notes.with_ci(id, "bias", &j.bias, &j.ci95.bias, true),
            ]
        })
        .collect();
    table(
        out,
        &[
            "item",
            "n",
            "spearman [95% CI]",
            "pearson [95% CI]",
            "kendall tau-b [95% CI]",
            "MAE",
            "QWK",
            "alpha ord",
            "bias [95% CI]",
        ],
        &rows,
    );
    if r.items.0.iter().any(|(_, it)| !it.reward) {
        let _ = writeln!(out, "* not a reward item (left out of the session score)");
    }
}

fn expert_item_table(out: &mut String, r: &Report, notes: &mut Notes) {
    let _ = writeln!(out, "\nExpert vs expert, per CTRS item");
    let rows: Vec<Vec<String>> = r
        .items
        .0
        .iter()
        .map(|(id, it)| {
            let e = &it.expert_vs_expert;
            vec![
                id.clone(),
                e.n_experts.to_string(),
                e.n.to_string(),
                notes.stat(
                    id,
                    "expert krippendorff_alpha_ordinal",
                    &e.krippendorff_alpha_ordinal,
                    2,
                ),
                notes.stat(
                    id,
                    "expert krippendorff_alpha_interval",
                    &e.krippendorff_alpha_interval,
                    2,
                ),
                format!(
                    "{} (n={})",
                    notes.stat(id, "icc2_1", &e.icc2_1, 2),
                    e.n_complete
                ),
                notes.with_ci(id, "expert spearman", &e.spearman, &e.ci95.spearman, false),
            ]
        })
        .collect();
    table(
        out,
        &[
            "item",
            "experts",
            "n (2+ experts)",
            "alpha ordinal",
            "alpha interval",
            "ICC(A,1)",
            "spearman, mean over pairs [95% CI]",
        ],
        &rows,
    );
}

fn session_table(out: &mut String, r: &Report, notes: &mut Notes) {
    let s = &r.session;
    let _ = writeln!(
        out,
        "\nSession level (per dialogue: mean of score/6 over {} reward item(s)), judge vs consensus",
        s.items.len()
    );
    let row = vec![
        s.n.to_string(),
        notes.with_ci("session", "spearman", &s.spearman, &s.ci95.spearman, false),
        notes.with_ci("session", "pearson", &s.pearson, &s.ci95.pearson, false),
        notes.with_ci("session", "bias", &s.bias, &s.ci95.bias, true),
    ];
    table(
        out,
        &[
            "n",
            "spearman [95% CI]",
            "pearson [95% CI]",
            "bias [95% CI]",
        ],
        &[row],
    );
}

fn safety_table(out: &mut String, r: &Report, notes: &mut Notes) {
    let _ = writeln!(
        out,
        "\nSafety: judge flag vs expert majority (flagged when at least half of the experts who rated it flagged it)"
    );
    let rows: Vec<Vec<String>> = r
        .safety
        .0
        .iter()
        .map(|(id, l)| {
            let m = &l.metrics;
            vec![
                id.clone(),
                m.n.to_string(),
                notes.stat(id, "prevalence", &m.prevalence, 3),
                notes.stat(id, "judge_rate", &l.judge_rate, 3),
                notes.stat(id, "accuracy", &m.accuracy, 3),
                notes.stat(id, "precision", &m.precision, 3),
                notes.stat(id, "recall", &m.recall, 3),
                notes.with_ci(id, "f1", &m.f1, &l.ci95.f1, false),
                notes.with_ci(
                    id,
                    "cohen_kappa",
                    &m.cohen_kappa,
                    &l.ci95.cohen_kappa,
                    false,
                ),
            ]
        })
        .collect();
    table(
        out,
        &[
            "label",
            "n",
            "prevalence",
            "judge rate",
            "accuracy",
            "precision",
            "recall",
            "F1 [95% CI]",
            "kappa [95% CI]",
        ],
        &rows,
    );
}

/// Every undefined statistic with its reason, the metrics of one place that share a reason
/// grouped.
fn write_notes(out: &mut String, notes: Notes) {
    if notes.0.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nUndefined (n/a):");
    let mut groups: Vec<(String, String, Vec<String>)> = Vec::new();
    for (at, metric, reason) in notes.0 {
        match groups.iter_mut().find(|(a, r, _)| *a == at && *r == reason) {
            Some(g) => g.2.push(metric),
            None => groups.push((at, reason, vec![metric])),
        }
    }
    for (at, reason, metrics) in groups {
        let _ = writeln!(out, "  {at}: {}: {reason}", metrics.join(", "));
    }
}
