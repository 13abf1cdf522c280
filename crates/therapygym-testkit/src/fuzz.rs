//! Inputs for property tests of everything that reads outside input (loaders, the judge-reply
//! parser, the service's JSON bodies): arbitrary bytes, and structure-aware mutations of a valid
//! input — edits of a file's text, and edits of a JSON document's values — so a property meets
//! noise as well as near-misses that get past the first checks.
//!
//! Each property runs [`config`]'s bounded number of cases (CI stays fast); `PROPTEST_CASES=N`
//! runs N instead (docs/handling-errors.md has the figures).

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Map, Value};

/// `cases` cases per property, or `PROPTEST_CASES` when it is set (a longer run).
pub fn config(cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    Config {
        cases,
        // Findings are kept as regression tests in the code, not as files in the source tree.
        failure_persistence: None,
        ..Config::default()
    }
}

/// Arbitrary bytes (not always UTF-8), up to `max` of them.
pub fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=max)
}

/// Snippets that break parsers of TOML, CSV, JSON and JSONL, and the numbers at the edges of
/// every range the project checks.
const SNIPPETS: &[&str] = &[
    "",
    "\n",
    "\r\n",
    "\"",
    "'",
    ",",
    "=",
    "[",
    "]",
    "{",
    "}",
    "[[items]]\n",
    "[[labels]]\n",
    "\\",
    "\u{0}",
    "\u{feff}",
    "é",
    "🙂",
    "-1",
    "0",
    "6",
    "7",
    "255",
    "256",
    "4294967296",
    "18446744073709551616",
    "99999999999999999999999999999",
    "-9223372036854775809",
    "1e309",
    "-1e309",
    "nan",
    "inf",
    "0.5",
    "true",
    "null",
    "{}",
    "[]",
    "id = \"x\"\n",
    "score",
    "rationale",
];

/// One of [`SNIPPETS`] or a short arbitrary string.
fn snippet() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(SNIPPETS).prop_map(String::from),
        1 => ".{0,12}",
    ]
}

/// One edit of a text file.
#[derive(Debug, Clone)]
pub enum TextEdit {
    /// Cut the text at this (wrapped) position.
    Truncate(usize),
    /// Remove this (wrapped) line.
    DeleteLine(usize),
    /// Repeat this (wrapped) line.
    DuplicateLine(usize),
    /// Replace up to `len` characters at this (wrapped) position with a snippet.
    Replace(usize, usize, String),
}

fn text_edit() -> impl Strategy<Value = TextEdit> {
    prop_oneof![
        1 => any::<usize>().prop_map(TextEdit::Truncate),
        1 => any::<usize>().prop_map(TextEdit::DeleteLine),
        1 => any::<usize>().prop_map(TextEdit::DuplicateLine),
        5 => (any::<usize>(), 0usize..8, snippet()).prop_map(|(p, l, s)| TextEdit::Replace(p, l, s)),
    ]
}

/// The char boundary at or before `n % (len + 1)`.
fn boundary(text: &str, n: usize) -> usize {
    let mut i = n % (text.len() + 1);
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Applies one edit.
pub fn apply_text(text: &str, edit: &TextEdit) -> String {
    let lines = || text.split_inclusive('\n').collect::<Vec<_>>();
    match edit {
        TextEdit::Truncate(n) => text[..boundary(text, *n)].to_string(),
        TextEdit::DeleteLine(n) => {
            let mut l = lines();
            if !l.is_empty() {
                let i = n % l.len();
                l.remove(i);
            }
            l.concat()
        }
        TextEdit::DuplicateLine(n) => {
            let mut l = lines();
            if !l.is_empty() {
                let i = n % l.len();
                l.insert(i, l[i]);
            }
            l.concat()
        }
        TextEdit::Replace(n, len, s) => {
            let start = boundary(text, *n);
            let rest = &text[start..];
            let end = start + rest.char_indices().nth(*len).map_or(rest.len(), |(i, _)| i);
            format!("{}{s}{}", &text[..start], &text[end..])
        }
    }
}

/// `base` with one to four text edits.
pub fn mutated_text(base: &str) -> impl Strategy<Value = String> + use<> {
    let base = base.to_string();
    prop::collection::vec(text_edit(), 1..=4).prop_map(move |edits| {
        edits
            .iter()
            .fold(base.clone(), |text, e| apply_text(&text, e))
    })
}

/// Any JSON value, a few levels deep, with the edge cases parsers trip on: numbers past every
/// integer range, negative and fractional scores, empty, long and non-ASCII strings.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| {
            serde_json::Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or(Value::Null)
        }),
        prop::sample::select(&[-1i64, 0, 1, 6, 7, 255, 256, 4_294_967_296][..])
            .prop_map(Value::from),
        snippet().prop_map(Value::String),
        "[a-z_]{1,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{0,10}", inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// One edit of a JSON document. Positions wrap around the document's nodes (pre-order).
#[derive(Debug, Clone)]
pub enum JsonEdit {
    /// Replace the node at this position with a value.
    Replace(usize, Value),
    /// Remove one child (member or element) of the container at this position.
    Remove(usize, usize),
    /// Add a member (a copy of a key already there when `key` is `None`) to the object at this
    /// position, or push onto the array there.
    Insert(usize, Option<String>, Value),
}

fn json_edit() -> impl Strategy<Value = JsonEdit> {
    prop_oneof![
        3 => (any::<usize>(), json_value()).prop_map(|(n, v)| JsonEdit::Replace(n, v)),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(n, k)| JsonEdit::Remove(n, k)),
        1 => (any::<usize>(), proptest::option::of("[a-z_]{0,10}"), json_value())
            .prop_map(|(n, k, v)| JsonEdit::Insert(n, k, v)),
    ]
}

fn count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count).sum(),
        Value::Object(m) => m.values().map(count).sum(),
        _ => 0,
    }
}

/// The `n`-th node in pre-order.
fn nth_mut<'a>(v: &'a mut Value, n: &mut usize) -> Option<&'a mut Value> {
    if *n == 0 {
        return Some(v);
    }
    *n -= 1;
    match v {
        Value::Array(a) => a.iter_mut().find_map(|c| nth_mut(c, n)),
        Value::Object(m) => m.values_mut().find_map(|c| nth_mut(c, n)),
        _ => None,
    }
}

/// Applies one edit in place.
pub fn apply_json(doc: &mut Value, edit: &JsonEdit) {
    let pos = |n: usize, doc: &Value| n % count(doc);
    match edit {
        JsonEdit::Replace(n, v) => {
            let mut i = pos(*n, doc);
            if let Some(node) = nth_mut(doc, &mut i) {
                *node = v.clone();
            }
        }
        JsonEdit::Remove(n, k) => {
            let mut i = pos(*n, doc);
            match nth_mut(doc, &mut i) {
                Some(Value::Array(a)) if !a.is_empty() => {
                    let k = k % a.len();
                    a.remove(k);
                }
                Some(Value::Object(m)) if !m.is_empty() => {
                    let key = m.keys().nth(k % m.len()).cloned().unwrap_or_default();
                    m.remove(&key);
                }
                _ => {}
            }
        }
        JsonEdit::Insert(n, key, v) => {
            let mut i = pos(*n, doc);
            match nth_mut(doc, &mut i) {
                Some(Value::Array(a)) => a.push(v.clone()),
                Some(Value::Object(m)) => {
                    let key = key
                        .clone()
                        .or_else(|| m.keys().next().cloned())
                        .unwrap_or_default();
                    m.insert(key, v.clone());
                }
                _ => {}
            }
        }
    }
}

/// `base` with one to four JSON edits.
pub fn mutated_json(base: Value) -> impl Strategy<Value = Value> {
    prop::collection::vec(json_edit(), 1..=4).prop_map(move |edits| {
        let mut v = base.clone();
        for e in &edits {
            apply_json(&mut v, e);
        }
        v
    })
}

/// JSON Lines text: each line of `base` (a JSONL file) parsed, mutated as JSON, written back;
/// lines that are not JSON are mutated as text.
pub fn mutated_jsonl(base: &str) -> impl Strategy<Value = String> + use<> {
    let lines: Vec<String> = base.lines().map(String::from).collect();
    let n = lines.len().max(1);
    (
        0..n,
        prop::collection::vec(json_edit(), 1..=4),
        prop::collection::vec(text_edit(), 0..=1),
    )
        .prop_map(move |(at, edits, text_edits)| {
            let mut out = lines.clone();
            if let Some(line) = out.get_mut(at) {
                if let Ok(mut v) = serde_json::from_str::<Value>(line) {
                    for e in &edits {
                        apply_json(&mut v, e);
                    }
                    *line = v.to_string();
                }
                for e in &text_edits {
                    *line = apply_text(line, e);
                }
            }
            out.join("\n")
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn text_edits_stay_on_char_boundaries_and_wrap() {
        let t = "a=é\nb=2\n";
        assert_eq!(apply_text(t, &TextEdit::Truncate(3)), "a=");
        assert_eq!(apply_text(t, &TextEdit::DeleteLine(3)), "a=é\n");
        assert_eq!(
            apply_text(t, &TextEdit::DuplicateLine(1)),
            "a=é\nb=2\nb=2\n"
        );
        assert_eq!(
            apply_text(t, &TextEdit::Replace(2, 1, "🙂".into())),
            "a=🙂\nb=2\n"
        );
        assert_eq!(apply_text("", &TextEdit::DeleteLine(5)), "");
    }

    #[test]
    fn json_edits_reach_nested_nodes() {
        let mut v = json!({"a": {"b": 1}, "c": [1, 2]});
        // Pre-order: 0 root, 1 a, 2 a.b, 3 c, 4 c[0], 5 c[1].
        apply_json(&mut v, &JsonEdit::Replace(2, json!("x")));
        apply_json(&mut v, &JsonEdit::Remove(3, 0));
        apply_json(&mut v, &JsonEdit::Insert(1, None, json!(null)));
        assert_eq!(v, json!({"a": {"b": null}, "c": [2]}));
    }
}
