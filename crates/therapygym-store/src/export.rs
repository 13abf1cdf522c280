//! `therapygym export`: one record per session, JSONL or CSV.
//!
//! JSONL record: `{session_id, profile_id, epoch, seed, status, style, error, judge_hash,
//! messages[{role, content}], judgment{ctrs{ITEM:{score, rationale}}, safety{LABEL:{flag,
//! evidence}}, calibrated{ITEM: score}?, codes[{utterance, codes}]?, counts{CODE: n}?,
//! derived{ID: value|null}?, derived_reasons{ID: why}?, unscored_reason}, reward, reward_error,
//! labels{COL: value}?, annotations{COL: [value|null per message]}?}` (`codes`, `counts` and
//! `derived` for rubrics with behaviour codes or derived scores; `labels` and `annotations` for
//! dialogues imported from a CSV with `--label-col` / `--annotation-col`; the CSV then has
//! `label:COL` columns and an `annotations` column of JSON).
//! `judgment` is null for a session the chosen judge set has not judged; `unscored_reason` is
//! null for a scored session; `error` says why a session failed; `judge_hash` names the
//! judgment set the row's judgment comes from. The same records (messages only) are what
//! `therapygym import-transcripts` reads back.
//!
//! Exports are diffable: rows in session-id order, CSV item and label columns in rubric and
//! taxonomy order when the caller gives them ([`Columns`]).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use therapygym_core::{Rubric, Verdict};

use crate::store::{JudgmentRow, SessionRecord};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportMessage {
    pub role: String,
    pub content: String,
}

/// Why a scored judgment has no reward (its breakdown is `{"error": …}`).
fn reward_error(j: &JudgmentRow) -> Option<&str> {
    match (&j.reward, &j.reward_breakdown) {
        (None, Some(b)) => b.get("error").and_then(Value::as_str),
        _ => None,
    }
}

/// One session's record. `judge_hash` is the set the export reads (rows without a judgment
/// still say which set they were looked up in).
pub fn record_in(s: &SessionRecord, j: Option<&JudgmentRow>, judge_hash: Option<&str>) -> Value {
    record_with(s, j, judge_hash, None)
}

/// [`record_in`] with the judgment set's rubric: a scored judgment then also carries its
/// behaviour codes, code counts and derived scores (a derived score without a value is null,
/// its reason under `derived_reasons`).
pub fn record_with(
    s: &SessionRecord,
    j: Option<&JudgmentRow>,
    judge_hash: Option<&str>,
    rubric: Option<&Rubric>,
) -> Value {
    let messages: Vec<ExportMessage> = s
        .transcript
        .turns
        .iter()
        .map(|t| ExportMessage {
            role: t.speaker.as_str().into(),
            content: t.text.clone(),
        })
        .collect();
    let judgment = j.map(|j| {
        let mut v = match &j.verdict {
            Verdict::Scored { judgment } => json!({
                "ctrs": judgment.ctrs.iter().map(|(k, v)| (k.clone(), json!({"score": v.score, "rationale": v.rationale}))).collect::<Map<_, _>>(),
                "safety": judgment.safety.iter().map(|(k, v)| (k.clone(), json!({"flag": v.flag, "evidence": v.evidence}))).collect::<Map<_, _>>(),
                "unscored_reason": null,
            }),
            Verdict::Unscored { reason, detail } => json!({"ctrs": null, "safety": null, "unscored_reason": reason.as_str(), "unscored_detail": detail}),
        };
        if let (Some(c), Some(obj)) = (&j.calibrated, v.as_object_mut()) {
            obj.insert("calibrated".into(), c.clone());
        }
        if let (Verdict::Scored { judgment }, Some(obj)) = (&j.verdict, v.as_object_mut()) {
            if !judgment.codes.is_empty() {
                obj.insert("codes".into(), json!(judgment.codes));
            }
            if let Some(r) = rubric.filter(|r| !r.codes.is_empty() || !r.derived.is_empty()) {
                obj.insert("counts".into(), json!(r.code_counts(judgment)));
                let derived = r.derive(judgment);
                let values: Map<String, Value> = derived
                    .iter()
                    .map(|(k, d)| (k.clone(), json!(d.value)))
                    .collect();
                let reasons: Map<String, Value> = derived
                    .iter()
                    .filter_map(|(k, d)| d.reason.as_ref().map(|r| (k.clone(), json!(r))))
                    .collect();
                obj.insert("derived".into(), Value::Object(values));
                obj.insert("derived_reasons".into(), Value::Object(reasons));
            }
        }
        v
    });
    let mut rec = json!({
        "session_id": s.id,
        "profile_id": s.profile_id,
        "epoch": s.epoch,
        "seed": s.seed,
        "status": s.status,
        "style": s.style,
        "error": s.error,
        "judge_hash": j.map(|j| j.judge_hash.as_str()).or(judge_hash),
        "messages": messages,
        "judgment": judgment,
        "reward": j.and_then(|j| j.reward),
        "reward_error": j.and_then(reward_error),
    });
    // An imported corpus's dialogue labels and per-message annotations, only where the import
    // kept some (other records stay as they were).
    if let Some(obj) = rec.as_object_mut() {
        for key in ["labels", "annotations"] {
            if let Some(v) = s.meta.get(key) {
                obj.insert(key.into(), v.clone());
            }
        }
    }
    rec
}

/// The dialogue-label keys of the rows' imports (sorted), for the CSV's `label:KEY` columns.
fn label_keys(rows: &[(SessionRecord, Option<JudgmentRow>)]) -> Vec<String> {
    let mut keys: Vec<String> = rows
        .iter()
        .filter_map(|(s, _)| s.meta.get("labels").and_then(Value::as_object))
        .flat_map(|m| m.keys().cloned())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

pub fn record(s: &SessionRecord, j: Option<&JudgmentRow>) -> Value {
    record_in(s, j, None)
}

/// The CSV's score columns: CTRS items and safety labels, in this order. [`Columns::seen`]
/// takes them from the rows (sorted); callers with the judgment set's rubric and taxonomy give
/// their order instead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Columns {
    pub items: Vec<String>,
    /// Behaviour codes (a column of counts each), after the items.
    pub codes: Vec<String>,
    /// Derived scores, after the codes (empty cell = no value).
    pub derived: Vec<String>,
    pub labels: Vec<String>,
}

impl Columns {
    /// The columns of a rubric and its enabled labels, in file order.
    pub fn of(rubric: &Rubric, labels: Vec<String>) -> Self {
        Self {
            items: rubric.items.iter().map(|i| i.id.clone()).collect(),
            codes: rubric.codes.iter().map(|c| c.id.clone()).collect(),
            derived: rubric.derived.iter().map(|d| d.id.clone()).collect(),
            labels,
        }
    }
}

impl Columns {
    /// Item and label ids seen across the judgments, sorted.
    pub fn seen(rows: &[(SessionRecord, Option<JudgmentRow>)]) -> Self {
        let (mut items, mut labels) = (Vec::new(), Vec::new());
        for (_, j) in rows {
            if let Some(Verdict::Scored { judgment }) = j.as_ref().map(|j| &j.verdict) {
                for k in judgment.ctrs.keys() {
                    if !items.contains(k) {
                        items.push(k.clone());
                    }
                }
                for k in judgment.safety.keys() {
                    if !labels.contains(k) {
                        labels.push(k.clone());
                    }
                }
            }
        }
        items.sort();
        labels.sort();
        Self {
            items,
            labels,
            ..Self::default()
        }
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Rows in session-id order.
fn sorted(
    rows: &[(SessionRecord, Option<JudgmentRow>)],
) -> Vec<&(SessionRecord, Option<JudgmentRow>)> {
    let mut v: Vec<_> = rows.iter().collect();
    v.sort_by(|a, b| a.0.id.cmp(&b.0.id));
    v
}

/// CSV with the columns found in the rows (see [`csv_in`]).
pub fn csv(rows: &[(SessionRecord, Option<JudgmentRow>)]) -> String {
    csv_in(rows, &Columns::seen(rows), None, None)
}

/// CSV: one row per session in session-id order; scores and flags as columns (`ITEM_calibrated`
/// after the raw items when the set is calibrated), the transcript as a JSON string. Empty
/// cells mean "not scored" (never 0).
pub fn csv_in(
    rows: &[(SessionRecord, Option<JudgmentRow>)],
    cols: &Columns,
    judge_hash: Option<&str>,
    rubric: Option<&Rubric>,
) -> String {
    let calibrated = rows
        .iter()
        .any(|(_, j)| j.as_ref().is_some_and(|j| j.calibrated.is_some()));
    let mut header: Vec<String> = [
        "session_id",
        "profile_id",
        "epoch",
        "status",
        "unscored_reason",
        "reward",
        "error",
        "judge_hash",
        "reward_error",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    header.extend(cols.items.iter().cloned());
    if calibrated {
        header.extend(cols.items.iter().map(|i| format!("{i}_calibrated")));
    }
    header.extend(cols.codes.iter().cloned());
    header.extend(cols.derived.iter().cloned());
    header.extend(cols.labels.iter().cloned());
    let dialogue_labels = label_keys(rows);
    header.extend(dialogue_labels.iter().map(|k| format!("label:{k}")));
    let annotated = rows
        .iter()
        .any(|(s, _)| s.meta.get("annotations").is_some());
    if annotated {
        header.push("annotations".into());
    }
    header.push("messages".into());
    let mut out = header.join(",");
    out.push('\n');
    for (s, j) in sorted(rows) {
        let rec = record_with(s, j.as_ref(), judge_hash, rubric);
        let text = |v: &Value| match v {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let mut cells = vec![
            s.id.clone(),
            s.profile_id.clone(),
            s.epoch.to_string(),
            text(&rec["status"]),
            text(&rec["judgment"]["unscored_reason"]),
            text(&rec["reward"]),
            text(&rec["error"]),
            text(&rec["judge_hash"]),
            text(&rec["reward_error"]),
        ];
        for i in &cols.items {
            cells.push(text(&rec["judgment"]["ctrs"][i]["score"]));
        }
        if calibrated {
            for i in &cols.items {
                cells.push(text(&rec["judgment"]["calibrated"][i]));
            }
        }
        for c in &cols.codes {
            cells.push(text(&rec["judgment"]["counts"][c]));
        }
        for d in &cols.derived {
            cells.push(text(&rec["judgment"]["derived"][d]));
        }
        for l in &cols.labels {
            cells.push(
                rec["judgment"]["safety"][l]["flag"]
                    .as_bool()
                    .map(|x| u8::from(x).to_string())
                    .unwrap_or_default(),
            );
        }
        for k in &dialogue_labels {
            cells.push(text(&rec["labels"][k]));
        }
        if annotated {
            cells.push(text(&rec["annotations"]));
        }
        cells.push(rec["messages"].to_string());
        let line: Vec<String> = cells.iter().map(|c| csv_field(c)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

pub fn jsonl(rows: &[(SessionRecord, Option<JudgmentRow>)]) -> String {
    jsonl_in(rows, None, None)
}

/// JSONL: one record per session, in session-id order.
pub fn jsonl_in(
    rows: &[(SessionRecord, Option<JudgmentRow>)],
    judge_hash: Option<&str>,
    rubric: Option<&Rubric>,
) -> String {
    let mut out = String::new();
    for (s, j) in sorted(rows) {
        out.push_str(&record_with(s, j.as_ref(), judge_hash, rubric).to_string());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_fields() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
    }
}
