//! Profile vocabularies (core beliefs, emotions, styles, risk cues), loaded from
//! `data/profiles/vocab.toml` so a new vocabulary needs no code change.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Location};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Term {
    pub id: String,
    /// Patient-Ψ's label string, e.g. "I am incompetent.".
    pub label: String,
    #[serde(default)]
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Style {
    pub id: String,
    /// Instructions to the role-playing patient (second person).
    pub description: String,
    pub max_sentences: u32,
    #[serde(default)]
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskCueKind {
    pub id: String,
    /// What the patient should convey (second person).
    pub description: String,
    /// Safety labels this cue exercises.
    #[serde(default)]
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vocabulary {
    pub version: u32,
    pub helpless: Vec<Term>,
    pub unlovable: Vec<Term>,
    pub worthless: Vec<Term>,
    pub emotions: Vec<Term>,
    pub styles: Vec<Style>,
    pub risk_cues: Vec<RiskCueKind>,
}

/// Which belief list a term belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeliefKind {
    Helpless,
    Unlovable,
    Worthless,
}

impl BeliefKind {
    pub fn field(self) -> &'static str {
        match self {
            BeliefKind::Helpless => "helpless_belief",
            BeliefKind::Unlovable => "unlovable_belief",
            BeliefKind::Worthless => "worthless_belief",
        }
    }
}

/// Lower-case, collapse whitespace, unify apostrophes, drop a final period.
fn normalise(s: &str) -> String {
    let s = s
        .trim()
        .to_lowercase()
        .replace(['\u{2019}', '\u{2018}'], "'");
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    s.trim_end_matches('.').trim().to_string()
}

/// A vocabulary match: the id, and whether it needed the typo-tolerant fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub id: String,
    pub fuzzy: bool,
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn lookup_terms(terms: &[Term], text: &str) -> Option<Match> {
    let n = normalise(text);
    for t in terms {
        if t.id == text.trim() || normalise(&t.id.replace('_', " ")) == n {
            return Some(Match {
                id: t.id.clone(),
                fuzzy: false,
            });
        }
        if normalise(&t.label) == n || t.aliases.iter().any(|a| normalise(a) == n) {
            return Some(Match {
                id: t.id.clone(),
                fuzzy: false,
            });
        }
    }
    // Typo tolerance (upstream data has "I am a failture."): one unique label within distance 2.
    let close: Vec<&Term> = terms
        .iter()
        .filter(|t| edit_distance(&normalise(&t.label), &n) <= 2)
        .collect();
    match close.as_slice() {
        [one] => Some(Match {
            id: one.id.clone(),
            fuzzy: true,
        }),
        _ => None,
    }
}

impl Vocabulary {
    pub fn parse(text: &str, path: &Path) -> Result<Self, DataError> {
        let v: Vocabulary = toml::from_str(text).map_err(|e| {
            DataError::invalid(
                Location {
                    file: path.into(),
                    line: None,
                    id: None,
                },
                format!("not a valid vocabulary file: {e}"),
            )
        })?;
        Ok(v)
    }

    pub fn terms(&self, kind: BeliefKind) -> &[Term] {
        match kind {
            BeliefKind::Helpless => &self.helpless,
            BeliefKind::Unlovable => &self.unlovable,
            BeliefKind::Worthless => &self.worthless,
        }
    }

    pub fn belief(&self, kind: BeliefKind, text: &str) -> Option<Match> {
        lookup_terms(self.terms(kind), text)
    }

    pub fn emotion(&self, text: &str) -> Option<Match> {
        lookup_terms(&self.emotions, text)
    }

    pub fn style(&self, text: &str) -> Option<&Style> {
        let n = normalise(text);
        self.styles
            .iter()
            .find(|s| s.id == n || s.aliases.iter().any(|a| normalise(a) == n))
    }

    pub fn risk_cue(&self, id: &str) -> Option<&RiskCueKind> {
        self.risk_cues.iter().find(|r| r.id == id)
    }

    pub fn term_label(&self, kind: BeliefKind, id: &str) -> Option<&str> {
        self.terms(kind)
            .iter()
            .find(|t| t.id == id)
            .map(|t| t.label.as_str())
    }

    pub fn emotion_label(&self, id: &str) -> Option<&str> {
        self.emotions
            .iter()
            .find(|t| t.id == id)
            .map(|t| t.label.as_str())
    }

    pub fn ids(terms: &[Term]) -> String {
        terms
            .iter()
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn style_ids(&self) -> String {
        self.styles
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn risk_cue_ids(&self) -> String {
        self.risk_cues
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_rules() {
        let v = crate::builtin::vocabulary().unwrap();
        assert_eq!(
            v.belief(BeliefKind::Helpless, "incompetent").unwrap().id,
            "incompetent"
        );
        assert_eq!(
            v.belief(BeliefKind::Helpless, "I am incompetent.")
                .unwrap()
                .id,
            "incompetent"
        );
        assert_eq!(
            v.belief(BeliefKind::Helpless, "I am a failture.")
                .unwrap()
                .id,
            "failure"
        );
        let m = v.belief(BeliefKind::Helpless, "I am defectve.").unwrap();
        assert_eq!((m.id.as_str(), m.fuzzy), ("defective", true));
        assert!(v.belief(BeliefKind::Helpless, "I am unlovable.").is_none());
        assert_eq!(
            v.emotion("anxious, worried, fearful, scared, tense")
                .unwrap()
                .id,
            "anxious"
        );
        assert_eq!(v.emotion("sad").unwrap().id, "sad");
        assert_eq!(v.style("plain").unwrap().max_sentences, 5);
        assert_eq!(v.style("go off on tangents").unwrap().id, "tangent");
    }
}
