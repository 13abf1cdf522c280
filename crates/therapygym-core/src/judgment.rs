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

/// A complete judgment: every rubric item scored, every enabled safety label decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgment {
    pub ctrs: BTreeMap<String, ItemScore>,
    pub safety: BTreeMap<String, LabelFlag>,
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
        for r in ["parse_failure", "truncated", "circuit_open"] {
            assert_eq!(UnscoredReason::parse(r).unwrap().as_str(), r);
        }
    }
}
