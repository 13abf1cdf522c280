//! A session as a person reads it: the transcript split into text segments (safety evidence
//! marked), and per judgment set every item's score with its rationale and every label's flag
//! with its evidence. Pages render these with auto-escaping, so model text is always text.

use serde::Serialize;
use therapygym_core::{Profile, Verdict};
use therapygym_store::{SessionRecord, SessionStatus};

use crate::run::{RunData, SetData, scrub};

/// A file- and URL-safe name for a session id: `[A-Za-z0-9._-]` kept, anything else `_`, plus
/// 8 hex digits of the id's hash when anything was replaced (so names never collide).
pub fn slug(id: &str) -> String {
    let clean: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    if clean == id && !clean.starts_with('.') {
        clean
    } else {
        let h = therapygym_core::hash::sha256_hex(id.as_bytes());
        format!("{}-{}", clean.trim_start_matches('.'), &h[..8])
    }
}

/// A run of text, marked when it quotes the evidence of flagged labels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    pub text: String,
    /// Label ids whose evidence this text is (empty: plain text).
    pub marks: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TurnView {
    pub index: usize,
    pub speaker: &'static str,
    pub segments: Vec<Segment>,
    pub tokens: Option<u32>,
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemView {
    pub id: String,
    pub name: String,
    pub score: Option<u8>,
    pub max: f64,
    /// Score position on its scale, 0..=100 (for the bar).
    pub percent: f64,
    pub rationale: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelView {
    pub id: String,
    pub name: String,
    pub flag: Option<bool>,
    pub evidence: String,
    /// The evidence was found in the transcript (and is highlighted there).
    pub found: bool,
}

/// One judgment set's verdict on the session.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JudgeView {
    pub hash: String,
    pub short_hash: String,
    pub judge: String,
    /// `scored`, `unscored` or `unjudged`.
    pub status: &'static str,
    pub unscored_reason: Option<String>,
    pub unscored_detail: Option<String>,
    pub reward: Option<f64>,
    pub items: Vec<ItemView>,
    pub labels: Vec<LabelView>,
}

/// The profile the patient played.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProfileView {
    pub name: String,
    pub situation: String,
    pub auto_thought: String,
    pub core_beliefs: Vec<String>,
    pub emotions: Vec<String>,
    pub history: String,
    pub risk_cues: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionView {
    pub id: String,
    pub slug: String,
    pub profile_id: String,
    pub epoch: u32,
    pub style: String,
    pub status: &'static str,
    pub end_reason: Option<String>,
    pub error: Option<String>,
    pub turns: Vec<TurnView>,
    pub judges: Vec<JudgeView>,
    pub profile: Option<ProfileView>,
}

fn normalize_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Byte range of `needle` in `hay`, ignoring ASCII case (needles are judge quotes).
fn find_ci(hay: &str, needle: &str) -> Option<(usize, usize)> {
    if needle.is_empty() || needle.len() > hay.len() {
        return None;
    }
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    (0..=h.len() - n.len())
        .filter(|&i| hay.is_char_boundary(i) && hay.is_char_boundary(i + n.len()))
        .find(|&i| h[i..i + n.len()].eq_ignore_ascii_case(n))
        .map(|i| (i, i + n.len()))
}

/// The parts of an evidence string worth looking for: the whole quote, else each piece
/// between ellipses, without surrounding quote marks; pieces under 8 characters are too
/// common to mark.
fn quotes(evidence: &str) -> Vec<String> {
    let trim = |s: &str| {
        normalize_ws(
            s.trim()
                .trim_matches(|c: char| "\"'“”‘’".contains(c))
                .trim(),
        )
    };
    let whole = trim(evidence);
    let mut out = vec![whole.clone()];
    for part in whole.split("...").flat_map(|p| p.split('…')) {
        let p = trim(part);
        if p != whole {
            out.push(p);
        }
    }
    out.retain(|q| q.chars().count() >= 8);
    out
}

/// Splits `text` into segments, marking every occurrence of each `(label, evidence)`.
fn segments(text: &str, evidence: &[(String, String)]) -> (Vec<Segment>, Vec<String>) {
    let text = normalize_ws(text);
    let mut marks: Vec<Vec<String>> = vec![Vec::new(); text.len()];
    let mut found = Vec::new();
    for (label, ev) in evidence {
        for q in quotes(ev) {
            if let Some((a, b)) = find_ci(&text, &q) {
                for m in &mut marks[a..b] {
                    if !m.contains(label) {
                        m.push(label.clone());
                    }
                }
                found.push(label.clone());
                break;
            }
        }
    }
    let mut out: Vec<Segment> = Vec::new();
    for (i, ch) in text.char_indices() {
        match out.last_mut() {
            Some(last) if last.marks == marks[i] => last.text.push(ch),
            _ => out.push(Segment {
                text: ch.to_string(),
                marks: marks[i].clone(),
            }),
        }
    }
    (out, found)
}

fn judge_view(s: &SessionRecord, set: &SetData, found: &[String]) -> JudgeView {
    let row = set.judgments.get(&s.id);
    let judgment = row.and_then(|r| r.verdict.judgment());
    let defs = &set.definitions;
    let items = defs
        .items
        .iter()
        .map(|i| {
            let got = judgment.and_then(|j| j.ctrs.get(&i.id));
            let score = got.map(|g| g.score);
            let span = (i.max - i.min).max(1.0);
            ItemView {
                id: i.id.clone(),
                name: i.name.clone(),
                score,
                max: i.max,
                percent: score.map_or(0.0, |v| (f64::from(v) - i.min) / span * 100.0),
                rationale: got.map(|g| g.rationale.clone()).unwrap_or_default(),
            }
        })
        .collect();
    let labels = defs
        .labels
        .iter()
        .map(|l| {
            let got = judgment.and_then(|j| j.safety.get(&l.id));
            LabelView {
                id: l.id.clone(),
                name: l.name.clone(),
                flag: got.map(|g| g.flag),
                evidence: got.map(|g| g.evidence.clone()).unwrap_or_default(),
                found: found.contains(&l.id),
            }
        })
        .collect();
    let (status, reason, detail) = match row.map(|r| &r.verdict) {
        None => ("unjudged", None, None),
        Some(Verdict::Scored { .. }) => ("scored", None, None),
        Some(Verdict::Unscored { reason, detail }) => (
            "unscored",
            Some(reason.as_str().to_string()),
            Some(detail.clone()),
        ),
    };
    JudgeView {
        hash: set.set.hash.clone(),
        short_hash: set.short_hash(),
        judge: set.judge.clone(),
        status,
        unscored_reason: reason,
        unscored_detail: detail,
        reward: row.and_then(|r| r.reward),
        items,
        labels,
    }
}

fn profile_view(p: &Profile) -> ProfileView {
    let mut core_beliefs = p.helpless_belief.clone();
    core_beliefs.extend(p.unlovable_belief.iter().cloned());
    core_beliefs.extend(p.worthless_belief.iter().cloned());
    ProfileView {
        name: p.name.clone(),
        situation: p.situation.clone(),
        auto_thought: p.auto_thought.clone(),
        core_beliefs,
        emotions: p.emotion.clone(),
        history: p.history.clone(),
        risk_cues: p
            .risk_cues
            .iter()
            .map(|c| format!("{}: {}", c.kind, c.detail))
            .collect(),
    }
}

/// The session with the verdicts of `sets` (side by side when several); evidence of labels a
/// set flagged is marked in the transcript.
pub fn session_view(run: &RunData, s: &SessionRecord, sets: &[&SetData]) -> SessionView {
    let evidence: Vec<(String, String)> = sets
        .iter()
        .filter_map(|set| set.judgments.get(&s.id)?.verdict.judgment().cloned())
        .flat_map(|j| {
            j.safety
                .into_iter()
                .filter(|(_, f)| f.flag)
                .map(|(id, f)| (id, f.evidence))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut found = Vec::new();
    let turns = s
        .transcript
        .turns
        .iter()
        .enumerate()
        .map(|(index, t)| {
            let (segments, f) = segments(&t.text, &evidence);
            found.extend(f);
            TurnView {
                index,
                speaker: t.speaker.as_str(),
                segments,
                tokens: t.completion_tokens,
                finish_reason: t.finish_reason.clone(),
            }
        })
        .collect();
    SessionView {
        id: s.id.clone(),
        slug: slug(&s.id),
        profile_id: s.profile_id.clone(),
        epoch: s.epoch,
        style: s.style.clone(),
        status: match s.status {
            SessionStatus::Completed => "completed",
            SessionStatus::Failed => "failed",
            SessionStatus::Expired => "expired",
        },
        end_reason: s.end_reason.clone(),
        error: s.error.as_deref().map(scrub),
        judges: sets.iter().map(|set| judge_view(s, set, &found)).collect(),
        turns,
        profile: run.profiles.get(&s.profile_id).map(profile_view),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_safe_and_distinct() {
        assert_eq!(slug("tg-001.a"), "tg-001.a");
        let a = slug("tg-001:0");
        assert!(a.starts_with("tg-001_0-") && a.len() == "tg-001_0-".len() + 8);
        assert_ne!(slug("a:b"), slug("a/b"));
        assert!(!slug("../x").contains('/'));
        assert!(!slug(".hidden").starts_with('.'));
    }

    #[test]
    fn evidence_is_marked_case_insensitively_and_by_pieces() {
        let ev = vec![(
            "missed_crisis".to_string(),
            "\"Everyone would be better off\" ... I can't go on".to_string(),
        )];
        let (segs, found) = segments("Honestly  everyone would be BETTER off without me.", &ev);
        assert_eq!(found, ["missed_crisis"]);
        let marked: Vec<&str> = segs
            .iter()
            .filter(|s| !s.marks.is_empty())
            .map(|s| s.text.as_str())
            .collect();
        assert_eq!(marked, ["everyone would be BETTER off"]);
        let plain: String = segs.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(plain, "Honestly everyone would be BETTER off without me.");
        let (_, none) = segments("nothing here", &ev);
        assert!(none.is_empty());
        // Multi-byte text around a match keeps char boundaries.
        let (segs, _) = segments("ça va — everyone would be better off", &ev);
        assert!(segs.iter().any(|s| !s.marks.is_empty()));
    }
}
