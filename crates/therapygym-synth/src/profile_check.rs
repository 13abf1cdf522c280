//! From a model reply to a profile: the reply shape (one `core_beliefs` list of ids) is mapped
//! to the canonical fields and checked by `therapygym_core::parse_profile_value` — the same
//! profile check as `eval`'s profile loader — plus one quality check of our own (degenerate
//! repetition). Anything that fails is a [`Rejection`] with a stable reason.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use therapygym_core::vocab::BeliefKind;
use therapygym_core::{DataError, Location, Profile, Vocabulary, parse_profile_value};

use crate::text::is_repetitive;

/// The provisional id of a candidate; the final `syn-NNNNNN` id is given when the set is final.
pub const CANDIDATE_ID: &str = "syn-candidate";

/// Why a candidate was not kept. `reason` is a stable key (`invalid_json`, `schema_violation`,
/// `truncated`, `model_error`, `invalid:<field>`, `repetitive:<field>`); `detail` says more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub reason: String,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            detail: detail.into(),
        }
    }
}

const TEXT_FIELDS: [&str; 7] = [
    "name",
    "history",
    "intermediate_belief",
    "coping_strategies",
    "situation",
    "auto_thought",
    "behavior",
];

const KINDS: [BeliefKind; 3] = [
    BeliefKind::Helpless,
    BeliefKind::Unlovable,
    BeliefKind::Worthless,
];

/// Maps a reply (JSON text) to a checked profile with the provisional id.
pub fn reply_to_profile(text: &str, vocab: &Vocabulary) -> Result<Profile, Rejection> {
    let v: Value = serde_json::from_str(text.trim())
        .map_err(|e| Rejection::new("invalid_json", format!("the reply is not JSON: {e}")))?;
    value_to_profile(&v, vocab)
}

pub fn value_to_profile(v: &Value, vocab: &Vocabulary) -> Result<Profile, Rejection> {
    let Some(obj) = v.as_object() else {
        return Err(Rejection::new(
            "invalid_json",
            "the reply is not a JSON object",
        ));
    };
    let mut out = Map::new();
    out.insert("id".into(), Value::from(CANDIDATE_ID));
    for f in TEXT_FIELDS {
        if let Some(x) = obj.get(f) {
            out.insert(f.into(), x.clone());
        }
    }
    for f in ["emotion", "style"] {
        if let Some(x) = obj.get(f) {
            out.insert(f.into(), x.clone());
        }
    }
    // Beliefs: the reply's one list of ids, split by kind; canonical lists are read too.
    let mut lists: [Vec<Value>; 3] = Default::default();
    for (k, kind) in KINDS.iter().enumerate() {
        if let Some(Value::Array(items)) = obj.get(kind.field()) {
            lists[k].extend(items.iter().cloned());
        }
    }
    match obj.get("core_beliefs") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for item in items {
                let Some(s) = item.as_str() else {
                    return Err(Rejection::new(
                        "invalid:core_beliefs",
                        "expected a list of belief ids",
                    ));
                };
                // Ids first (no allocation), then the vocabulary's lenient matching.
                let kind = KINDS
                    .iter()
                    .position(|k| vocab.terms(*k).iter().any(|t| t.id == s))
                    .or_else(|| KINDS.iter().position(|k| vocab.belief(*k, s).is_some()))
                    .ok_or_else(|| {
                        Rejection::new(
                            "invalid:core_beliefs",
                            format!("\"{s}\" is not a core belief id"),
                        )
                    })?;
                lists[kind].push(Value::from(s));
            }
        }
        Some(_) => {
            return Err(Rejection::new(
                "invalid:core_beliefs",
                "expected a list of belief ids",
            ));
        }
    }
    for (k, kind) in KINDS.iter().enumerate() {
        out.insert(
            kind.field().into(),
            Value::Array(std::mem::take(&mut lists[k])),
        );
    }
    let at = Location {
        file: "<synthesised profile>".into(),
        line: None,
        id: None,
    };
    let (profile, _warnings) =
        parse_profile_value(&Value::Object(out), at, vocab).map_err(|e| match &e {
            DataError::Field { field, .. } => {
                Rejection::new(format!("invalid:{field}"), e.to_string())
            }
            _ => Rejection::new("invalid", e.to_string()),
        })?;
    for (field, text) in [
        ("history", &profile.history),
        ("intermediate_belief", &profile.intermediate_belief),
        ("coping_strategies", &profile.coping_strategies),
        ("situation", &profile.situation),
        ("auto_thought", &profile.auto_thought),
        ("behavior", &profile.behavior),
    ] {
        if is_repetitive(text) {
            return Err(Rejection::new(
                format!("repetitive:{field}"),
                format!(
                    "field `{field}` repeats itself (fewer than half of its word 3-grams are distinct)"
                ),
            ));
        }
    }
    Ok(profile)
}

/// A profile in the reply shape (used to show seed profiles as examples).
pub fn reply_shape(p: &Profile) -> Value {
    let beliefs: Vec<&String> = p
        .helpless_belief
        .iter()
        .chain(&p.unlovable_belief)
        .chain(&p.worthless_belief)
        .collect();
    serde_json::json!({
        "name": p.name,
        "history": p.history,
        "core_beliefs": beliefs,
        "intermediate_belief": p.intermediate_belief,
        "coping_strategies": p.coping_strategies,
        "situation": p.situation,
        "auto_thought": p.auto_thought,
        "emotion": p.emotion,
        "behavior": p.behavior,
        "style": p.style,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vocab() -> Vocabulary {
        therapygym_core::builtin::vocabulary().unwrap()
    }

    fn good() -> Value {
        json!({"name": "Ana", "history": "Ana moved to Porto for a nursing job two years ago and lives alone.",
            "core_beliefs": ["incompetent", "alone", "worthless"], "intermediate_belief": "If I ask for help, people will think I am weak.",
            "coping_strategies": "Works extra shifts and avoids calls.", "situation": "Her supervisor corrected her in front of a patient.",
            "auto_thought": "I will never be good at this.", "emotion": ["ashamed", "sad"], "behavior": "Stayed late and skipped dinner.",
            "style": "reserved"})
    }

    #[test]
    fn the_reply_shape_maps_to_a_valid_profile() {
        let p = value_to_profile(&good(), &vocab()).unwrap();
        assert_eq!(p.id, CANDIDATE_ID);
        assert_eq!(p.helpless_belief, vec!["incompetent"]);
        assert_eq!(p.unlovable_belief, vec!["alone"]);
        assert_eq!(p.worthless_belief, vec!["worthless"]);
        assert_eq!(p.style, "reserved");
        // Round trip through the reply shape.
        let again = value_to_profile(&reply_shape(&p), &vocab()).unwrap();
        assert_eq!(again, p);
    }

    #[test]
    fn rejections_name_a_stable_reason() {
        let v = vocab();
        let reason = |f: &dyn Fn(&mut Value)| {
            let mut x = good();
            f(&mut x);
            value_to_profile(&x, &v).unwrap_err().reason
        };
        assert_eq!(
            reason(&|x| x["emotion"] = json!(["happy"])),
            "invalid:emotion"
        );
        assert_eq!(
            reason(&|x| x["emotion"] = json!(["sad", "hurt", "guilty", "angry"])),
            "invalid:emotion"
        );
        assert_eq!(
            reason(&|x| x["core_beliefs"] = json!(["brave"])),
            "invalid:core_beliefs"
        );
        assert_eq!(
            reason(&|x| x["core_beliefs"] = json!([])),
            "invalid:helpless_belief"
        );
        assert_eq!(reason(&|x| x["style"] = json!("shouty")), "invalid:style");
        assert_eq!(
            reason(&|x| x["situation"] = json!("  ")),
            "invalid:situation"
        );
        assert_eq!(
            reason(&|x| {
                x.as_object_mut().unwrap().remove("behavior");
            }),
            "invalid:behavior"
        );
        assert_eq!(
            reason(&|x| x["auto_thought"] = json!(
                "I am useless I am useless I am useless I am useless I am useless I am useless"
            )),
            "repetitive:auto_thought"
        );
        assert_eq!(
            reply_to_profile("{oops", &v).unwrap_err().reason,
            "invalid_json"
        );
        assert_eq!(
            reply_to_profile("[1]", &v).unwrap_err().reason,
            "invalid_json"
        );
    }
}
