//! JSON Schema → GBNF, the grammar llama.cpp constrains decoding with.
//!
//! Every string the grammar accepts is a JSON value valid under the schema, except where a
//! bound cannot be written as a grammar (wide integer ranges, numeric bounds on `number`): those
//! are left to the schema validation every reply goes through anyway. A grammar may accept
//! fewer values than the schema (no properties beyond the declared ones, a fixed key order,
//! bounded whitespace): a decoder only needs one valid way to answer.
//!
//! Supported: `type` (one or a list), `const`, `enum`, `anyOf`/`oneOf`, `$ref` to `#/$defs/…`
//! or `#/definitions/…` (recursion allowed), objects (`properties`, `required`,
//! `additionalProperties` as a schema when no properties are declared), arrays (`items`,
//! `minItems`, `maxItems`, and `prefixItems` when `minItems` covers every prefix entry), strings (`minLength`, `maxLength`; `format` is ignored), integers
//! (`minimum`/`maximum` and their exclusive forms), numbers, booleans, null. Anything else that
//! changes which values are valid (`pattern`, `allOf`, `not`, `contains`, …) is an error
//! naming the keyword, rather than a grammar that silently lets invalid replies through.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::{Map, Value};

/// Integer ranges up to this many values become an alternation of their literals.
const MAX_ENUMERATED_INTEGERS: i64 = 512;

/// Keywords that constrain values in ways this converter cannot express.
const UNSUPPORTED: &[&str] = &[
    "pattern",
    "patternProperties",
    "allOf",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "uniqueItems",
    "multipleOf",
    "dependentRequired",
    "dependentSchemas",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
];

const PRIMITIVES: &str = r#"space ::= | " " | "\n" [ \t]{0,20}
char ::= [^"\\\x7F\x00-\x1F] | [\\] (["\\bfnrt] | "u" [0-9a-fA-F]{4})
string ::= "\"" char* "\"" space
integer ::= "-"? ([0] | [1-9] [0-9]{0,15}) space
nonneg-integer ::= ([0] | [1-9] [0-9]{0,15}) space
number ::= "-"? ([0] | [1-9] [0-9]{0,15}) ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})? space
boolean ::= ("true" | "false") space
null ::= "null" space
value ::= object | array | string | number | boolean | null
object ::= "{" space (string ":" space value ("," space string ":" space value)*)? "}" space
array ::= "[" space (value ("," space value)*)? "]" space
"#;

/// Why a schema has no grammar.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct GrammarError {
    /// JSON pointer of the offending subschema (`#` is the root).
    pub path: String,
    pub message: String,
}

/// The GBNF grammar (start rule `root`) of the JSON values valid under `schema`.
pub fn schema_to_gbnf(schema: &Value) -> Result<String, GrammarError> {
    let mut c = Converter {
        root: schema,
        rules: Vec::new(),
        by_body: HashMap::new(),
        refs: HashMap::new(),
    };
    let top = c.visit(schema, "#")?;
    let mut out = format!("root ::= {top}\n");
    for (name, body) in &c.rules {
        let _ = writeln!(out, "{name} ::= {body}");
    }
    out.push_str(PRIMITIVES);
    Ok(out)
}

struct Converter<'a> {
    root: &'a Value,
    /// Named rules in creation order.
    rules: Vec<(String, String)>,
    /// Identical subschemas (the 11 CTRS items) share one rule.
    by_body: HashMap<String, String>,
    /// `$ref` target → rule name, assigned before the target is visited (recursion).
    refs: HashMap<String, String>,
}

fn err(path: &str, message: impl Into<String>) -> GrammarError {
    GrammarError {
        path: path.to_string(),
        message: message.into(),
    }
}

/// A GBNF string literal matching exactly `text`.
fn literal(text: &str) -> String {
    let mut s = String::with_capacity(text.len() + 2);
    s.push('"');
    for ch in text.chars() {
        match ch {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7F => {
                let _ = write!(s, "\\x{:02X}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// The grammar of one JSON constant, as compact JSON followed by optional space.
fn json_literal(v: &Value) -> String {
    format!("{} space", literal(&v.to_string()))
}

/// The grammar of an object key, quoted and escaped as JSON.
fn key_literal(key: &str) -> String {
    literal(&Value::String(key.to_string()).to_string())
}

fn alternatives(parts: Vec<String>) -> String {
    if parts.len() == 1 {
        parts.into_iter().next().unwrap_or_default()
    } else {
        format!("({})", parts.join(" | "))
    }
}

fn repeat(item: &str, min: u64, max: Option<u64>) -> String {
    match max {
        Some(max) if max == min => format!("{item}{{{min}}}"),
        Some(max) => format!("{item}{{{min},{max}}}"),
        None if min == 0 => format!("{item}*"),
        None => format!("{item}{{{min},}}"),
    }
}

/// The optional keyword `key`, read with `get`; present but of the wrong kind is an error.
fn keyword<T>(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
    get: fn(&Value) -> Option<T>,
    expected: &str,
) -> Result<Option<T>, GrammarError> {
    obj.get(key)
        .map(|v| get(v).ok_or_else(|| err(path, format!("`{key}` must be {expected}"))))
        .transpose()
}

fn as_u64(obj: &Map<String, Value>, key: &str, path: &str) -> Result<Option<u64>, GrammarError> {
    keyword(obj, key, path, Value::as_u64, "a non-negative integer")
}

impl<'a> Converter<'a> {
    /// A rule name for `body`, reusing the rule of an identical body.
    fn rule(&mut self, body: String) -> String {
        if let Some(name) = self.by_body.get(&body) {
            return name.clone();
        }
        let name = format!("r{}", self.rules.len());
        self.by_body.insert(body.clone(), name.clone());
        self.rules.push((name.clone(), body));
        name
    }

    /// The grammar expression of `schema`.
    fn visit(&mut self, schema: &'a Value, path: &str) -> Result<String, GrammarError> {
        let obj = match schema {
            Value::Bool(true) => return Ok("value".into()),
            Value::Bool(false) => return Err(err(path, "the schema `false` accepts no value")),
            Value::Object(o) => o,
            _ => return Err(err(path, "a schema must be an object or a boolean")),
        };
        if let Some(k) = UNSUPPORTED.iter().find(|k| obj.contains_key(**k)) {
            return Err(err(
                path,
                format!(
                    "`{k}` cannot be turned into a grammar for the local backend; drop it or use an `openai:` model with structured outputs"
                ),
            ));
        }
        if let Some(r) = obj.get("$ref") {
            return self.reference(r, path);
        }
        if let Some(c) = obj.get("const") {
            return Ok(json_literal(c));
        }
        if let Some(e) = obj.get("enum") {
            let values = e
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| err(path, "`enum` must be a non-empty array"))?;
            return Ok(alternatives(values.iter().map(json_literal).collect()));
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(branches) = obj.get(key) {
                let branches = branches
                    .as_array()
                    .filter(|a| !a.is_empty())
                    .ok_or_else(|| err(path, format!("`{key}` must be a non-empty array")))?;
                let mut parts = Vec::with_capacity(branches.len());
                for (i, b) in branches.iter().enumerate() {
                    parts.push(self.visit(b, &format!("{path}/{key}/{i}"))?);
                }
                return Ok(alternatives(parts));
            }
        }
        let types: Vec<&str> = match obj.get("type") {
            None if obj.contains_key("properties") => vec!["object"],
            None if obj.contains_key("items") => vec!["array"],
            None => return Ok("value".into()),
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts
                .iter()
                .map(|t| {
                    t.as_str()
                        .ok_or_else(|| err(path, "`type` lists must hold type names"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(err(path, "`type` must be a name or a list of names")),
        };
        let mut parts = Vec::with_capacity(types.len());
        for t in types {
            parts.push(match t {
                "object" => self.object(obj, path)?,
                "array" => self.array(obj, path)?,
                "string" => self.string(obj, path)?,
                "integer" => self.integer(obj, path)?,
                "number" => "number".into(),
                "boolean" => "boolean".into(),
                "null" => "null".into(),
                other => return Err(err(path, format!("unknown type `{other}`"))),
            });
        }
        Ok(alternatives(parts))
    }

    fn reference(&mut self, r: &Value, path: &str) -> Result<String, GrammarError> {
        let target = r
            .as_str()
            .ok_or_else(|| err(path, "`$ref` must be a string"))?;
        if let Some(name) = self.refs.get(target) {
            return Ok(name.clone());
        }
        let pointer = target
            .strip_prefix('#')
            .filter(|p| p.starts_with("/$defs/") || p.starts_with("/definitions/"))
            .ok_or_else(|| {
                err(
                    path,
                    format!("`$ref` {target:?}: only local `#/$defs/…` references are supported"),
                )
            })?;
        let root: &'a Value = self.root;
        let sub = root
            .pointer(pointer)
            .ok_or_else(|| err(path, format!("`$ref` {target:?} points at nothing")))?;
        // Name the rule before visiting, so a recursive definition refers to itself.
        let name = format!("ref{}", self.refs.len());
        self.refs.insert(target.to_string(), name.clone());
        let body = self.visit(sub, target)?;
        self.rules.push((name.clone(), body));
        Ok(name)
    }

    fn object(&mut self, obj: &'a Map<String, Value>, path: &str) -> Result<String, GrammarError> {
        let props = match obj.get("properties") {
            None => None,
            Some(Value::Object(p)) => Some(p).filter(|p| !p.is_empty()),
            Some(_) => return Err(err(path, "`properties` must be an object")),
        };
        let required: Vec<&str> = match obj.get("required") {
            None => Vec::new(),
            Some(Value::Array(r)) => r.iter().filter_map(Value::as_str).collect(),
            Some(_) => return Err(err(path, "`required` must be an array of names")),
        };
        let Some(props) = props else {
            return self.undeclared_object(obj, &required, path);
        };
        if let Some(missing) = required.iter().find(|r| !props.contains_key(**r)) {
            return Err(err(
                path,
                format!("`required` names {missing:?}, which `properties` does not declare"),
            ));
        }
        // Properties in declared order: required ones always, optional ones may be skipped.
        // `first[i]`: properties i.. when nothing was written yet (no leading comma);
        // `rest[i]`: properties i.. after something was written (each with its comma).
        let mut kvs = Vec::with_capacity(props.len());
        for (k, s) in props {
            let v = self.visit(s, &format!("{path}/properties/{k}"))?;
            kvs.push((
                required.contains(&k.as_str()),
                format!("{} \":\" space {v}", key_literal(k)),
            ));
        }
        let n = kvs.len();
        let mut rest = vec![String::new(); n + 1];
        for i in (1..n).rev() {
            let (req, kv) = &kvs[i];
            let tail = &rest[i + 1];
            let this = if *req {
                format!("\",\" space {kv}")
            } else {
                format!("(\",\" space {kv})?")
            };
            rest[i] = if tail.is_empty() {
                this
            } else {
                self.rule(format!("{this} {tail}"))
            };
        }
        let mut first = String::new(); // properties n.. : nothing
        for i in (0..n).rev() {
            let (req, kv) = &kvs[i];
            let with = if rest[i + 1].is_empty() {
                kv.clone()
            } else {
                format!("{kv} {}", rest[i + 1])
            };
            first = if *req {
                with
            } else if first.is_empty() {
                format!("({with})?")
            } else {
                // A rule per level keeps the grammar linear in the property count.
                self.rule(format!("{with} | {first}"))
            };
        }
        Ok(self.rule(format!("\"{{\" space {first} \"}}\" space")))
    }

    /// An object without declared properties: its required keys with any value, else a map
    /// whose values follow `additionalProperties` (absent or `true` = any value).
    fn undeclared_object(
        &mut self,
        obj: &'a Map<String, Value>,
        required: &[&str],
        path: &str,
    ) -> Result<String, GrammarError> {
        if !required.is_empty() {
            let kvs: Vec<String> = required
                .iter()
                .map(|k| format!("{} \":\" space value", key_literal(k)))
                .collect();
            return Ok(self.rule(format!(
                "\"{{\" space {} \"}}\" space",
                kvs.join(" \",\" space ")
            )));
        }
        let value = match obj.get("additionalProperties") {
            Some(Value::Bool(false)) => return Ok("\"{\" space \"}\" space".into()),
            None | Some(Value::Bool(true)) => "value".to_string(),
            Some(s) => self.visit(s, &format!("{path}/additionalProperties"))?,
        };
        let kv = self.rule(format!("string \":\" space {value}"));
        Ok(self.rule(format!(
            "\"{{\" space ({kv} (\",\" space {kv})*)? \"}}\" space"
        )))
    }

    fn array(&mut self, obj: &'a Map<String, Value>, path: &str) -> Result<String, GrammarError> {
        let item = match obj.get("items") {
            None => "value".to_string(),
            Some(s) => {
                let e = self.visit(s, &format!("{path}/items"))?;
                if e.contains(' ') { self.rule(e) } else { e }
            }
        };
        let min = as_u64(obj, "minItems", path)?.unwrap_or(0);
        let max = as_u64(obj, "maxItems", path)?;
        if max.is_some_and(|m| m < min) {
            return Err(err(path, "`maxItems` is below `minItems`"));
        }
        if let Some(prefix) = obj.get("prefixItems") {
            return self.prefixed(prefix, &item, min, max, path);
        }
        let more = format!("(\",\" space {item})");
        let body = match max {
            Some(0) => String::new(),
            _ if min == 0 => format!(
                "({item} {})?",
                repeat(&more, 0, max.map(|m| m.saturating_sub(1)))
            ),
            _ => format!(
                "{item} {}",
                repeat(&more, min - 1, max.map(|m| m.saturating_sub(1)))
            ),
        };
        Ok(self.rule(format!("\"[\" space {body} \"]\" space")))
    }

    /// An array whose first entries follow `prefixItems` one by one (all of them required), then
    /// `item` up to `max` entries in all.
    fn prefixed(
        &mut self,
        prefix: &'a Value,
        item: &str,
        min: u64,
        max: Option<u64>,
        path: &str,
    ) -> Result<String, GrammarError> {
        let prefix = prefix
            .as_array()
            .ok_or_else(|| err(path, "`prefixItems` must be an array of schemas"))?;
        let k = prefix.len() as u64;
        if min < k || max.is_some_and(|m| m < k) {
            return Err(err(
                path,
                "`prefixItems` needs `minItems` (and `maxItems`, if given) of at least its length for the local backend",
            ));
        }
        let mut parts = Vec::with_capacity(prefix.len() + 1);
        for (i, s) in prefix.iter().enumerate() {
            let e = self.visit(s, &format!("{path}/prefixItems/{i}"))?;
            parts.push(if i == 0 {
                e
            } else {
                format!("\",\" space {e}")
            });
        }
        let more = format!("(\",\" space {item})");
        let tail_max = max.map(|m| m - k);
        if tail_max != Some(0) {
            if k == 0 {
                return Err(err(
                    path,
                    "an empty `prefixItems` with further items is not supported; use `items`",
                ));
            }
            parts.push(repeat(&more, min - k, tail_max));
        }
        Ok(self.rule(format!("\"[\" space {} \"]\" space", parts.join(" "))))
    }

    fn string(&mut self, obj: &Map<String, Value>, path: &str) -> Result<String, GrammarError> {
        let min = as_u64(obj, "minLength", path)?.unwrap_or(0);
        let max = as_u64(obj, "maxLength", path)?;
        if max.is_some_and(|m| m < min) {
            return Err(err(path, "`maxLength` is below `minLength`"));
        }
        if min == 0 && max.is_none() {
            return Ok("string".into());
        }
        Ok(self.rule(format!(
            "\"\\\"\" {} \"\\\"\" space",
            repeat("char", min, max)
        )))
    }

    fn integer(&mut self, obj: &Map<String, Value>, path: &str) -> Result<String, GrammarError> {
        let bound = |key: &str| keyword(obj, key, path, Value::as_f64, "a number");
        let lo = match (bound("minimum")?, bound("exclusiveMinimum")?) {
            (Some(a), Some(b)) => Some(a.ceil().max(b.floor() + 1.0)),
            (Some(a), None) => Some(a.ceil()),
            (None, Some(b)) => Some(b.floor() + 1.0),
            (None, None) => None,
        };
        let hi = match (bound("maximum")?, bound("exclusiveMaximum")?) {
            (Some(a), Some(b)) => Some(a.floor().min(b.ceil() - 1.0)),
            (Some(a), None) => Some(a.floor()),
            (None, Some(b)) => Some(b.ceil() - 1.0),
            (None, None) => None,
        };
        if let (Some(lo), Some(hi)) = (lo, hi) {
            if hi < lo {
                return Err(err(path, "the integer bounds leave no value"));
            }
            // Exact for small ranges (scores, counts); `as` saturates, the check keeps it sane.
            let (lo, hi) = (lo as i64, hi as i64);
            if hi.saturating_sub(lo) < MAX_ENUMERATED_INTEGERS {
                let parts = (lo..=hi).map(|i| literal(&i.to_string())).collect();
                return Ok(self.rule(format!("{} space", alternatives(parts))));
            }
        }
        // Wide ranges: digits only when nothing below zero is allowed; the bound itself is
        // checked by schema validation.
        Ok(if lo.is_some_and(|l| l >= 0.0) {
            "nonneg-integer".into()
        } else {
            "integer".into()
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    fn rules(schema: Value) -> String {
        schema_to_gbnf(&schema).unwrap()
    }

    #[test]
    fn an_enum_of_strings_is_an_alternation_of_json_literals() {
        let g = rules(json!({"enum": ["a\"b", "c"]}));
        assert!(
            g.starts_with(r#"root ::= ("\"a\\\"b\"" space | "\"c\"" space)"#),
            "{g}"
        );
    }

    #[test]
    fn small_integer_ranges_are_enumerated_and_wide_ones_are_not() {
        let g = rules(json!({"type": "integer", "minimum": 0, "maximum": 3}));
        assert!(g.contains(r#"r0 ::= ("0" | "1" | "2" | "3") space"#), "{g}");
        let g = rules(json!({"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 3}));
        assert!(g.contains(r#"("1" | "2") space"#), "{g}");
        let g = rules(json!({"type": "integer", "minimum": 0, "maximum": 1000000}));
        assert!(g.starts_with("root ::= nonneg-integer"), "{g}");
        assert!(schema_to_gbnf(&json!({"type": "integer", "minimum": 3, "maximum": 1})).is_err());
    }

    #[test]
    fn strings_carry_their_length_bounds() {
        let g = rules(json!({"type": "string", "minLength": 2, "maxLength": 5}));
        assert!(g.contains(r#"r0 ::= "\"" char{2,5} "\"" space"#), "{g}");
        assert!(rules(json!({"type": "string"})).starts_with("root ::= string\n"));
    }

    #[test]
    fn arrays_carry_their_item_counts() {
        let g = rules(
            json!({"type": "array", "items": {"type": "boolean"}, "minItems": 2, "maxItems": 2}),
        );
        assert!(
            g.contains(r#""[" space boolean ("," space boolean){1} "]" space"#),
            "{g}"
        );
        let g = rules(json!({"type": "array", "items": {"type": "null"}, "maxItems": 3}));
        assert!(
            g.contains(r#""[" space (null ("," space null){0,2})? "]" space"#),
            "{g}"
        );
        let g = rules(json!({"type": "array", "minItems": 1}));
        assert!(
            g.contains(r#""[" space value ("," space value)* "]" space"#),
            "{g}"
        );
    }

    #[test]
    fn prefix_items_fix_each_position_in_order() {
        let g = rules(json!({"type": "array", "minItems": 2, "maxItems": 2,
            "prefixItems": [{"const": 1}, {"const": 2}], "items": {"type": "integer"}}));
        assert!(
            g.contains(r#""[" space "1" space "," space "2" space "]" space"#),
            "{g}"
        );
        let g = rules(json!({"type": "array", "minItems": 1, "maxItems": 3,
            "prefixItems": [{"const": 1}], "items": {"type": "boolean"}}));
        assert!(
            g.contains(r#""[" space "1" space ("," space boolean){0,2} "]" space"#),
            "{g}"
        );
        let g = rules(json!({"type": "array", "minItems": 0, "maxItems": 0, "prefixItems": []}));
        assert!(g.contains(r#""[" space  "]" space"#), "{g}");
        let e =
            schema_to_gbnf(&json!({"type": "array", "prefixItems": [{"const": 1}]})).unwrap_err();
        assert!(e.message.contains("`minItems`"), "{e}");
    }

    #[test]
    fn required_properties_keep_their_order_and_optional_ones_may_be_skipped() {
        let g = rules(json!({
            "type": "object", "required": ["b"],
            "properties": {"a": {"type": "null"}, "b": {"type": "boolean"}, "c": {"type": "null"}}
        }));
        // `a` is optional and first: either `a, b[, c]` or `b[, c]`.
        assert!(g.contains(r#""\"c\"" ":" space null"#), "{g}");
        assert!(g.contains(r#"("," space "\"c\"" ":" space null)?"#), "{g}");
        assert!(
            g.contains(r#""," space "\"b\"" ":" space boolean ("," space"#),
            "{g}"
        );
        assert!(g.contains(r#""\"a\"" ":" space null r"#), "{g}");
        assert!(g.contains(" | "), "{g}");
    }

    #[test]
    fn identical_subschemas_share_one_rule() {
        let item = json!({"type": "object", "required": ["s"], "properties": {"s": {"type": "integer", "minimum": 0, "maximum": 6}}});
        let g = rules(json!({
            "type": "object", "required": ["x", "y"],
            "properties": {"x": item, "y": item}
        }));
        assert_eq!(g.matches(r#""0" | "1""#).count(), 1, "{g}");
    }

    #[test]
    fn recursive_references_become_recursive_rules() {
        let g = rules(json!({
            "$ref": "#/$defs/node",
            "$defs": {"node": {"type": "object", "required": ["kids"], "properties": {
                "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}}
        }));
        assert!(g.starts_with("root ::= ref0\n"), "{g}");
        assert!(g.contains("ref0 ::= "), "{g}");
        assert!(g.contains("ref0 (\",\" space ref0)"), "{g}");
    }

    #[test]
    fn keywords_that_cannot_be_enforced_are_refused_with_their_path() {
        let e = schema_to_gbnf(
            &json!({"type": "object", "properties": {"x": {"type": "string", "pattern": "^a"}}}),
        )
        .unwrap_err();
        assert_eq!(e.path, "#/properties/x");
        assert!(e.message.contains("`pattern`"), "{e}");
        assert!(schema_to_gbnf(&json!({"$ref": "http://x/y"})).is_err());
        assert!(schema_to_gbnf(&json!({"type": "tuple"})).is_err());
        assert!(schema_to_gbnf(&json!(false)).is_err());
    }

    #[test]
    fn maps_and_free_objects_accept_any_declared_value() {
        let g = rules(json!({"type": "object", "additionalProperties": {"type": "integer"}}));
        assert!(g.contains(r#"string ":" space integer"#), "{g}");
        let g = rules(json!({"type": "object"}));
        assert!(g.contains(r#"string ":" space value"#), "{g}");
    }
}
