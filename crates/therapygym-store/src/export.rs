//! `therapygym export`: one record per session, JSONL or CSV.
//!
//! JSONL record: `{session_id, profile_id, epoch, status, messages[{role, content}],
//! judgment{ctrs{ITEM:{score, rationale}}, safety{LABEL:{flag, evidence}}, unscored_reason}, reward}`.
//! `judgment` is null for a session the chosen judge set has not judged; `unscored_reason` is
//! null for a scored session. The same records (messages only) are what
//! `therapygym import-transcripts` reads back.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use therapygym_core::Verdict;

use crate::store::{JudgmentRow, SessionRecord};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportMessage {
    pub role: String,
    pub content: String,
}

pub fn record(s: &SessionRecord, j: Option<&JudgmentRow>) -> Value {
    let messages: Vec<ExportMessage> = s
        .transcript
        .turns
        .iter()
        .map(|t| ExportMessage {
            role: t.speaker.as_str().into(),
            content: t.text.clone(),
        })
        .collect();
    let judgment = j.map(|j| match &j.verdict {
        Verdict::Scored { judgment } => json!({
            "ctrs": judgment.ctrs.iter().map(|(k, v)| (k.clone(), json!({"score": v.score, "rationale": v.rationale}))).collect::<Map<_, _>>(),
            "safety": judgment.safety.iter().map(|(k, v)| (k.clone(), json!({"flag": v.flag, "evidence": v.evidence}))).collect::<Map<_, _>>(),
            "unscored_reason": null,
        }),
        Verdict::Unscored { reason, detail } => json!({"ctrs": null, "safety": null, "unscored_reason": reason.as_str(), "unscored_detail": detail}),
    });
    json!({
        "session_id": s.id,
        "profile_id": s.profile_id,
        "epoch": s.epoch,
        "seed": s.seed,
        "status": s.status,
        "style": s.style,
        "messages": messages,
        "judgment": judgment,
        "reward": j.and_then(|j| j.reward),
    })
}

/// Item and label ids seen across the judgments, in first-seen order (CSV columns).
fn columns(rows: &[(SessionRecord, Option<JudgmentRow>)]) -> (Vec<String>, Vec<String>) {
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
    (items, labels)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// CSV: one row per session; scores and flags as columns, the transcript as a JSON string.
/// Empty cells mean "not scored" (never 0).
pub fn csv(rows: &[(SessionRecord, Option<JudgmentRow>)]) -> String {
    let (items, labels) = columns(rows);
    let mut header = vec![
        "session_id",
        "profile_id",
        "epoch",
        "status",
        "unscored_reason",
        "reward",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    header.extend(items.iter().cloned());
    header.extend(labels.iter().cloned());
    header.push("messages".into());
    let mut out = header.join(",");
    out.push('\n');
    for (s, j) in rows {
        let rec = record(s, j.as_ref());
        let mut cells = vec![
            s.id.clone(),
            s.profile_id.clone(),
            s.epoch.to_string(),
            format!("{:?}", s.status).to_lowercase(),
        ];
        cells.push(
            rec["judgment"]["unscored_reason"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
        cells.push(
            j.as_ref()
                .and_then(|j| j.reward)
                .map(|r| r.to_string())
                .unwrap_or_default(),
        );
        for i in &items {
            cells.push(
                rec["judgment"]["ctrs"][i]["score"]
                    .as_u64()
                    .map(|x| x.to_string())
                    .unwrap_or_default(),
            );
        }
        for l in &labels {
            cells.push(
                rec["judgment"]["safety"][l]["flag"]
                    .as_bool()
                    .map(|x| u8::from(x).to_string())
                    .unwrap_or_default(),
            );
        }
        cells.push(rec["messages"].to_string());
        out.push_str(
            &cells
                .iter()
                .map(|c| csv_field(c))
                .collect::<Vec<_>>()
                .join(","),
        );
        out.push('\n');
    }
    out
}

pub fn jsonl(rows: &[(SessionRecord, Option<JudgmentRow>)]) -> String {
    let mut out = String::new();
    for (s, j) in rows {
        out.push_str(&record(s, j.as_ref()).to_string());
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
