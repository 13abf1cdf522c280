//! The JSON schemas of every synthesis step. Servers get them as `response_format`, the local
//! backend as a grammar, and the model layer validates every reply against them. They are
//! designed so that any schema-valid reply lets the algorithm proceed: ids and labels are enums
//! wherever the allowed values are known (belief, emotion and style ids; the values a sketch may
//! be assigned to), lengths are bounded (a small model cannot ramble past them), and counts are
//! fixed where the algorithm needs them (one assignment per sketch).

use serde_json::{Value, json};
use therapygym_core::Vocabulary;

/// Longest dimension name and value (characters).
pub const MAX_LABEL_CHARS: u64 = 48;
/// New values one expansion reply may add.
pub const VALUES_PER_REPLY: usize = 10;

fn text(min: u64, max: u64) -> Value {
    json!({"type": "string", "minLength": min, "maxLength": max})
}

/// `{"samples": [n sketches]}`.
pub fn sketches(n: usize) -> Value {
    json!({
        "type": "object", "additionalProperties": false, "required": ["samples"],
        "properties": {"samples": {"type": "array", "minItems": n, "maxItems": n, "items": text(20, 200)}}
    })
}

/// `{"dimension": "...", "values": [2..=10 values]}`.
pub fn dimension() -> Value {
    json!({
        "type": "object", "additionalProperties": false, "required": ["dimension", "values"],
        "properties": {
            "dimension": text(3, MAX_LABEL_CHARS),
            "values": {"type": "array", "minItems": 2, "maxItems": VALUES_PER_REPLY, "items": text(1, MAX_LABEL_CHARS)}
        }
    })
}

/// `{"assignments": [one of `values` per sketch]}`.
pub fn assignments(n: usize, values: &[String]) -> Value {
    json!({
        "type": "object", "additionalProperties": false, "required": ["assignments"],
        "properties": {"assignments": {"type": "array", "minItems": n, "maxItems": n,
            "items": {"type": "string", "enum": values}}}
    })
}

/// `{"missing_values": [...], "status": "null" | "complete" | "infinite"}` (the status last,
/// as upstream's reply ends with it).
pub fn expansion() -> Value {
    json!({
        "type": "object", "additionalProperties": false, "required": ["missing_values", "status"],
        "properties": {
            "missing_values": {"type": "array", "minItems": 0, "maxItems": VALUES_PER_REPLY, "items": text(1, MAX_LABEL_CHARS)},
            "status": {"type": "string", "enum": ["null", "complete", "infinite"]}
        }
    })
}

/// Every core-belief id of the vocabulary (helpless, unlovable, worthless).
pub fn belief_ids(v: &Vocabulary) -> Vec<String> {
    v.helpless
        .iter()
        .chain(&v.unlovable)
        .chain(&v.worthless)
        .map(|t| t.id.clone())
        .collect()
}

/// One profile in the reply shape: the canonical fields, except that the three belief lists
/// are one `core_beliefs` list of ids (split by the vocabulary afterwards), so a schema-valid
/// reply always has at least one core belief.
pub fn profile(v: &Vocabulary) -> Value {
    let emotions: Vec<&str> = v.emotions.iter().map(|t| t.id.as_str()).collect();
    let styles: Vec<&str> = v.styles.iter().map(|s| s.id.as_str()).collect();
    json!({
        "type": "object", "additionalProperties": false,
        "required": ["name", "history", "core_beliefs", "intermediate_belief", "coping_strategies",
                     "situation", "auto_thought", "emotion", "behavior", "style"],
        "properties": {
            "name": text(2, 30),
            "history": text(40, 320),
            "core_beliefs": {"type": "array", "minItems": 1, "maxItems": 3,
                "items": {"type": "string", "enum": belief_ids(v)}},
            "intermediate_belief": text(20, 220),
            "coping_strategies": text(15, 200),
            "situation": text(20, 220),
            "auto_thought": text(10, 160),
            "emotion": {"type": "array", "minItems": 1, "maxItems": 3,
                "items": {"type": "string", "enum": emotions}},
            "behavior": text(15, 200),
            "style": {"type": "string", "enum": styles}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_compile() {
        let v = therapygym_core::builtin::vocabulary().unwrap();
        for s in [
            sketches(10),
            dimension(),
            assignments(3, &["a".into(), "b".into()]),
            expansion(),
            profile(&v),
        ] {
            jsonschema::validator_for(&s).unwrap();
        }
        assert_eq!(belief_ids(&v).len(), 19);
    }
}
