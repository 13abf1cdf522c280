//! Deterministic JSON values from a JSON schema, so the scripted fake can answer structured
//! requests (a scripted judge then gives valid, seed-dependent judgments).
//!
//! Covers the subset that judge and synthesis schemas use: object/properties/required, array,
//! array `prefixItems` (position k from its own schema, the rest from `items`), string
//! (min/maxLength, enum), integer/number (enum, minimum/maximum), boolean, null, const,
//! anyOf/oneOf (first branch) and `type` lists (first non-null type).

use serde_json::{Map, Value};

use crate::util::SplitMix64;

const WORDS: &[&str] = &[
    "the",
    "therapist",
    "patient",
    "noted",
    "agenda",
    "asked",
    "about",
    "week",
    "thought",
    "feeling",
    "plan",
    "summary",
    "reflected",
    "explored",
    "evidence",
    "homework",
    "together",
    "briefly",
    "clear",
    "session",
];

/// How to bend the generated value (fault injection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// The first bounded integer is set one above its maximum.
    OutOfRange,
    /// One required key of the first nested object is removed.
    MissingItem,
}

pub fn generate(schema: &Value, seed: u64, fault: Fault) -> Value {
    let mut rng = SplitMix64::new(seed);
    let mut out_of_range_done = fault != Fault::OutOfRange;
    let mut v = gen_value(schema, &mut rng, &mut out_of_range_done);
    if fault == Fault::MissingItem {
        remove_one_required(schema, &mut v);
    }
    v
}

fn gen_value(schema: &Value, rng: &mut SplitMix64, oor_done: &mut bool) -> Value {
    let Some(obj) = schema.as_object() else {
        return Value::Null; // `true` schema or garbage: null is as good as anything
    };
    if let Some(c) = obj.get("const") {
        return c.clone();
    }
    if let Some(branch) = obj
        .get("anyOf")
        .or_else(|| obj.get("oneOf"))
        .and_then(|b| b.as_array())
        .and_then(|b| b.first())
    {
        return gen_value(branch, rng, oor_done);
    }
    let ty = match obj.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(|t| t.as_str())
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if obj.contains_key("properties") => "object",
        _ if obj.contains_key("enum") => "enum",
        _ => "string",
    };
    if let Some(Value::Array(options)) = obj.get("enum") {
        if ty == "integer" && !*oor_done {
            *oor_done = true;
            let max = options.iter().filter_map(|o| o.as_i64()).max().unwrap_or(0);
            return Value::from(max + 1);
        }
        if options.is_empty() {
            return Value::Null;
        }
        let i = (rng.next_u64() % options.len() as u64) as usize;
        return options[i].clone();
    }
    match ty {
        "object" => {
            let mut map = Map::new();
            let required: Vec<&str> = obj
                .get("required")
                .and_then(|r| r.as_array())
                .map(|r| r.iter().filter_map(|x| x.as_str()).collect())
                .unwrap_or_default();
            if let Some(props) = obj.get("properties").and_then(|p| p.as_object()) {
                // Optional properties are included too: richer fakes exercise more code.
                for (k, sub) in props {
                    map.insert(k.clone(), gen_value(sub, rng, oor_done));
                }
                for k in required {
                    map.entry(k.to_string()).or_insert(Value::Null);
                }
            }
            Value::Object(map)
        }
        "array" => {
            let min = obj.get("minItems").and_then(Value::as_u64).unwrap_or(1);
            let max = obj
                .get("maxItems")
                .and_then(Value::as_u64)
                .unwrap_or(min.max(3));
            let n = rng.range_i64(min as i64, max.max(min) as i64) as usize;
            let items = obj.get("items").cloned().unwrap_or(Value::Bool(true));
            let prefix = obj
                .get("prefixItems")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            Value::Array(
                (0..n)
                    .map(|i| gen_value(prefix.get(i).unwrap_or(&items), rng, oor_done))
                    .collect(),
            )
        }
        "integer" => {
            let lo = obj.get("minimum").and_then(Value::as_i64).unwrap_or(0);
            let hi = obj
                .get("maximum")
                .and_then(Value::as_i64)
                .unwrap_or(lo + 10);
            if !*oor_done && obj.contains_key("maximum") {
                *oor_done = true;
                return Value::from(hi + 1);
            }
            Value::from(rng.range_i64(lo, hi))
        }
        "number" => {
            let lo = obj.get("minimum").and_then(Value::as_f64).unwrap_or(0.0);
            let hi = obj
                .get("maximum")
                .and_then(Value::as_f64)
                .unwrap_or(lo + 1.0);
            let x = lo + rng.next_f64() * (hi - lo);
            serde_json::Number::from_f64((x * 1000.0).round() / 1000.0)
                .map(Value::Number)
                .unwrap_or(Value::from(0))
        }
        "boolean" => Value::Bool(rng.next_u64() & 1 == 1),
        "null" => Value::Null,
        _ => Value::String(gen_string(obj, rng)),
    }
}

fn gen_string(obj: &Map<String, Value>, rng: &mut SplitMix64) -> String {
    let min = obj.get("minLength").and_then(Value::as_u64).unwrap_or(1) as usize;
    let max = (obj.get("maxLength").and_then(Value::as_u64).unwrap_or(80) as usize).max(min);
    let target = min.max(max.min(60));
    let mut s = String::new();
    while s.len() < target {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(WORDS[(rng.next_u64() % WORDS.len() as u64) as usize]);
    }
    // WORDS are ASCII, so byte length = char count.
    s.truncate(max);
    let mut s = s.trim_end().to_string();
    while s.len() < min {
        s.push('x');
    }
    s
}

fn remove_one_required(schema: &Value, v: &mut Value) {
    let Some(props) = schema.get("properties").and_then(|p| p.as_object()) else {
        return;
    };
    // Prefer a nested object with required keys (e.g. one CTRS item inside `ctrs`).
    for (k, sub) in props {
        let nested_required = sub
            .get("required")
            .and_then(|r| r.as_array())
            .filter(|r| !r.is_empty());
        if let (Some(req), Some(child)) = (
            nested_required,
            v.get_mut(k).and_then(|c| c.as_object_mut()),
        ) && let Some(last) = req.last().and_then(|x| x.as_str())
        {
            child.remove(last);
            return;
        }
    }
    if let (Some(req), Some(map)) = (
        schema.get("required").and_then(|r| r.as_array()),
        v.as_object_mut(),
    ) && let Some(last) = req.last().and_then(|x| x.as_str())
    {
        map.remove(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn judge_like() -> Value {
        let item = json!({"type": "object", "additionalProperties": false, "required": ["rationale", "score"],
            "properties": {"rationale": {"type": "string", "maxLength": 40}, "score": {"type": "integer", "enum": [0,1,2,3,4,5,6]}}});
        json!({"type": "object", "additionalProperties": false, "required": ["ctrs", "flag"],
            "properties": {"ctrs": {"type": "object", "required": ["a", "b"], "additionalProperties": false,
                "properties": {"a": item, "b": item}},
                "flag": {"type": "boolean"}}})
    }

    #[test]
    fn generated_values_validate_and_depend_on_the_seed() {
        let schema = judge_like();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let mut distinct = std::collections::HashSet::new();
        for seed in 0..20 {
            let v = generate(&schema, seed, Fault::None);
            assert!(validator.is_valid(&v), "{v}");
            assert_eq!(v, generate(&schema, seed, Fault::None));
            distinct.insert(v.to_string());
        }
        assert!(distinct.len() > 10);
    }

    #[test]
    fn faults_break_the_schema_the_named_way() {
        let schema = judge_like();
        let v = generate(&schema, 3, Fault::OutOfRange);
        assert_eq!(v["ctrs"]["a"]["score"], json!(7));
        let v = generate(&schema, 3, Fault::MissingItem);
        assert!(v["ctrs"].get("b").is_none());
        assert!(v["ctrs"].get("a").is_some());
    }

    #[test]
    fn prefix_items_fix_each_position() {
        let entry = |k: u64| {
            json!({"type": "object", "required": ["utterance", "codes"],
            "properties": {"utterance": {"type": "integer", "const": k},
                           "codes": {"type": "array", "items": {"type": "string", "enum": ["q", "r"]}, "minItems": 0, "maxItems": 3}}})
        };
        let s = json!({"type": "array", "minItems": 4, "maxItems": 4,
            "prefixItems": [entry(1), entry(2), entry(3), entry(4)],
            "items": {"type": "object"}});
        let validator = jsonschema::validator_for(&s).unwrap();
        for seed in 0..10 {
            let v = generate(&s, seed, Fault::None);
            assert!(validator.is_valid(&v), "{v}");
            let idx: Vec<u64> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["utterance"].as_u64().unwrap())
                .collect();
            assert_eq!(idx, [1, 2, 3, 4]);
        }
    }

    #[test]
    fn strings_respect_lengths() {
        let s = json!({"type": "string", "minLength": 5, "maxLength": 12});
        for seed in 0..10 {
            let v = generate(&s, seed, Fault::None);
            let n = v.as_str().unwrap().chars().count();
            assert!((5..=12).contains(&n), "{v}");
        }
    }
}
