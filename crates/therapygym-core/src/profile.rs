//! Patient profiles: the cognitive-model (CCD) schema of Patient-Ψ with our ids
//! (`docs/formats.md`, "Profiles"; background in `docs/design/clinical-basis.md`).
//!
//! One loader reads our JSONL (one profile per line) and Patient-Ψ's own JSON (an array with label
//! strings such as "I am incompetent." and a `type` list of styles). Every problem is reported
//! with the file, the line (or array element), the profile id, the field and the allowed values.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{DataError, Location, Problems, read_to_string};
use crate::vocab::{BeliefKind, Vocabulary};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskCue {
    /// A risk-cue id from the vocabulary (e.g. `passive_suicidal_ideation`).
    pub kind: String,
    /// What specifically this patient may say or hint.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub id: String,
    pub name: String,
    pub history: String,
    pub helpless_belief: Vec<String>,
    pub unlovable_belief: Vec<String>,
    pub worthless_belief: Vec<String>,
    pub intermediate_belief: String,
    pub coping_strategies: String,
    pub situation: String,
    pub auto_thought: String,
    pub emotion: Vec<String>,
    pub behavior: String,
    /// The conversational style the patient is played in.
    pub style: String,
    /// Other styles this profile may be played in (from a Patient-Ψ `type` list); when present,
    /// each session picks one from its seed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub styles: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub demographics: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub risk_cues: Vec<RiskCue>,
}

impl Profile {
    /// Content hash: a profile id never changes meaning (edited content shows a new hash).
    pub fn hash(&self) -> String {
        crate::hash::content_hash(self)
    }

    /// The style of a session with this seed: `style`, or one of `styles` chosen by the seed.
    pub fn style_for(&self, session_seed: u64) -> &str {
        if self.styles.len() > 1 {
            let i = crate::seed::derive("style", &self.id, session_seed, None) as usize
                % self.styles.len();
            &self.styles[i]
        } else {
            &self.style
        }
    }
}

/// Profiles loaded from one file, with notes about lenient mappings (e.g. a typo fixed).
#[derive(Debug, Clone)]
pub struct ProfileSet {
    pub source: PathBuf,
    pub profiles: Vec<Profile>,
    pub warnings: Vec<String>,
}

impl ProfileSet {
    pub fn ids(&self) -> Vec<String> {
        self.profiles.iter().map(|p| p.id.clone()).collect()
    }

    /// Hash over every profile's content, in file order.
    pub fn hash(&self) -> String {
        crate::hash::content_hash(&self.profiles)
    }

    pub fn get(&self, id: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.id == id)
    }
}

const TEXT_FIELDS: &[(&str, &[&str])] = &[
    ("name", &[]),
    ("history", &["life_history"]),
    ("intermediate_belief", &[]),
    ("coping_strategies", &[]),
    ("situation", &[]),
    ("auto_thought", &["auto_thoughts", "automatic_thoughts"]),
    ("behavior", &["behaviour"]),
];

const OTHER_FIELDS: &[&str] = &[
    "id",
    "helpless_belief",
    "unlovable_belief",
    "worthless_belief",
    "emotion",
    "style",
    "styles",
    "type",
    "demographics",
    "risk_cues",
    "intermediate_belief_depression",
];

/// Ids travel in URLs and wire messages: keep them to a safe alphabet.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
}

pub fn load_profiles(path: &Path, vocab: &Vocabulary) -> Result<ProfileSet, DataError> {
    let text = read_to_string(path)?;
    parse_profiles(&text, path, vocab)
}

/// Parses JSONL (one object per line) or a JSON array (Patient-Ψ's files).
pub fn parse_profiles(
    text: &str,
    path: &Path,
    vocab: &Vocabulary,
) -> Result<ProfileSet, DataError> {
    let mut records: Vec<(Option<usize>, Value)> = Vec::new();
    // Every bad line is reported in one pass, not only the first.
    let mut problems = Problems::default();
    let at = |line: Option<usize>| Location {
        file: path.into(),
        line,
        id: None,
    };
    if text.trim_start().starts_with('[') {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| DataError::invalid(at(Some(e.line())), format!("not valid JSON: {e}")))?;
        if let Value::Array(items) = v {
            // Report the line where each element starts, so errors point into the file.
            let starts = array_element_lines(text);
            for (i, item) in items.into_iter().enumerate() {
                records.push((starts.get(i).copied(), item));
            }
        }
    } else {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(line) {
                Ok(v) => records.push((Some(i + 1), v)),
                Err(e) => problems.push(DataError::invalid(
                    at(Some(i + 1)),
                    format!(
                        "not a JSON object ({e}); profiles files hold one JSON object per line"
                    ),
                )),
            }
        }
    }
    if records.is_empty() && problems.is_empty() {
        return Err(DataError::invalid(at(None), "the file holds no profiles"));
    }
    let mut profiles = Vec::with_capacity(records.len());
    let mut warnings = Vec::new();
    let mut seen: HashMap<String, Option<usize>> = HashMap::new();
    for (line, v) in records {
        let loc = Location {
            file: path.into(),
            line,
            id: None,
        };
        let (p, w) = match parse_profile_value(&v, loc.clone(), vocab) {
            Ok(x) => x,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        if let Some(first) = seen.insert(p.id.clone(), line) {
            let first = first
                .map(|l| format!("line {l}"))
                .unwrap_or_else(|| "an earlier record".into());
            problems.push(DataError::field(
                Location {
                    id: Some(p.id.clone()),
                    ..loc
                },
                "id",
                format!("duplicate id (first used on {first}); ids must be unique"),
            ));
            continue;
        }
        warnings.extend(w);
        profiles.push(p);
    }
    problems.finish()?;
    Ok(ProfileSet {
        source: path.into(),
        profiles,
        warnings,
    })
}

fn array_element_lines(text: &str) -> Vec<usize> {
    // Elements of a top-level array of objects start with '{' at depth 1.
    let mut lines = Vec::new();
    let (mut depth, mut line, mut in_str, mut esc) = (0i32, 1usize, false, false);
    for c in text.chars() {
        if c == '\n' {
            line += 1;
        }
        if in_str {
            match (esc, c) {
                (true, _) => esc = false,
                (false, '\\') => esc = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '[' | '{' => {
                if depth == 1 && c == '{' {
                    lines.push(line);
                }
                depth += 1;
            }
            ']' | '}' => depth -= 1,
            _ => {}
        }
    }
    lines
}

/// Checks one profile record against the schema and the vocabularies (also used for
/// synthesised profiles). Returns the profile and notes about lenient mappings.
pub fn parse_profile_value(
    v: &Value,
    mut at: Location,
    vocab: &Vocabulary,
) -> Result<(Profile, Vec<String>), DataError> {
    let Some(obj) = v.as_object() else {
        return Err(DataError::invalid(
            at,
            "expected a JSON object with the profile fields",
        ));
    };
    let id = profile_id(obj, &at)?;
    at.id = Some(id.clone());
    if !valid_id(&id) {
        return Err(DataError::field(
            at,
            "id",
            "use at most 128 characters from A-Z a-z 0-9 . _ : -",
        ));
    }
    check_known_fields(obj, &at)?;
    let mut warnings = Vec::new();
    let mut text = text_fields(obj, &at)?;
    let mut intermediate = text.remove("intermediate_belief").unwrap_or_default();
    if let Some(dep) = obj
        .get("intermediate_belief_depression")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
    {
        intermediate = format!("{intermediate}\n[during depression]\n{}", dep.trim());
    }
    let mut beliefs = core_beliefs(obj, &at, vocab, &mut warnings)?;
    let emotion = emotions(obj, &at, vocab, &mut warnings)?;
    let (style, styles) = styles(obj, &at, vocab)?;
    let demographics = demographics(obj, &at)?;
    let risk_cues = risk_cues(obj, &at, vocab)?;

    let take = |m: &mut BTreeMap<&str, String>, k: &str| m.remove(k).unwrap_or_default();
    let profile = Profile {
        id,
        name: take(&mut text, "name"),
        history: take(&mut text, "history"),
        helpless_belief: beliefs.remove("helpless_belief").unwrap_or_default(),
        unlovable_belief: beliefs.remove("unlovable_belief").unwrap_or_default(),
        worthless_belief: beliefs.remove("worthless_belief").unwrap_or_default(),
        intermediate_belief: intermediate,
        coping_strategies: take(&mut text, "coping_strategies"),
        situation: take(&mut text, "situation"),
        auto_thought: take(&mut text, "auto_thought"),
        emotion,
        behavior: take(&mut text, "behavior"),
        style,
        styles,
        demographics,
        risk_cues,
    };
    Ok((profile, warnings))
}

fn profile_id(obj: &Map<String, Value>, at: &Location) -> Result<String, DataError> {
    match obj.get("id") {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(DataError::field(
            at.clone(),
            "id",
            "missing or empty; expected a string such as \"tg-001\"",
        )),
    }
}

fn check_known_fields(obj: &Map<String, Value>, at: &Location) -> Result<(), DataError> {
    let known: Vec<&str> = TEXT_FIELDS
        .iter()
        .flat_map(|(f, a)| std::iter::once(*f).chain(a.iter().copied()))
        .chain(OTHER_FIELDS.iter().copied())
        .collect();
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(DataError::field(
            at.clone(),
            unknown.as_str(),
            format!("unknown field; expected one of: {}", known.join(", ")),
        )),
        None => Ok(()),
    }
}

/// The narrative fields (under their names or aliases): a non-empty string, or a list of
/// strings joined with spaces (Patient-Ψ writes some fields as lists).
fn text_fields(
    obj: &Map<String, Value>,
    at: &Location,
) -> Result<BTreeMap<&'static str, String>, DataError> {
    let mut text = BTreeMap::new();
    for (field, aliases) in TEXT_FIELDS {
        let value = std::iter::once(*field)
            .chain(aliases.iter().copied())
            .find_map(|k| obj.get(k).map(|v| (k, v)));
        let s = match value {
            Some((_, Value::String(s))) if !s.trim().is_empty() => s.trim().to_string(),
            Some((_, Value::Array(parts)))
                if parts.iter().all(Value::is_string) && !parts.is_empty() =>
            {
                parts
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            }
            Some((k, _)) => {
                return Err(DataError::field(
                    at.clone(),
                    k,
                    "expected a non-empty string",
                ));
            }
            None => {
                return Err(DataError::field(
                    at.clone(),
                    *field,
                    "missing; expected a non-empty string",
                ));
            }
        };
        text.insert(*field, s);
    }
    Ok(text)
}

/// The three core-belief lists as vocabulary ids (labels such as "I am incompetent." are
/// mapped); at least one belief in all.
fn core_beliefs(
    obj: &Map<String, Value>,
    at: &Location,
    vocab: &Vocabulary,
    warnings: &mut Vec<String>,
) -> Result<BTreeMap<&'static str, Vec<String>>, DataError> {
    let mut beliefs: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for kind in [
        BeliefKind::Helpless,
        BeliefKind::Unlovable,
        BeliefKind::Worthless,
    ] {
        let field = kind.field();
        let mut ids = Vec::new();
        for item in string_list(obj, field, at)? {
            let Some(m) = vocab.belief(kind, &item) else {
                return Err(DataError::field(
                    at.clone(),
                    field,
                    format!(
                        "\"{item}\" is not a {} belief; allowed: {}",
                        &field[..field.len() - 7],
                        Vocabulary::ids(vocab.terms(kind))
                    ),
                ));
            };
            if m.fuzzy {
                warnings.push(format!(
                    "{at}: field `{field}`: read \"{item}\" as `{}`",
                    m.id
                ));
            }
            if !ids.contains(&m.id) {
                ids.push(m.id);
            }
        }
        beliefs.insert(field, ids);
    }
    if beliefs.values().all(Vec::is_empty) {
        return Err(DataError::field(
            at.clone(),
            "helpless_belief",
            "a profile needs at least one core belief (helpless, unlovable or worthless)",
        ));
    }
    Ok(beliefs)
}

/// One to three emotion ids.
fn emotions(
    obj: &Map<String, Value>,
    at: &Location,
    vocab: &Vocabulary,
    warnings: &mut Vec<String>,
) -> Result<Vec<String>, DataError> {
    let mut emotions = Vec::new();
    for e in string_list(obj, "emotion", at)? {
        let Some(m) = vocab.emotion(&e) else {
            return Err(DataError::field(
                at.clone(),
                "emotion",
                format!(
                    "\"{e}\" is not an emotion; allowed: {}",
                    Vocabulary::ids(&vocab.emotions)
                ),
            ));
        };
        if m.fuzzy {
            warnings.push(format!("{at}: field `emotion`: read \"{e}\" as `{}`", m.id));
        }
        if !emotions.contains(&m.id) {
            emotions.push(m.id);
        }
    }
    if emotions.is_empty() || emotions.len() > 3 {
        return Err(DataError::field(
            at.clone(),
            "emotion",
            format!(
                "expected 1 to 3 emotions, found {}; allowed: {}",
                emotions.len(),
                Vocabulary::ids(&vocab.emotions)
            ),
        ));
    }
    Ok(emotions)
}

/// The style, and the other styles a session may pick from (`styles`, or Patient-Ψ's `type`
/// list; empty when there is only one).
fn styles(
    obj: &Map<String, Value>,
    at: &Location,
    vocab: &Vocabulary,
) -> Result<(String, Vec<String>), DataError> {
    let style_of = |s: &str, field: &str| -> Result<String, DataError> {
        vocab.style(s).map(|st| st.id.clone()).ok_or_else(|| {
            DataError::field(
                at.clone(),
                field,
                format!("\"{s}\" is not a style; allowed: {}", vocab.style_ids()),
            )
        })
    };
    let mut styles = Vec::new();
    for key in ["styles", "type"] {
        for s in string_list(obj, key, at)? {
            let id = style_of(&s, key)?;
            if !styles.contains(&id) {
                styles.push(id);
            }
        }
    }
    let style = match obj.get("style") {
        Some(Value::String(s)) => style_of(s, "style")?,
        Some(_) => {
            return Err(DataError::field(
                at.clone(),
                "style",
                format!("expected one style id; allowed: {}", vocab.style_ids()),
            ));
        }
        None => match styles.first() {
            Some(s) => s.clone(),
            None => {
                return Err(DataError::field(
                    at.clone(),
                    "style",
                    format!("missing; expected one of: {}", vocab.style_ids()),
                ));
            }
        },
    };
    if styles.len() == 1 {
        styles.clear();
    }
    Ok((style, styles))
}

fn demographics(
    obj: &Map<String, Value>,
    at: &Location,
) -> Result<BTreeMap<String, Value>, DataError> {
    match obj.get("demographics") {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => Ok(m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        Some(_) => Err(DataError::field(
            at.clone(),
            "demographics",
            "expected an object such as {\"age\": 34, \"gender\": \"woman\"}",
        )),
    }
}

/// Risk cues: vocabulary ids, each a string or `{"kind", "detail"}`.
fn risk_cues(
    obj: &Map<String, Value>,
    at: &Location,
    vocab: &Vocabulary,
) -> Result<Vec<RiskCue>, DataError> {
    let items = match obj.get("risk_cues") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(DataError::field(
                at.clone(),
                "risk_cues",
                "expected a list of {\"kind\", \"detail\"} objects",
            ));
        }
    };
    let bad = |m: String| DataError::field(at.clone(), "risk_cues", m);
    let mut risk_cues = Vec::new();
    for item in items {
        let (kind, detail) = match item {
            Value::String(k) => (k.clone(), String::new()),
            Value::Object(m) => {
                let Some(k) = m.get("kind").and_then(Value::as_str) else {
                    return Err(bad("each cue needs a `kind`".into()));
                };
                if let Some(extra) = m.keys().find(|k| *k != "kind" && *k != "detail") {
                    return Err(bad(format!(
                        "unknown key `{extra}`; a risk cue is {{\"kind\", \"detail\"}}"
                    )));
                }
                let detail = m.get("detail").and_then(Value::as_str).unwrap_or("");
                (k.to_string(), detail.trim().to_string())
            }
            _ => return Err(bad("expected objects {\"kind\", \"detail\"}".into())),
        };
        if vocab.risk_cue(&kind).is_none() {
            return Err(bad(format!(
                "\"{kind}\" is not a risk cue; allowed: {}",
                vocab.risk_cue_ids()
            )));
        }
        risk_cues.push(RiskCue { kind, detail });
    }
    Ok(risk_cues)
}

fn string_list(
    obj: &Map<String, Value>,
    field: &str,
    at: &Location,
) -> Result<Vec<String>, DataError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str().map(str::to_string).ok_or_else(|| {
                    DataError::field(at.clone(), field, "expected a list of strings")
                })
            })
            .collect(),
        Some(_) => Err(DataError::field(
            at.clone(),
            field,
            "expected a list of strings",
        )),
    }
}

/// Writes profiles as JSONL text (the canonical format).
pub fn to_jsonl(profiles: &[Profile]) -> String {
    let mut s = String::new();
    for p in profiles {
        s.push_str(&serde_json::to_string(p).unwrap_or_default());
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin;

    fn vocab() -> Vocabulary {
        builtin::vocabulary().unwrap()
    }

    #[test]
    fn shipped_examples_load() {
        let set = builtin::example_profiles().unwrap();
        assert!(set.profiles.len() >= 20);
        assert!(set.warnings.is_empty(), "{:?}", set.warnings);
        let with_cues = set
            .profiles
            .iter()
            .filter(|p| !p.risk_cues.is_empty())
            .count();
        assert!(
            with_cues * 4 >= set.profiles.len(),
            "at least a quarter carry a risk cue"
        );
        let holdout = builtin::holdout_profiles().unwrap();
        assert!(!holdout.profiles.is_empty());
    }

    #[test]
    fn every_bad_line_is_reported_in_one_pass() {
        let good = builtin::example_profiles().unwrap();
        let line = |p: &Profile| serde_json::to_string(p).unwrap();
        let text = format!(
            "{}\nnot json\n{{\"id\": \"x\"}}\n{}\n",
            line(&good.profiles[0]),
            line(&good.profiles[0])
        );
        let e = parse_profiles(&text, Path::new("p.jsonl"), &vocab()).unwrap_err();
        let DataError::Many { errors, more } = &e else {
            panic!("one error only: {e}");
        };
        assert_eq!((errors.len(), *more), (3, 0), "{e}");
        let msg = e.to_string();
        for want in [
            "3 problems",
            "p.jsonl:2",
            "p.jsonl:3",
            "p.jsonl:4",
            "duplicate id",
        ] {
            assert!(msg.contains(want), "{want} not in {msg}");
        }
        // Past the cap the rest are counted.
        let many = "nope\n".repeat(crate::error::MAX_REPORTED + 5);
        let e = parse_profiles(&many, Path::new("p.jsonl"), &vocab()).unwrap_err();
        assert!(e.to_string().contains("and 5 more"), "{e}");
    }

    #[test]
    fn reads_patient_psi_json() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/patient-psi/profiles.json"
        ));
        let Ok(text) = std::fs::read_to_string(path) else {
            // The shared reference data sits beside the checkout; a test fixture copy covers CI.
            let text = include_str!("../tests/fixtures/patient_psi_profiles.json");
            return check_psi(&parse_profiles(text, Path::new("profiles.json"), &vocab()).unwrap());
        };
        check_psi(&parse_profiles(&text, path, &vocab()).unwrap());
    }

    fn check_psi(set: &ProfileSet) {
        assert_eq!(set.profiles.len(), 3);
        let abe = &set.profiles[0];
        assert_eq!(abe.id, "1-1");
        assert_eq!(abe.helpless_belief, vec!["incompetent", "failure"]);
        assert_eq!(abe.emotion, vec!["anxious"]);
        assert_eq!(abe.style, "plain");
        assert_eq!(abe.styles.len(), 6);
        assert!(abe.intermediate_belief.contains("[during depression]"));
        assert!(
            set.warnings.is_empty(),
            "the typo is a listed alias: {:?}",
            set.warnings
        );
    }

    fn one(line: &str) -> String {
        parse_profiles(line, Path::new("bad.jsonl"), &vocab())
            .unwrap_err()
            .to_string()
    }

    const GOOD: &str = r#"{"id":"x-1","name":"A","history":"h","helpless_belief":["incompetent"],"unlovable_belief":[],"worthless_belief":[],"intermediate_belief":"i","coping_strategies":"c","situation":"s","auto_thought":"a","emotion":["sad"],"behavior":"b","style":"plain"}"#;

    #[test]
    fn errors_name_file_line_field_and_allowed_values() {
        let e = one(&GOOD.replace(r#""sad""#, r#""happy""#));
        assert!(e.starts_with("bad.jsonl:1 (`x-1`): field `emotion`: \"happy\" is not an emotion; allowed: anxious, sad"), "{e}");
        let e = one(&format!(
            "{GOOD}\n{}",
            GOOD.replace(r#""plain""#, r#""shouty""#)
                .replace("x-1", "x-2")
        ));
        assert!(e.starts_with("bad.jsonl:2 (`x-2`): field `style`: \"shouty\" is not a style; allowed: plain, upset"), "{e}");
        let e = one(&GOOD.replace(
            r#""emotion":["sad"]"#,
            r#""emotion":["sad","hurt","guilty","angry"]"#,
        ));
        assert!(
            e.contains("field `emotion`: expected 1 to 3 emotions, found 4"),
            "{e}"
        );
        let e = one(&GOOD.replace(
            r#""helpless_belief":["incompetent"]"#,
            r#""helpless_belief":["brave"]"#,
        ));
        assert!(e.contains("field `helpless_belief`: \"brave\" is not a helpless belief; allowed: incompetent, helpless"), "{e}");
        let e = one(&GOOD.replace(
            r#""helpless_belief":["incompetent"]"#,
            r#""helpless_belief":[]"#,
        ));
        assert!(e.contains("at least one core belief"), "{e}");
        let e = one(&GOOD.replace(r#""situation":"s","#, ""));
        assert!(e.contains("field `situation`: missing"), "{e}");
        let e = one(&GOOD.replace(r#""style":"plain""#, r#""style":"plain","mood":1"#));
        assert!(e.contains("field `mood`: unknown field"), "{e}");
        let e = one(&format!("{GOOD}\n{GOOD}"));
        assert!(e.contains("duplicate id (first used on line 1)"), "{e}");
        let e = one("{not json");
        assert!(e.starts_with("bad.jsonl:1: not a JSON object"), "{e}");
        let e = one(&GOOD.replace(
            r#""style":"plain""#,
            r#""style":"plain","risk_cues":[{"kind":"zombies"}]"#,
        ));
        assert!(
            e.contains("\"zombies\" is not a risk cue; allowed: passive_suicidal_ideation"),
            "{e}"
        );
    }

    #[test]
    fn round_trips_through_jsonl() {
        let set = builtin::example_profiles().unwrap();
        let text = to_jsonl(&set.profiles);
        let again = parse_profiles(&text, Path::new("x.jsonl"), &vocab()).unwrap();
        assert_eq!(again.profiles, set.profiles);
    }

    #[test]
    fn style_choice_follows_the_seed() {
        let set = parse_profiles(
            &GOOD.replace(
                r#""style":"plain""#,
                r#""type":["plain","upset","verbose"]"#,
            ),
            Path::new("t"),
            &vocab(),
        )
        .unwrap();
        let p = &set.profiles[0];
        let chosen: std::collections::HashSet<&str> = (0..40).map(|s| p.style_for(s)).collect();
        assert!(chosen.len() > 1);
        assert_eq!(p.style_for(7), p.style_for(7));
    }
}
