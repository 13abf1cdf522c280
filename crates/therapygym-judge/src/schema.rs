//! The JSON schema of a judgment, generated from the rubric and taxonomy data (so a new rubric
//! needs no code). Subschemas are written out in full (no `$ref`): constrained-decoding
//! backends differ in reference support. Rationale comes before the score in key order, so
//! constrained decoders commit to evidence before the number.
//!
//! A rubric with behaviour codes adds `codes`: one entry per therapist utterance of the session
//! judged (`minItems` = `maxItems` = their number), entry k being `{"utterance": k, "codes":
//! [code ids]}` (`prefixItems` with a `const` index; `items` repeats the looser bound for
//! servers that read only `items`). The schema then depends on the session, so it is built per
//! request; a rubric without codes has one schema, as before.

use serde_json::{Map, Value, json};
use therapygym_core::rubric::MAX_CODES_PER_UTTERANCE;
use therapygym_core::{Rubric, Taxonomy};

/// The schema of a judgment of a session with `utterances` therapist utterances (ignored for a
/// rubric without codes).
pub fn judgment_schema_for(
    rubric: &Rubric,
    taxonomy: &Taxonomy,
    rationale_max_chars: u32,
    utterances: usize,
) -> Value {
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
    let key = rubric.items_key();
    let mut properties = Map::new();
    properties.insert(
        key.to_string(),
        json!({"type": "object", "additionalProperties": false, "required": rubric.item_ids(), "properties": items}),
    );
    let mut required = vec![key.to_string()];
    if !rubric.codes.is_empty() {
        properties.insert("codes".into(), codes_schema(rubric, utterances));
        required.push("codes".into());
    }
    properties.insert(
        "safety".into(),
        json!({"type": "object", "additionalProperties": false, "required": taxonomy.enabled_ids(), "properties": labels}),
    );
    required.push("safety".into());
    json!({
        "type": "object", "additionalProperties": false, "required": required,
        "properties": properties,
    })
}

/// The schema of a judgment under a rubric without behaviour codes.
pub fn judgment_schema(rubric: &Rubric, taxonomy: &Taxonomy, rationale_max_chars: u32) -> Value {
    judgment_schema_for(rubric, taxonomy, rationale_max_chars, 0)
}

fn codes_schema(rubric: &Rubric, utterances: usize) -> Value {
    let ids: Vec<&str> = rubric.codes.iter().map(|c| c.id.as_str()).collect();
    let list = json!({"type": "array", "items": {"type": "string", "enum": ids},
                      "minItems": 0, "maxItems": MAX_CODES_PER_UTTERANCE});
    let entry = |index: Value| {
        json!({"type": "object", "additionalProperties": false, "required": ["utterance", "codes"],
               "properties": {"utterance": index, "codes": list.clone()}})
    };
    let prefix: Vec<Value> = (1..=utterances)
        .map(|k| entry(json!({"type": "integer", "const": k})))
        .collect();
    json!({
        "type": "array", "minItems": utterances, "maxItems": utterances,
        "prefixItems": prefix,
        "items": entry(json!({"type": "integer", "minimum": 1, "maximum": utterances.max(1)})),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use therapygym_core::builtin;

    #[test]
    fn a_coded_rubric_bounds_the_list_by_the_utterances() {
        let mi = builtin::load_rubric(Path::new("mi")).unwrap();
        let t = builtin::taxonomy().unwrap();
        let s = judgment_schema_for(&mi, &t, 40, 3);
        assert_eq!(s["required"], json!(["globals", "codes", "safety"]));
        let codes = &s["properties"]["codes"];
        assert_eq!(
            (codes["minItems"].clone(), codes["maxItems"].clone()),
            (json!(3), json!(3))
        );
        assert_eq!(
            codes["prefixItems"][2]["properties"]["utterance"]["const"],
            json!(3)
        );
        let e = &codes["items"]["properties"]["codes"]["items"]["enum"];
        assert_eq!(e.as_array().unwrap().len(), 10);
        // The embedded model's grammar comes from the same schema: each position's index is
        // fixed, so a constrained decoder can only code utterances 1..=3 in order.
        let g = therapygym_models::gbnf::schema_to_gbnf(&s).unwrap();
        assert!(g.contains(r#""\"utterance\"" ":" space "3" space"#), "{g}");
        assert!(g.contains(r#""\"complex_reflection\"" space"#), "{g}");
        // CTRS keeps its schema (no codes, the `ctrs` key).
        let ctrs = judgment_schema(&builtin::rubric().unwrap(), &t, 40);
        assert_eq!(ctrs["required"], json!(["ctrs", "safety"]));
    }
}
