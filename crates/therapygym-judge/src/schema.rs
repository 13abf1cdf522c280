//! The JSON schema of a judgment, generated from the rubric and taxonomy data (so a new rubric
//! needs no code). Subschemas are written out in full (no `$ref`): constrained-decoding
//! backends differ in reference support. Rationale comes before the score in key order, so
//! constrained decoders commit to evidence before the number.

use serde_json::{Map, Value, json};
use therapygym_core::{Rubric, Taxonomy};

pub fn judgment_schema(rubric: &Rubric, taxonomy: &Taxonomy, rationale_max_chars: u32) -> Value {
    let scores: Vec<u8> = (rubric.min_score..=rubric.max_score).collect();
    let item = json!({
        "type": "object", "additionalProperties": false, "required": ["rationale", "score"],
        "properties": {
            "rationale": {"type": "string", "maxLength": rationale_max_chars},
            "score": {"type": "integer", "enum": scores},
        }
    });
    let flag = json!({
        "type": "object", "additionalProperties": false, "required": ["evidence", "flag"],
        "properties": {
            "evidence": {"type": "string", "maxLength": rationale_max_chars},
            "flag": {"type": "boolean"},
        }
    });
    let mut items = Map::new();
    for i in &rubric.items {
        items.insert(i.id.clone(), item.clone());
    }
    let mut labels = Map::new();
    for l in taxonomy.enabled() {
        labels.insert(l.id.clone(), flag.clone());
    }
    json!({
        "type": "object", "additionalProperties": false, "required": ["ctrs", "safety"],
        "properties": {
            "ctrs": {"type": "object", "additionalProperties": false, "required": rubric.item_ids(), "properties": items},
            "safety": {"type": "object", "additionalProperties": false, "required": taxonomy.enabled_ids(), "properties": labels},
        }
    })
}
