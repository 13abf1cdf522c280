//! Expanding one node (TreeSynth steps 2–5, `docs/synth.md`): sketches, a new dimension with every sketch
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
    let mut node = NodeWork {
        ctx: &ctx,
        id: &id,
        constraints: &constraints,
        calls: 0,
        failures: Vec::new(),
    };
    let samples = node.sketches().await?;
    if samples.is_empty() {
        let leaf = Outcome::Leaf {
            reason: LeafReason::NoSamples,
        };
        return Ok(node.result(samples, leaf));
    }
    let Some(chosen) = node.dimension(&samples).await? else {
        let leaf = Outcome::Leaf {
            reason: LeafReason::NoDimension,
        };
        return Ok(node.result(samples, leaf));
    };
    let (values, expansion) = node.complete_values(&chosen).await?;
    // Step 5: children (one per value, or one list-valued child).
    let list_child = values.len() > ctx.cfg.infinite_threshold;
    let split = Outcome::Split(Split {
        dimension: chosen.dimension,
        values,
        assignments: chosen.assignments,
        expansion,
        list_child,
    });
    Ok(node.result(samples, split))
}

/// A dimension that splits a node's sketches: its values and each sketch's value.
struct Chosen {
    dimension: String,
    values: Vec<String>,
    assignments: Vec<usize>,
    /// Values the model proposed before cleaning.
    proposed: usize,
}

/// The steps of expanding one node, with the calls it made and the failures it recorded.
struct NodeWork<'a> {
    ctx: &'a Ctx,
    id: &'a str,
    constraints: &'a [Constraint],
    calls: u32,
    failures: Vec<String>,
}

impl NodeWork<'_> {
    fn result(self, samples: Vec<String>, outcome: Outcome) -> NodeResult {
        NodeResult {
            schema_revision: 1,
            node: self.id.to_string(),
            attempt: self.ctx.attempt,
            calls: self.calls,
            samples,
            outcome,
            failures: self.failures,
        }
    }

    /// One structured call of `step` (`sample`, `dimension`, `assign`, `expand`) with its
    /// attempt `key`. `Ok(None)`: the call failed, recorded as `what`; a configuration error
    /// stops the run.
    async fn ask(
        &mut self,
        step: &str,
        key: &str,
        user: String,
        (schema_name, schema): (&str, Value),
        (temperature, max_tokens): (f32, u32),
        what: &str,
    ) -> Result<Option<Value>, SynthError> {
        self.calls += 1;
        let seed = call_seed(self.ctx.cfg.seed, &[self.id, step, key]);
        let reply = self
            .ctx
            .ask(
                self.ctx.messages(user),
                schema_name,
                schema,
                temperature,
                max_tokens,
                seed,
            )
            .await;
        match reply {
            Ok((v, _)) => Ok(Some(v)),
            Err(e) if fatal(&e) => Err(e.into()),
            Err(e) => {
                self.failures.push(format!("{what}: {}", note(&e)));
                Ok(None)
            }
        }
    }

    /// The path's attributes drawn for one prompt of `step`.
    fn draw(&self, step: &str, key: &str) -> (Vec<Attr>, Rng) {
        let mut rng = Rng::for_key(self.ctx.cfg.seed, &[self.id, step, key]);
        let attrs = self.ctx.draw(self.constraints, &mut rng);
        (attrs, rng)
    }

    /// Step 2: distinct sketches under the path's constraints (empty when every ask failed).
    async fn sketches(&mut self) -> Result<Vec<String>, SynthError> {
        let (ctx, n) = (self.ctx, self.ctx.cfg.samples_per_node);
        for attempt in 0..=ctx.cfg.step_retries {
            let key = attempt.to_string();
            let (constraints_now, mut rng) = self.draw("sample", &key);
            let examples = ctx.pick(&ctx.seed_sketches, 2.min(ctx.seed_sketches.len()), &mut rng);
            let user = ctx.prompts.render(
                "sample",
                serde_json::json!({"task": ctx.task, "constraints": constraints_now, "examples": examples, "n": n}),
            )?;
            let sampling = (ctx.cfg.temperature, 80 * n as u32 + 64);
            let reply = self
                .ask(
                    "sample",
                    &key,
                    user,
                    ("node_samples", schema::sketches(n)),
                    sampling,
                    "sketches",
                )
                .await?;
            if let Some(v) = reply {
                let got = sketch_list(&v);
                if got.len() >= 2 {
                    return Ok(got);
                }
                self.failures
                    .push(format!("sketches: only {} distinct sketch(es)", got.len()));
            }
        }
        Ok(Vec::new())
    }

    /// Step 3: one new dimension with every sketch assigned to one of its values, in at most
    /// `dimension_attempts` attempts.
    async fn dimension(&mut self, samples: &[String]) -> Result<Option<Chosen>, SynthError> {
        for attempt in 0..self.ctx.cfg.dimension_attempts {
            if let Some(c) = self.try_dimension(attempt, samples).await? {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    async fn try_dimension(
        &mut self,
        attempt: u32,
        samples: &[String],
    ) -> Result<Option<Chosen>, SynthError> {
        let ctx = self.ctx;
        let key = attempt.to_string();
        let n = attempt + 1;
        let used: Vec<String> = self
            .constraints
            .iter()
            .map(|c| c.dimension.clone())
            .collect();
        let (constraints_now, _) = self.draw("dimension", &key);
        let user = ctx.prompts.render(
            "dimension",
            serde_json::json!({"task": ctx.task, "constraints": constraints_now, "samples": samples, "used": used}),
        )?;
        let sampling = (ctx.cfg.dimension_temperature, 400);
        let what = format!("dimension attempt {n}");
        let Some(v) = self
            .ask(
                "dimension",
                &key,
                user,
                ("node_dimension", schema::dimension()),
                sampling,
                &what,
            )
            .await?
        else {
            return Ok(None);
        };
        let dimension = clean_label(v.get("dimension").and_then(Value::as_str).unwrap_or(""));
        let dn = normalise(&dimension);
        if dn.is_empty() {
            self.failures
                .push(format!("dimension attempt {n}: empty dimension"));
            return Ok(None);
        }
        if used.iter().any(|d| normalise(d) == dn) {
            self.failures.push(format!(
                "dimension attempt {n}: `{dimension}` is already used on this path"
            ));
            return Ok(None);
        }
        let proposed = strings(&v, "values");
        let values = clean_values(&proposed, &[]);
        if values.len() < 2 {
            self.failures.push(format!(
                "dimension attempt {n}: `{dimension}` has {} usable value(s) of {} (catch-alls, combined values and repeats are dropped)",
                values.len(),
                proposed.len()
            ));
            return Ok(None);
        }
        let Some(assignments) = self.assign(&key, n, &dimension, &values, samples).await? else {
            return Ok(None);
        };
        Ok(Some(Chosen {
            dimension,
            values,
            assignments,
            proposed: proposed.len(),
        }))
    }

    /// The assignment call of a dimension attempt: the schema only allows the listed values,
    /// one per sketch. Returns each sketch's value index.
    async fn assign(
        &mut self,
        key: &str,
        n: u32,
        dimension: &str,
        values: &[String],
        samples: &[String],
    ) -> Result<Option<Vec<usize>>, SynthError> {
        let ctx = self.ctx;
        let user = ctx.prompts.render(
            "assign",
            serde_json::json!({"dimension": dimension, "values": values, "samples": samples}),
        )?;
        let sampling = (
            ctx.cfg.dimension_temperature,
            40 * samples.len() as u32 + 64,
        );
        let schema = schema::assignments(samples.len(), values);
        let what = format!("assignment attempt {n}");
        let Some(v) = self
            .ask(
                "assign",
                key,
                user,
                ("node_assignments", schema),
                sampling,
                &what,
            )
            .await?
        else {
            return Ok(None);
        };
        let labels = strings(&v, "assignments");
        if labels.len() != samples.len() {
            self.failures.push(format!(
                "assignment attempt {n}: {} of {} sketches assigned",
                labels.len(),
                samples.len()
            ));
            return Ok(None);
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
            self.failures.push(format!(
                "assignment attempt {n}: sketch {bad} was given `{}`, which is not a value",
                labels[bad]
            ));
            return Ok(None);
        }
        Ok(Some(idx.into_iter().flatten().collect()))
    }

    /// Step 4: completes the value list; `infinite` repeats until the list exceeds
    /// `max_values`, a reply adds nothing, or `max_expand_rounds` replies were made.
    async fn complete_values(
        &mut self,
        chosen: &Chosen,
    ) -> Result<(Vec<String>, Expansion), SynthError> {
        let ctx = self.ctx;
        let mut values = chosen.values.clone();
        let mut expansion = Expansion {
            proposed: chosen.proposed,
            ..Expansion::default()
        };
        for round in 0..ctx.cfg.max_expand_rounds {
            let key = round.to_string();
            let (constraints_now, _) = self.draw("expand", &key);
            let user = ctx.prompts.render(
                "expand",
                serde_json::json!({"task": ctx.task, "constraints": constraints_now, "dimension": chosen.dimension,
                    "values": values, "max_new": schema::VALUES_PER_REPLY}),
            )?;
            self.calls += 1;
            let reply = ctx
                .ask(
                    ctx.messages(user),
                    "node_values",
                    schema::expansion(),
                    ctx.cfg.temperature,
                    500,
                    call_seed(ctx.cfg.seed, &[self.id, "expand", &key]),
                )
                .await;
            let v = match reply {
                Ok((v, _)) => v,
                Err(e) if fatal(&e) => return Err(e.into()),
                Err(e) => {
                    expansion.statuses.push(format!("error:{}", e.kind()));
                    self.failures
                        .push(format!("expansion round {}: {}", round + 1, note(&e)));
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
            if status != "infinite" {
                break;
            }
            expansion.infinite = true;
            if values.len() > ctx.cfg.max_values || added == 0 {
                break;
            }
        }
        Ok((values, expansion))
    }
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
