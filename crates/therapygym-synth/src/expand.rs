//! Expanding one node (`paper.md` §7.1 steps 2–5): sketches, a new dimension with every sketch
//! assigned to one value, the completed value list, and the children. Every step is bounded:
//! sketches `1 + step_retries` asks, dimensions `dimension_attempts`, expansion
//! `max_expand_rounds` replies (malformed ones included).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde_json::Value;
use therapygym_core::{Profile, Vocabulary};
use therapygym_models::{ChatMessage, ChatRequest, ErrorKind, Model, ModelError, Sampling};

use crate::config::SynthConfig;
use crate::error::SynthError;
use crate::prompts::Compiled;
use crate::rng::{Rng, call_seed};
use crate::schema;
use crate::text::normalise;
use crate::tree::{Constraint, Expansion, LeafReason, NodeResult, Outcome, Split};

/// Everything the workers share.
pub(crate) struct Ctx {
    pub model: Arc<Model>,
    pub cfg: SynthConfig,
    pub prompts: Compiled,
    pub task: String,
    pub system: String,
    pub vocab: Arc<Vocabulary>,
    /// One-line summaries of the seed profiles (sketch prompts).
    pub seed_sketches: Vec<String>,
    /// Seed profiles as compact JSON in the reply shape (profile prompts).
    pub seed_examples: Vec<String>,
    pub profile_schema: Value,
    /// Belief, emotion and style lists for the profile prompt.
    pub profile_vocab: minijinja::Value,
    /// Model calls made by this process.
    pub calls: AtomicU64,
    pub attempt: u32,
}

#[derive(Serialize)]
pub(crate) struct Attr {
    pub dimension: String,
    pub value: String,
}

impl Ctx {
    /// The path's attributes for one prompt: list-valued ones draw one value at random.
    pub fn draw(&self, constraints: &[Constraint], rng: &mut Rng) -> Vec<Attr> {
        constraints
            .iter()
            .map(|c| Attr {
                dimension: c.dimension.clone(),
                value: c
                    .values
                    .get(rng.below(c.values.len()))
                    .cloned()
                    .unwrap_or_default(),
            })
            .collect()
    }

    pub fn pick<'a>(&self, pool: &'a [String], n: usize, rng: &mut Rng) -> Vec<&'a str> {
        let mut idx: Vec<usize> = (0..pool.len()).collect();
        rng.shuffle(&mut idx);
        idx.into_iter().take(n).map(|i| pool[i].as_str()).collect()
    }

    /// One structured call: the reply as JSON (the model layer has validated it against
    /// `schema`).
    pub async fn ask(
        &self,
        messages: Vec<ChatMessage>,
        name: &str,
        schema: Value,
        temperature: f32,
        max_tokens: u32,
        seed: u64,
    ) -> Result<(Value, String), ModelError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let req = ChatRequest::new(messages)
            .with_sampling(Sampling {
                temperature,
                top_p: 1.0,
                max_tokens,
                seed: Some(seed),
                stop: Vec::new(),
            })
            .with_schema(name, schema);
        let resp = self.model.chat(&req).await?;
        let v = serde_json::from_str(resp.text.trim()).map_err(|e| {
            ModelError::new(
                ErrorKind::InvalidJson,
                format!("the reply is not JSON: {e}"),
            )
            .with_raw(resp.text.clone())
        })?;
        Ok((v, resp.text))
    }

    pub fn messages(&self, user: String) -> Vec<ChatMessage> {
        vec![
            ChatMessage::system(self.system.clone()),
            ChatMessage::user(user),
        ]
    }
}

/// A configuration error (bad spec, unusable schema) stops the run; anything else is a
/// bounded, recorded failure of one step.
pub(crate) fn fatal(e: &ModelError) -> bool {
    e.kind() == ErrorKind::Config
}

/// Collapses whitespace, trims quotes and a final period, caps the length.
pub(crate) fn clean_label(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let s = s
        .trim_matches(|c: char| c == '"' || c == '\'' || c == '`' || c == '.' || c.is_whitespace());
    s.chars()
        .take(schema::MAX_LABEL_CHARS as usize)
        .collect::<String>()
        .trim()
        .to_string()
}

const CATCH_ALL: [&str; 17] = [
    "other",
    "others",
    "mixed",
    "various",
    "misc",
    "miscellaneous",
    "unknown",
    "unspecified",
    "not specified",
    "n a",
    "na",
    "none of the above",
    "all of the above",
    "etc",
    "else",
    "anything else",
    "something else",
];

/// A catch-all value ("other", "mixed", "other settings", ...), which the spec forbids.
pub(crate) fn is_catch_all(normalised: &str) -> bool {
    CATCH_ALL.contains(&normalised)
        || normalised.starts_with("other ")
        || normalised.ends_with(" other")
        || normalised.ends_with(" etc")
}

/// The usable new values of `raw`: cleaned, not empty, not catch-alls, not already in
/// `existing` or repeated, and not a combination ("A and B", "A or B", "A/B") of two values of
/// the list.
pub(crate) fn clean_values(raw: &[String], existing: &[String]) -> Vec<String> {
    let mut seen: Vec<String> = existing.iter().map(|v| normalise(v)).collect();
    let all: Vec<String> = existing
        .iter()
        .chain(raw)
        .map(|v| normalise(&clean_label(v)))
        .collect();
    let mut out = Vec::new();
    for v in raw {
        let label = clean_label(v);
        let n = normalise(&label);
        if n.is_empty() || is_catch_all(&n) || seen.contains(&n) {
            continue;
        }
        let lower = label.to_lowercase();
        let combined = [" and ", " or ", "/", "&"].iter().any(|sep| {
            let parts: Vec<String> = lower.split(sep).map(normalise).collect();
            parts.len() == 2
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && *p != n && all.contains(p))
        });
        if combined {
            continue;
        }
        seen.push(n);
        out.push(label);
    }
    out
}

fn sketch_list(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut seen = Vec::new();
    for s in v
        .get("samples")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
        let n = normalise(&s);
        if n.is_empty() || seen.contains(&n) {
            continue;
        }
        seen.push(n);
        out.push(s);
    }
    out
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

fn note(e: &ModelError) -> String {
    let msg: String = e.message().chars().take(240).collect();
    format!("{}: {msg}", e.kind())
}

/// Expands one pending node. Returns its result (a split, or a leaf with the reason).
pub(crate) async fn expand_node(
    ctx: Arc<Ctx>,
    id: String,
    constraints: Vec<Constraint>,
) -> Result<NodeResult, SynthError> {
    let cfg = &ctx.cfg;
    let n = cfg.samples_per_node;
    let mut calls = 0u32;
    let mut failures = Vec::new();
    let result = |calls, samples, outcome, failures| NodeResult {
        schema_revision: 1,
        node: id.clone(),
        attempt: ctx.attempt,
        calls,
        samples,
        outcome,
        failures,
    };

    // Step 2: sketches under the path's constraints.
    let mut samples = Vec::new();
    for attempt in 0..=cfg.step_retries {
        let key = attempt.to_string();
        let mut rng = Rng::for_key(cfg.seed, &[&id, "sample", &key]);
        let constraints_now = ctx.draw(&constraints, &mut rng);
        let examples = ctx.pick(&ctx.seed_sketches, 2.min(ctx.seed_sketches.len()), &mut rng);
        let user = ctx.prompts.render(
            "sample",
            serde_json::json!({"task": ctx.task, "constraints": constraints_now, "examples": examples, "n": n}),
        )?;
        calls += 1;
        let max_tokens = 80 * n as u32 + 64;
        match ctx
            .ask(
                ctx.messages(user),
                "node_samples",
                schema::sketches(n),
                cfg.temperature,
                max_tokens,
                call_seed(cfg.seed, &[&id, "sample", &key]),
            )
            .await
        {
            Ok((v, _)) => {
                let got = sketch_list(&v);
                if got.len() >= 2 {
                    samples = got;
                    break;
                }
                failures.push(format!("sketches: only {} distinct sketch(es)", got.len()));
            }
            Err(e) if fatal(&e) => return Err(e.into()),
            Err(e) => failures.push(format!("sketches: {}", note(&e))),
        }
    }
    if samples.is_empty() {
        return Ok(result(
            calls,
            samples,
            Outcome::Leaf {
                reason: LeafReason::NoSamples,
            },
            failures,
        ));
    }

    // Step 3: one new dimension, every sketch assigned to one of its values.
    let used: Vec<String> = constraints.iter().map(|c| c.dimension.clone()).collect();
    let used_norm: Vec<String> = used.iter().map(|d| normalise(d)).collect();
    let mut split: Option<(String, Vec<String>, Vec<usize>, usize)> = None;
    for attempt in 0..cfg.dimension_attempts {
        let key = attempt.to_string();
        let mut rng = Rng::for_key(cfg.seed, &[&id, "dimension", &key]);
        let constraints_now = ctx.draw(&constraints, &mut rng);
        let user = ctx.prompts.render(
            "dimension",
            serde_json::json!({"task": ctx.task, "constraints": constraints_now, "samples": samples, "used": used}),
        )?;
        calls += 1;
        let reply = ctx
            .ask(
                ctx.messages(user),
                "node_dimension",
                schema::dimension(),
                cfg.dimension_temperature,
                400,
                call_seed(cfg.seed, &[&id, "dimension", &key]),
            )
            .await;
        let v = match reply {
            Ok((v, _)) => v,
            Err(e) if fatal(&e) => return Err(e.into()),
            Err(e) => {
                failures.push(format!("dimension attempt {}: {}", attempt + 1, note(&e)));
                continue;
            }
        };
        let dimension = clean_label(v.get("dimension").and_then(Value::as_str).unwrap_or(""));
        let dn = normalise(&dimension);
        if dn.is_empty() {
            failures.push(format!(
                "dimension attempt {}: empty dimension",
                attempt + 1
            ));
            continue;
        }
        if used_norm.contains(&dn) {
            failures.push(format!(
                "dimension attempt {}: `{dimension}` is already used on this path",
                attempt + 1
            ));
            continue;
        }
        let proposed = strings(&v, "values");
        let values = clean_values(&proposed, &[]);
        if values.len() < 2 {
            failures.push(format!(
                "dimension attempt {}: `{dimension}` has {} usable value(s) of {} (catch-alls, combined values and repeats are dropped)",
                attempt + 1,
                values.len(),
                proposed.len()
            ));
            continue;
        }
        // Assignment: the schema only allows the listed values, one per sketch.
        let user = ctx.prompts.render(
            "assign",
            serde_json::json!({"dimension": dimension, "values": values, "samples": samples}),
        )?;
        calls += 1;
        let reply = ctx
            .ask(
                ctx.messages(user),
                "node_assignments",
                schema::assignments(samples.len(), &values),
                cfg.dimension_temperature,
                40 * samples.len() as u32 + 64,
                call_seed(cfg.seed, &[&id, "assign", &key]),
            )
            .await;
        let v = match reply {
            Ok((v, _)) => v,
            Err(e) if fatal(&e) => return Err(e.into()),
            Err(e) => {
                failures.push(format!("assignment attempt {}: {}", attempt + 1, note(&e)));
                continue;
            }
        };
        let labels = strings(&v, "assignments");
        if labels.len() != samples.len() {
            failures.push(format!(
                "assignment attempt {}: {} of {} sketches assigned",
                attempt + 1,
                labels.len(),
                samples.len()
            ));
            continue;
        }
        let norm_values: Vec<String> = values.iter().map(|x| normalise(x)).collect();
        let idx: Vec<Option<usize>> = labels
            .iter()
            .map(|l| {
                values
                    .iter()
                    .position(|x| x == l)
                    .or_else(|| norm_values.iter().position(|x| *x == normalise(l)))
            })
            .collect();
        if let Some(bad) = idx.iter().position(Option::is_none) {
            failures.push(format!(
                "assignment attempt {}: sketch {bad} was given `{}`, which is not a value",
                attempt + 1,
                labels[bad]
            ));
            continue;
        }
        split = Some((
            dimension,
            values,
            idx.into_iter().flatten().collect(),
            proposed.len(),
        ));
        break;
    }
    let Some((dimension, mut values, assignments, proposed)) = split else {
        return Ok(result(
            calls,
            samples,
            Outcome::Leaf {
                reason: LeafReason::NoDimension,
            },
            failures,
        ));
    };

    // Step 4: complete the value list; `infinite` repeats until the list exceeds `max_values`.
    let mut expansion = Expansion {
        proposed,
        ..Expansion::default()
    };
    for round in 0..cfg.max_expand_rounds {
        let key = round.to_string();
        let mut rng = Rng::for_key(cfg.seed, &[&id, "expand", &key]);
        let constraints_now = ctx.draw(&constraints, &mut rng);
        let user = ctx.prompts.render(
            "expand",
            serde_json::json!({"task": ctx.task, "constraints": constraints_now, "dimension": dimension,
                "values": values, "max_new": schema::VALUES_PER_REPLY}),
        )?;
        calls += 1;
        let reply = ctx
            .ask(
                ctx.messages(user),
                "node_values",
                schema::expansion(),
                cfg.temperature,
                500,
                call_seed(cfg.seed, &[&id, "expand", &key]),
            )
            .await;
        let v = match reply {
            Ok((v, _)) => v,
            Err(e) if fatal(&e) => return Err(e.into()),
            Err(e) => {
                expansion.statuses.push(format!("error:{}", e.kind()));
                failures.push(format!("expansion round {}: {}", round + 1, note(&e)));
                continue;
            }
        };
        let status = v
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("null")
            .to_string();
        let new = if status == "null" {
            Vec::new()
        } else {
            clean_values(&strings(&v, "missing_values"), &values)
        };
        let added = new.len();
        values.extend(new);
        expansion.statuses.push(status.clone());
        match status.as_str() {
            "infinite" => {
                expansion.infinite = true;
                if values.len() > cfg.max_values || added == 0 {
                    break;
                }
            }
            _ => break,
        }
    }

    // Step 5: children (one per value, or one list-valued child).
    let list_child = values.len() > cfg.infinite_threshold;
    Ok(result(
        calls,
        samples,
        Outcome::Split(Split {
            dimension,
            values,
            assignments,
            expansion,
            list_child,
        }),
        failures,
    ))
}

/// One-line summary of a seed profile for sketch prompts.
pub(crate) fn seed_sketch(p: &Profile) -> String {
    let beliefs: Vec<&str> = p
        .helpless_belief
        .iter()
        .chain(&p.unlovable_belief)
        .chain(&p.worthless_belief)
        .map(String::as_str)
        .collect();
    let situation: String = p.situation.chars().take(200).collect();
    format!(
        "{}: {} (core beliefs: {}; feels {})",
        p.name,
        situation,
        beliefs.join(", "),
        p.emotion.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn values_are_cleaned() {
        let got = clean_values(
            &s(&[
                "Urban",
                " rural ",
                "urban.",
                "Other",
                "other settings",
                "Urban and rural",
                "city/village",
                "",
                "Mixed",
                "Suburban",
            ]),
            &[],
        );
        assert_eq!(got, s(&["Urban", "rural", "city/village", "Suburban"]));
        let got = clean_values(
            &s(&["Village", "Urban", "Village or Suburban"]),
            &s(&["urban", "Suburban"]),
        );
        assert_eq!(got, s(&["Village"]));
        assert!(is_catch_all("other"));
        assert!(!is_catch_all("mother"));
        assert_eq!(clean_label("  \"Life   stage\". "), "Life stage");
    }
}
