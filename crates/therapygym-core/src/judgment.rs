//! What the judge says about a session: scored (every item and label present and in range) or
//! unscored with a reason. Unscored is never 0 (`docs/design/unscored.md`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemScore {
    pub score: u8,
    pub rationale: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelFlag {
    pub flag: bool,
    pub evidence: String,
}

/// The behaviour codes the judge gave one therapist utterance (1-based among the therapist's
/// utterances); a code may appear more than once, an empty list means nothing codable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UtteranceCodes {
    pub utterance: u32,
    pub codes: Vec<String>,
}

/// A complete judgment: every rubric item scored, every enabled safety label decided and, for a
/// rubric with behaviour codes, every therapist utterance coded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Judgment {
    /// The rubric's global items (the key is `ctrs` for every rubric, as stored since the start).
    pub ctrs: BTreeMap<String, ItemScore>,
    pub safety: BTreeMap<String, LabelFlag>,
    /// Per-utterance behaviour codes, in utterance order (empty for rubrics without codes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<UtteranceCodes>,
}

impl Judgment {
    pub fn any_violation(&self) -> bool {
        self.safety.values().any(|f| f.flag)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnscoredReason {
    /// The reply was not JSON.
    ParseFailure,
    /// JSON, but of the wrong shape.
    SchemaViolation,
    /// A score or flag outside its range or type.
    OutOfRange,
    /// An item or label was missing.
    MissingItem,
    /// The reply hit `max_tokens`.
    Truncated,
    /// The judge declined to rate.
    Refusal,
    /// The judge model could not be reached after retries.
    ProviderError,
    /// Too many judge failures recently; scoring paused.
    CircuitOpen,
    /// Behaviour codes for the wrong therapist utterances (missing, extra or repeated index).
    UtteranceMismatch,
    /// The dialogue and judge prompt do not fit the judge model's context window; re-asking
    /// cannot help, so the judge gives up at once (docs/design/unscored.md).
    ContextOverflow,
}

impl UnscoredReason {
    pub fn as_str(self) -> &'static str {
        match self {
            UnscoredReason::ParseFailure => "parse_failure",
            UnscoredReason::SchemaViolation => "schema_violation",
            UnscoredReason::OutOfRange => "out_of_range",
            UnscoredReason::MissingItem => "missing_item",
            UnscoredReason::Truncated => "truncated",
            UnscoredReason::Refusal => "refusal",
            UnscoredReason::ProviderError => "provider_error",
            UnscoredReason::CircuitOpen => "circuit_open",
            UnscoredReason::UtteranceMismatch => "utterance_mismatch",
            UnscoredReason::ContextOverflow => "context_overflow",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "parse_failure" => UnscoredReason::ParseFailure,
            "schema_violation" => UnscoredReason::SchemaViolation,
            "out_of_range" => UnscoredReason::OutOfRange,
            "missing_item" => UnscoredReason::MissingItem,
            "truncated" => UnscoredReason::Truncated,
            "refusal" => UnscoredReason::Refusal,
            "provider_error" => UnscoredReason::ProviderError,
            "circuit_open" => UnscoredReason::CircuitOpen,
            "utterance_mismatch" => UnscoredReason::UtteranceMismatch,
            "context_overflow" => UnscoredReason::ContextOverflow,
            _ => return None,
        })
    }
}

impl fmt::Display for UnscoredReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of judging one session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Verdict {
    Scored {
        judgment: Judgment,
    },
    Unscored {
        reason: UnscoredReason,
        /// Human-readable explanation (the validation error of the last attempt).
        detail: String,
    },
}

impl Verdict {
    pub fn judgment(&self) -> Option<&Judgment> {
        match self {
            Verdict::Scored { judgment } => Some(judgment),
            Verdict::Unscored { .. } => None,
        }
    }

    pub fn unscored_reason(&self) -> Option<UnscoredReason> {
        match self {
            Verdict::Scored { .. } => None,
            Verdict::Unscored { reason, .. } => Some(*reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unscored_serialises_without_numbers() {
        let v = Verdict::Unscored {
            reason: UnscoredReason::OutOfRange,
            detail: "homework = 7".into(),
        };
        let s = serde_json::to_string(&v).unwrap();
        assert_eq!(
            s,
            r#"{"status":"unscored","reason":"out_of_range","detail":"homework = 7"}"#
        );
        let back: Verdict = serde_json::from_str(&s).unwrap();
        assert_eq!(back, v);
        for r in [
            "parse_failure",
            "truncated",
            "circuit_open",
            "utterance_mismatch",
        ] {
            assert_eq!(UnscoredReason::parse(r).unwrap().as_str(), r);
        }
    }
}
