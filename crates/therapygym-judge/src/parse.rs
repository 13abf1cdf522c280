//! Parsing and validating a judge reply, with the precise reason when it is unusable.

use std::collections::BTreeMap;

use serde_json::Value;
use therapygym_core::rubric::MAX_CODES_PER_UTTERANCE;
use therapygym_core::{
    ItemScore, Judgment, LabelFlag, Rubric, Taxonomy, UnscoredReason, UtteranceCodes,
};

/// Why a reply is unusable, with a message suitable for a re-ask and for the run store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub reason: UnscoredReason,
    pub message: String,
}

fn invalid(reason: UnscoredReason, message: impl Into<String>) -> Invalid {
    Invalid {
        reason,
        message: message.into(),
    }
}

fn looks_like_refusal(text: &str) -> bool {
    let t = text.to_lowercase();
    !t.contains('{')
        && [
            "i'm sorry",
            "i am sorry",
            "i can't",
            "i cannot",
            "i won't",
            "unable to",
        ]
        .iter()
        .any(|p| t.contains(p))
}

/// The JSON object inside a reply: the whole text, or the outermost `{…}` (some servers wrap
/// JSON in prose or code fences when they ignore `response_format`).
fn extract_json(text: &str) -> Option<Value> {
    let t = text.trim();
    if let Ok(v) = serde_json::from_str::<Value>(t) {
        return Some(v);
    }
    let (start, end) = (t.find('{')?, t.rfind('}')?);
    if end <= start {
        return None;
    }
    serde_json::from_str(&t[start..=end]).ok()
}

/// Validates a reply against the rubric and the enabled labels. `truncated` is whether the
/// reply stopped at max_tokens; `utterances` is the number of therapist utterances of the
/// session, which a rubric with behaviour codes needs coded exactly once each.
pub fn parse_judgment(
    text: &str,
    truncated: bool,
    rubric: &Rubric,
    taxonomy: &Taxonomy,
    utterances: usize,
) -> Result<Judgment, Invalid> {
    let v = reply_json(text, truncated)?;
    let key = rubric.items_key();
    let Some(obj) = v.as_object() else {
        return Err(invalid(
            UnscoredReason::SchemaViolation,
            format!("the reply must be a JSON object with `{key}` and `safety`"),
        ));
    };
    let ctrs_obj = section(obj, key)?;
    let mut ctrs = BTreeMap::new();
    for item in &rubric.items {
        let Some(entry) = ctrs_obj.get(&item.id) else {
            return Err(invalid(
                UnscoredReason::MissingItem,
                format!("item `{}` is missing", item.id),
            ));
        };
        ctrs.insert(item.id.clone(), item_score(&item.id, entry, rubric)?);
    }
    let safety_obj = section(obj, "safety")?;
    let mut safety = BTreeMap::new();
    for label in taxonomy.enabled() {
        let Some(entry) = safety_obj.get(&label.id) else {
            return Err(invalid(
                UnscoredReason::MissingItem,
                format!("safety label `{}` is missing", label.id),
            ));
        };
        safety.insert(label.id.clone(), label_flag(&label.id, entry)?);
    }
    let codes = if rubric.codes.is_empty() {
        Vec::new()
    } else {
        utterance_codes(obj.get("codes"), rubric, utterances)?
    };
    Ok(Judgment {
        ctrs,
        safety,
        codes,
    })
}

/// The `codes` list: one entry per therapist utterance 1..=`utterances`, each `{"utterance": k,
/// "codes": [ids]}` with known code ids; returned in utterance order.
fn utterance_codes(
    v: Option<&Value>,
    rubric: &Rubric,
    utterances: usize,
) -> Result<Vec<UtteranceCodes>, Invalid> {
    let list = match v {
        None => return Err(invalid(UnscoredReason::MissingItem, "`codes` is missing")),
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(invalid(
                UnscoredReason::SchemaViolation,
                "`codes` must be a list of {\"utterance\": k, \"codes\": [...]}",
            ));
        }
    };
    let mut by_index: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for (pos, entry) in list.iter().enumerate() {
        let at = format!("`codes[{pos}]`");
        let Some(m) = entry.as_object() else {
            return Err(invalid(
                UnscoredReason::SchemaViolation,
                format!("{at} must be an object {{\"utterance\": k, \"codes\": [...]}}"),
            ));
        };
        let k = match m.get("utterance").and_then(Value::as_u64) {
            Some(k) if (1..=utterances as u64).contains(&k) => k as u32,
            Some(k) => {
                return Err(invalid(
                    UnscoredReason::UtteranceMismatch,
                    format!(
                        "{at}: utterance {k} does not exist (the session has {utterances} therapist utterances, numbered 1 to {utterances})"
                    ),
                ));
            }
            None => {
                return Err(invalid(
                    UnscoredReason::SchemaViolation,
                    format!("{at}.utterance must be a positive integer"),
                ));
            }
        };
        let Some(Value::Array(given)) = m.get("codes") else {
            return Err(invalid(
                UnscoredReason::SchemaViolation,
                format!("{at}.codes must be a list of code ids"),
            ));
        };
        if given.len() > MAX_CODES_PER_UTTERANCE as usize {
            return Err(invalid(
                UnscoredReason::OutOfRange,
                format!(
                    "utterance {k} has {} codes (at most {MAX_CODES_PER_UTTERANCE})",
                    given.len()
                ),
            ));
        }
        let mut codes = Vec::with_capacity(given.len());
        for c in given {
            match c.as_str() {
                Some(id) if rubric.code(id).is_some() => codes.push(id.to_string()),
                _ => {
                    let ids: Vec<&str> = rubric.codes.iter().map(|c| c.id.as_str()).collect();
                    return Err(invalid(
                        UnscoredReason::OutOfRange,
                        format!(
                            "utterance {k}: {c} is not a code (codes: {})",
                            ids.join(", ")
                        ),
                    ));
                }
            }
        }
        if by_index.insert(k, codes).is_some() {
            return Err(invalid(
                UnscoredReason::UtteranceMismatch,
                format!("utterance {k} is coded twice; code each therapist utterance once"),
            ));
        }
    }
    let missing: Vec<String> = (1..=utterances as u32)
        .filter(|k| !by_index.contains_key(k))
        .map(|k| k.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(invalid(
            UnscoredReason::UtteranceMismatch,
            format!(
                "utterance(s) {} not coded; the session has {utterances} therapist utterances and each needs one entry",
                missing.join(", ")
            ),
        ));
    }
    Ok(by_index
        .into_iter()
        .map(|(utterance, codes)| UtteranceCodes { utterance, codes })
        .collect())
}

/// The reply as JSON, or why it is not: cut off, a refusal, or no JSON at all.
fn reply_json(text: &str, truncated: bool) -> Result<Value, Invalid> {
    if let Some(v) = extract_json(text) {
        return Ok(v);
    }
    if truncated {
        return Err(invalid(
            UnscoredReason::Truncated,
            "the reply was cut off at max_tokens before the JSON ended",
        ));
    }
    if looks_like_refusal(text) {
        return Err(invalid(
            UnscoredReason::Refusal,
            "the judge declined to rate the session",
        ));
    }
    Err(invalid(
        UnscoredReason::ParseFailure,
        "the reply is not a JSON object",
    ))
}

fn section<'a>(
    obj: &'a serde_json::Map<String, Value>,
    key: &str,
) -> Result<&'a serde_json::Map<String, Value>, Invalid> {
    match obj.get(key) {
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(invalid(
            UnscoredReason::SchemaViolation,
            format!("`{key}` must be an object"),
        )),
        None => Err(invalid(
            UnscoredReason::MissingItem,
            format!("`{key}` is missing"),
        )),
    }
}

/// One item: `{"score": n, "rationale": "..."}` or a bare number (the rationale is optional,
/// the score is not); the score an integer on the rubric's scale.
fn item_score(id: &str, entry: &Value, rubric: &Rubric) -> Result<ItemScore, Invalid> {
    let (score_v, rationale) = match entry {
        Value::Object(m) => (
            m.get("score"),
            m.get("rationale").and_then(Value::as_str).unwrap_or(""),
        ),
        other => (Some(other), ""),
    };
    let (lo, hi) = (rubric.min_score, rubric.max_score);
    let score = match score_v {
        None => {
            return Err(invalid(
                UnscoredReason::MissingItem,
                format!("`{id}.score` is missing"),
            ));
        }
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) if x.fract() == 0.0 && (f64::from(lo)..=f64::from(hi)).contains(&x) => x as u8,
            _ => {
                return Err(invalid(
                    UnscoredReason::OutOfRange,
                    format!("`{id}` = {n} (allowed: an integer {lo}–{hi})"),
                ));
            }
        },
        Some(other) => {
            return Err(invalid(
                UnscoredReason::OutOfRange,
                format!("`{id}` = {other} is not an integer {lo}–{hi}"),
            ));
        }
    };
    Ok(ItemScore {
        score,
        rationale: rationale.to_string(),
    })
}

/// One safety label: `{"flag": bool, "evidence": "..."}` (also `violated` / `rationale`) or a
/// bare boolean.
fn label_flag(id: &str, entry: &Value) -> Result<LabelFlag, Invalid> {
    let (flag_v, evidence) = match entry {
        Value::Object(m) => (
            m.get("flag").or_else(|| m.get("violated")),
            m.get("evidence")
                .or_else(|| m.get("rationale"))
                .and_then(Value::as_str)
                .unwrap_or(""),
        ),
        other => (Some(other), ""),
    };
    let flag = match flag_v {
        Some(Value::Bool(b)) => *b,
        None => {
            return Err(invalid(
                UnscoredReason::MissingItem,
                format!("`{id}.flag` is missing"),
            ));
        }
        Some(other) => {
            return Err(invalid(
                UnscoredReason::OutOfRange,
                format!("`{id}.flag` = {other} is not true or false"),
            ));
        }
    };
    Ok(LabelFlag {
        flag,
        evidence: evidence.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use therapygym_core::builtin;

    fn valid() -> Value {
        let rubric = builtin::rubric().unwrap();
        let taxonomy = builtin::taxonomy().unwrap();
        let ctrs: serde_json::Map<String, Value> = rubric
            .items
            .iter()
            .map(|i| {
                (
                    i.id.clone(),
                    serde_json::json!({"rationale": "r", "score": 3}),
                )
            })
            .collect();
        let safety: serde_json::Map<String, Value> = taxonomy
            .enabled()
            .map(|l| {
                (
                    l.id.clone(),
                    serde_json::json!({"evidence": "e", "flag": false}),
                )
            })
            .collect();
        serde_json::json!({"ctrs": ctrs, "safety": safety})
    }

    fn check(text: &str, truncated: bool) -> Result<Judgment, Invalid> {
        parse_judgment(
            text,
            truncated,
            &builtin::rubric().unwrap(),
            &builtin::taxonomy().unwrap(),
            2,
        )
    }

    fn mi_reply(codes: Value) -> String {
        let mi = builtin::load_rubric(std::path::Path::new("mi")).unwrap();
        let mut v = valid();
        let obj = v.as_object_mut().unwrap();
        obj.remove("ctrs");
        let globals: serde_json::Map<String, Value> = mi
            .items
            .iter()
            .map(|i| {
                (
                    i.id.clone(),
                    serde_json::json!({"rationale": "r", "score": 5}),
                )
            })
            .collect();
        obj.insert("globals".into(), Value::Object(globals));
        obj.insert("codes".into(), codes);
        v.to_string()
    }

    fn check_mi(codes: Value) -> Result<Judgment, Invalid> {
        parse_judgment(
            &mi_reply(codes),
            false,
            &builtin::load_rubric(std::path::Path::new("mi")).unwrap(),
            &builtin::taxonomy().unwrap(),
            3,
        )
    }

    #[test]
    fn utterance_codes_must_cover_each_utterance_once() {
        use serde_json::json;
        let e = |u: u32, c: &[&str]| json!({"utterance": u, "codes": c});
        let j = check_mi(json!([
            e(2, &["question"]),
            e(1, &[]),
            e(3, &["affirm", "affirm"])
        ]))
        .unwrap();
        assert_eq!(j.ctrs["empathy"].score, 5);
        assert_eq!(
            j.codes.iter().map(|c| c.utterance).collect::<Vec<_>>(),
            [1, 2, 3],
            "kept in utterance order"
        );
        assert_eq!(j.codes[2].codes, ["affirm", "affirm"], "repeats count");
        let fail = |codes: Value| check_mi(codes).unwrap_err();
        let missing = fail(json!([e(1, &[]), e(3, &[])]));
        assert_eq!(missing.reason, UnscoredReason::UtteranceMismatch);
        assert!(
            missing.message.contains("utterance(s) 2 not coded"),
            "{}",
            missing.message
        );
        let extra = fail(json!([e(1, &[]), e(2, &[]), e(3, &[]), e(4, &[])]));
        assert_eq!(extra.reason, UnscoredReason::UtteranceMismatch);
        assert!(
            extra.message.contains("utterance 4 does not exist"),
            "{}",
            extra.message
        );
        let zero = fail(json!([e(0, &[]), e(1, &[]), e(2, &[])]));
        assert_eq!(zero.reason, UnscoredReason::UtteranceMismatch);
        let dup = fail(json!([e(1, &[]), e(2, &[]), e(2, &[]), e(3, &[])]));
        assert_eq!(dup.reason, UnscoredReason::UtteranceMismatch);
        assert!(
            dup.message.contains("utterance 2 is coded twice"),
            "{}",
            dup.message
        );
        let unknown = fail(json!([e(1, &["nod"]), e(2, &[]), e(3, &[])]));
        assert_eq!(unknown.reason, UnscoredReason::OutOfRange);
        assert!(
            unknown.message.contains("\"nod\" is not a code"),
            "{}",
            unknown.message
        );
        let shape = fail(json!({"1": ["question"]}));
        assert_eq!(shape.reason, UnscoredReason::SchemaViolation);
        // The codes list itself missing.
        let mut v: Value = serde_json::from_str(&mi_reply(json!([]))).unwrap();
        v.as_object_mut().unwrap().remove("codes");
        let e = parse_judgment(
            &v.to_string(),
            false,
            &builtin::load_rubric(std::path::Path::new("mi")).unwrap(),
            &builtin::taxonomy().unwrap(),
            3,
        )
        .unwrap_err();
        assert_eq!(e.reason, UnscoredReason::MissingItem);
    }

    #[test]
    fn valid_replies_parse_even_inside_prose() {
        let j = check(&valid().to_string(), false).unwrap();
        assert_eq!(j.ctrs.len(), 11);
        assert_eq!(j.ctrs["homework"].score, 3);
        assert_eq!(j.safety.len(), 4);
        check(&format!("Here it is:\n```json\n{}\n```", valid()), false).unwrap();
    }

    #[test]
    fn each_failure_has_its_reason() {
        let reason = |t: &str, trunc| check(t, trunc).unwrap_err().reason;
        assert_eq!(
            reason("not json at all", false),
            UnscoredReason::ParseFailure
        );
        assert_eq!(
            reason(r#"{"ctrs": {"agenda": {"ratio"#, true),
            UnscoredReason::Truncated
        );
        assert_eq!(
            reason("I'm sorry, I can't rate this.", false),
            UnscoredReason::Refusal
        );
        assert_eq!(reason("[1, 2]", false), UnscoredReason::SchemaViolation);
        let mut v = valid();
        v["ctrs"]["homework"]["score"] = serde_json::json!(7);
        let e = check(&v.to_string(), false).unwrap_err();
        assert_eq!(e.reason, UnscoredReason::OutOfRange);
        assert!(
            e.message
                .contains("`homework` = 7 (allowed: an integer 0–6)"),
            "{}",
            e.message
        );
        v["ctrs"]["homework"]["score"] = serde_json::json!(2.5);
        assert_eq!(
            check(&v.to_string(), false).unwrap_err().reason,
            UnscoredReason::OutOfRange
        );
        v["ctrs"]["homework"]["score"] = serde_json::json!("4");
        assert_eq!(
            check(&v.to_string(), false).unwrap_err().reason,
            UnscoredReason::OutOfRange
        );
        let mut v = valid();
        v["ctrs"].as_object_mut().unwrap().remove("pacing");
        let e = check(&v.to_string(), false).unwrap_err();
        assert_eq!(
            (e.reason, e.message.as_str()),
            (UnscoredReason::MissingItem, "item `pacing` is missing")
        );
        let mut v = valid();
        v["safety"]["missed_crisis"]["flag"] = serde_json::json!("no");
        assert_eq!(
            check(&v.to_string(), false).unwrap_err().reason,
            UnscoredReason::OutOfRange
        );
    }

    mod fuzz {
        //! Property tests: any reply (arbitrary bytes, mutations of a valid judgment, the same
        //! wrapped in prose or cut short) is parsed or rejected with a reason, never a panic;
        //! an accepted reply has every item on the scale and every enabled label.
        #![allow(clippy::unwrap_used)]
        use super::*;
        use proptest::prelude::*;
        use therapygym_testkit::fuzz;

        fn holds(text: &str, truncated: bool) -> Result<(), TestCaseError> {
            let rubric = builtin::rubric().unwrap();
            let taxonomy = builtin::taxonomy().unwrap();
            match parse_judgment(text, truncated, &rubric, &taxonomy, 0) {
                Ok(j) => {
                    prop_assert_eq!(j.ctrs.len(), rubric.items.len());
                    prop_assert!(
                        j.ctrs
                            .values()
                            .all(|s| (rubric.min_score..=rubric.max_score).contains(&s.score))
                    );
                    prop_assert_eq!(j.safety.len(), taxonomy.enabled().count());
                }
                Err(e) => prop_assert!(!e.message.is_empty()),
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(fuzz::config(256))]

            #[test]
            fn arbitrary_bytes(bytes in fuzz::bytes(1024), truncated in any::<bool>()) {
                holds(&String::from_utf8_lossy(&bytes), truncated)?;
            }

            #[test]
            fn mutated_judgments(v in fuzz::mutated_json(valid()), truncated in any::<bool>()) {
                holds(&v.to_string(), truncated)?;
            }

            #[test]
            fn mutated_replies_in_prose(
                text in fuzz::mutated_text(&format!("Here it is:\n```json\n{:#}\n```\nThanks.", valid())),
                truncated in any::<bool>(),
            ) {
                holds(&text, truncated)?;
            }
        }
    }
}
