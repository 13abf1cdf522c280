//! Printing a run's summary (`eval`, `judge`) as tables or JSON, and its quality gate.

use std::collections::BTreeMap;
use std::process::ExitCode;

use therapygym_eval::Summary;

use crate::ui;

fn f(x: Option<f64>, digits: usize) -> String {
    x.map(|v| format!("{v:.digits$}")).unwrap_or_default()
}

fn ci(c: Option<[f64; 2]>) -> String {
    c.map(|[l, h]| format!("[{l:.3}, {h:.3}]"))
        .unwrap_or_default()
}

/// `sha256:0123456789ab` (the hash's first 12 hex digits, enough to name a set).
pub fn short_hash(h: &str) -> String {
    let hex = h.trim_start_matches("sha256:");
    format!("sha256:{}", &hex[..hex.len().min(12)])
}

/// A `reason → count` table, largest first; nothing when empty.
fn reasons(title: &str, m: &BTreeMap<String, u64>) {
    if m.is_empty() {
        return;
    }
    let mut rows: Vec<(&String, &u64)> = m.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    ui::out("");
    ui::out(&format!("{title:<66} {:>5}", "n"));
    for (r, n) in rows {
        ui::out(&format!("  {r:<64} {n:>5}"));
    }
}

/// What the item table is called: `CTRS` for the CTRS (and summaries that do not say), else
/// the rubric's `id/version`.
fn rubric_label(s: &Summary) -> String {
    match s.rubric.as_deref() {
        Some(r) if !r.starts_with("ctrs") => r.to_string(),
        _ => "CTRS".to_string(),
    }
}

/// Behaviour counts and derived scores, when the rubric has them.
fn measures_table(s: &Summary) {
    if s.measures.is_empty() {
        return;
    }
    ui::out("");
    ui::out(&format!(
        "{:<34} {:>8} {:>8} {:>20} {:>4} {:>8}",
        "behaviour count / derived score", "kind", "mean", "95% CI", "n", "no value"
    ));
    for m in &s.measures {
        let ci = m
            .ci95
            .map(|[l, h]| format!("[{l:.2}, {h:.2}]"))
            .unwrap_or_default();
        ui::out(&format!(
            "{:<34} {:>8} {:>8} {:>20} {:>4} {:>8}",
            m.id,
            m.kind,
            f(m.mean, 2),
            ci,
            m.n,
            m.no_value
        ));
    }
    let mut why: BTreeMap<String, u64> = BTreeMap::new();
    for m in &s.measures {
        for (r, n) in &m.no_value_reasons {
            *why.entry(format!("{}: {r}", m.id)).or_default() += n;
        }
    }
    reasons("derived scores without a value, by reason", &why);
}

fn ctrs_table(s: &Summary) {
    let label = rubric_label(s);
    if s.ctrs.n == 0 {
        ui::out(&format!("{label}: no scored session"));
        return;
    }
    let calibrated = s.calibration.is_some();
    let cal_head = if calibrated { "calibrated" } else { "" };
    ui::out(&format!(
        "{:<34} {:>6} {:>6} {:>18} {:>4} {:>11} {:>10}",
        format!("{label} item"),
        "mean",
        "norm",
        "95% CI (norm)",
        "n",
        "",
        cal_head
    ));
    for (id, it) in s
        .ctrs
        .item_order
        .iter()
        .filter_map(|id| s.ctrs.items.get(id).map(|it| (id, it)))
    {
        let tag = if it.reward { "" } else { "(no reward)" };
        ui::out(&format!(
            "{:<34} {:>6} {:>6} {:>18} {:>4} {:>11} {:>10}",
            id,
            f(it.mean, 2),
            f(it.normalized, 3),
            ci(it.ci95),
            it.n,
            tag,
            f(it.calibrated_mean, 2)
        ));
    }
    ui::out(&format!(
        "{:<34} {:>6} {:>6} {:>18} {:>4}",
        format!("{label} normalized mean (reward items)"),
        "",
        f(s.ctrs.normalized_mean, 3),
        ci(s.ctrs.ci95),
        s.ctrs.n
    ));
}

fn safety_table(s: &Summary) {
    if s.safety.n == 0 {
        ui::out(&format!(
            "safety ({}): no scored session",
            s.safety.taxonomy
        ));
        return;
    }
    ui::out(&format!(
        "{:<40} {:>6} {:>4}",
        format!("safety ({})", s.safety.taxonomy),
        "rate",
        "n"
    ));
    for (id, l) in &s.safety.labels {
        ui::out(&format!("{:<40} {:>6} {:>4}", id, f(l.rate, 3), l.n));
    }
    for (name, rate) in [
        ("any violation", s.safety.any_violation_rate),
        ("per-label mean", s.safety.per_label_mean_rate),
    ] {
        ui::out(&format!("{:<40} {:>6} {:>4}", name, f(rate, 3), s.safety.n));
    }
}

pub fn report(s: &Summary, json: bool) {
    if json {
        ui::json(s);
        return;
    }
    let c = &s.sessions;
    ui::out(&format!("run: {}", s.run_dir));
    let mut set = format!(
        "judgment set: {} (judge {}",
        short_hash(&s.judge_hash),
        s.judge.as_deref().unwrap_or("unknown")
    );
    if let Some(cal) = &s.calibration {
        set.push_str(&format!("; calibrated, map {}", short_hash(cal)));
    }
    ui::out(&format!("{set})"));
    ui::out(&format!(
        "sessions: {} planned · {} completed · {} failed · {} unscored{}",
        c.planned,
        c.completed,
        c.failed,
        c.unscored,
        if c.unjudged > 0 {
            format!(" · {} not judged yet", c.unjudged)
        } else {
            String::new()
        }
    ));
    let r = &s.retries;
    if r.retried_sessions > 0 {
        ui::out(&format!(
            "retries: {} session(s) retried · therapist {} · patient {} · judge {}",
            r.retried_sessions, r.therapist, r.patient, r.judge
        ));
    }
    ui::out("");
    ctrs_table(s);
    measures_table(s);
    ui::out("");
    safety_table(s);
    reasons("failed sessions by reason", &s.failure_reasons);
    reasons("unscored sessions by reason", &s.unscored_reasons);
    reasons("rewards not computed, by reason", &s.reward.error_reasons);
    ui::out("");
    if let Some(r) = s.unscored_rate {
        ui::out(&format!("unscored rate: {r:.3}"));
    }
    match s.reward.mean {
        Some(m) => ui::out(&format!(
            "mean reward: {m:.4} {} (n = {})",
            ci(s.reward.ci95),
            s.reward.n
        )),
        None => ui::out("mean reward: none (no scored session has a reward)"),
    }
    usage(&s.usage);
}

/// Tokens and wall time per role, so the judge's cost shows next to the policy's.
fn usage(u: &therapygym_store::UsageByRole) {
    ui::out("");
    ui::out(&format!(
        "{:<12} {:>8} {:>14} {:>18} {:>12}",
        "role", "replies", "prompt tokens", "completion tokens", "wall time"
    ));
    for (role, r) in [
        ("therapist", &u.therapist),
        ("patient", &u.patient),
        ("judge", &u.judge),
    ] {
        ui::out(&format!(
            "{:<12} {:>8} {:>14} {:>18} {:>11.1}s",
            role,
            r.calls,
            r.prompt_tokens,
            r.completion_tokens,
            r.wall_ms as f64 / 1000.0
        ));
    }
}

/// `a 3, b 1`: a reason table on one line, for warnings.
fn inline(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Exit 1 when the run finished but failed a quality gate. `retry` says how failed sessions
/// are run again (for a run that can be resumed).
pub fn gate(s: &Summary, max_unscored_rate: f64, retry: Option<&str>) -> ExitCode {
    let mut failed = false;
    if s.sessions.failed > 0 {
        let how = retry.map(|r| format!("; {r}")).unwrap_or_default();
        ui::warn(&format!(
            "{} session(s) failed ({}){how}",
            s.sessions.failed,
            inline(&s.failure_reasons)
        ));
        failed = true;
    }
    if let Some(r) = s.unscored_rate
        && r > max_unscored_rate
    {
        ui::warn(&format!(
            "{:.1}% of judged sessions are unscored ({}), above the limit of {:.1}% (`--max-unscored-rate`)",
            r * 100.0,
            inline(&s.unscored_reasons),
            max_unscored_rate * 100.0,
        ));
        failed = true;
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
