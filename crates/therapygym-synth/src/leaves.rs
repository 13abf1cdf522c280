//! The leaf phase (TreeSynth step 7, `docs/synth.md`): every leaf generates `samples_per_node ×
//! infinite_path_samples^k` profiles conditioned on every attribute on its path.
//!
//! Work is cut into jobs — one chunk of one leaf's samples — and ordered in waves: wave `w`
//! gives every leaf that still has planned samples its chunk `w`, leaves in a seeded shuffled
//! order, so a run that stops at `--target` covers the leaves evenly. With a target, the chunk is
//! `ceil(target / leaves)` (1 to `samples_per_node`), and once every leaf has generated its
//! planned samples, top-up waves over all leaves continue (at most `max_topup_rounds`; a wave
//! that keeps nothing ends them).

use std::sync::Arc;

use serde_json::{Value, json};
use therapygym_models::{ChatMessage, ErrorKind};

use crate::error::SynthError;
use crate::expand::{Ctx, fatal};
use crate::profile_check::{Rejection, value_to_profile};
use crate::rng::{Rng, call_seed};
use crate::state::{CandidateRecord, JobRecord};
use crate::tree::Constraint;

/// One leaf as the leaf phase sees it.
#[derive(Debug, Clone)]
pub(crate) struct LeafPlan {
    pub id: String,
    pub planned: u64,
    pub constraints: Vec<Constraint>,
    /// Sketches the first samples build on: the leaf's own (a node that found no dimension
    /// emits its samples) or the parent's sketches assigned to its value.
    pub sketches: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Job {
    pub seq: u64,
    /// Index into the plans.
    pub plan: usize,
    pub start: u64,
    pub count: u32,
    pub wave: u32,
    pub topup: bool,
}

/// The job sequence: deterministic from the plans, the chunk and the settings.
pub(crate) struct Jobs {
    planned: Vec<u64>,
    chunk: u64,
    /// Plans that still have planned samples in the current (planned-phase) wave.
    active: Vec<usize>,
    pos: usize,
    wave: u32,
    seq: u64,
    /// `Some(t)`: in top-up wave `t`.
    topup: Option<u32>,
    allow_topup: bool,
    max_topup: u32,
    done: bool,
}

impl Jobs {
    pub fn new(planned: Vec<u64>, chunk: u64, allow_topup: bool, max_topup: u32) -> Self {
        let chunk = chunk.max(1);
        let active = (0..planned.len()).filter(|&i| planned[i] > 0).collect();
        Self {
            planned,
            chunk,
            active,
            pos: 0,
            wave: 0,
            seq: 0,
            topup: None,
            allow_topup,
            max_topup,
            done: false,
        }
    }
}

impl Iterator for Jobs {
    type Item = Job;

    fn next(&mut self) -> Option<Job> {
        loop {
            if self.done || self.planned.is_empty() {
                return None;
            }
            match self.topup {
                None => {
                    if self.pos >= self.active.len() {
                        // End of a planned wave: keep the leaves with samples left.
                        self.wave += 1;
                        self.pos = 0;
                        let from = u64::from(self.wave).saturating_mul(self.chunk);
                        let planned = &self.planned;
                        self.active.retain(|&p| planned[p] > from);
                        if self.active.is_empty() {
                            if self.allow_topup && self.max_topup > 0 {
                                self.topup = Some(0);
                            } else {
                                self.done = true;
                            }
                        }
                        continue;
                    }
                    let p = self.active[self.pos];
                    self.pos += 1;
                    let start = u64::from(self.wave).saturating_mul(self.chunk);
                    let count = self.chunk.min(self.planned[p] - start);
                    let job = Job {
                        seq: self.seq,
                        plan: p,
                        start,
                        count: u32::try_from(count).unwrap_or(u32::MAX),
                        wave: self.wave,
                        topup: false,
                    };
                    self.seq += 1;
                    return Some(job);
                }
                Some(t) => {
                    if self.pos >= self.planned.len() {
                        self.pos = 0;
                        self.wave += 1;
                        if t + 1 >= self.max_topup {
                            self.done = true;
                            return None;
                        }
                        self.topup = Some(t + 1);
                        continue;
                    }
                    let p = self.pos;
                    self.pos += 1;
                    let start = self.planned[p].saturating_add(u64::from(t) * self.chunk);
                    let job = Job {
                        seq: self.seq,
                        plan: p,
                        start,
                        count: u32::try_from(self.chunk).unwrap_or(u32::MAX),
                        wave: self.wave,
                        topup: true,
                    };
                    self.seq += 1;
                    return Some(job);
                }
            }
        }
    }
}

/// Runs one job: its candidates concurrently (the model handle bounds real concurrency).
pub(crate) async fn run_job(
    ctx: Arc<Ctx>,
    plan: Arc<LeafPlan>,
    job: Job,
) -> Result<JobRecord, SynthError> {
    let futs = (job.start..job.start + u64::from(job.count))
        .map(|i| candidate(Arc::clone(&ctx), Arc::clone(&plan), i));
    let candidates = futures::future::join_all(futs)
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    Ok(JobRecord {
        seq: job.seq,
        leaf: plan.id.clone(),
        start: job.start,
        count: job.count,
        wave: job.wave,
        topup: job.topup,
        attempt: ctx.attempt,
        candidates,
    })
}

fn excerpt(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// One profile: a structured call, the profile check, and at most `repair_attempts` re-asks that show
/// the model its reply and what was wrong with it.
async fn candidate(
    ctx: Arc<Ctx>,
    plan: Arc<LeafPlan>,
    index: u64,
) -> Result<CandidateRecord, SynthError> {
    let cfg = &ctx.cfg;
    let key = index.to_string();
    let mut rng = Rng::for_key(cfg.seed, &["profile", &plan.id, &key]);
    let attrs = ctx.draw(&plan.constraints, &mut rng);
    let examples = ctx.pick(&ctx.seed_examples, cfg.examples_per_prompt, &mut rng);
    let inspiration = usize::try_from(index)
        .ok()
        .and_then(|i| plan.sketches.get(i))
        .cloned()
        .unwrap_or_default();
    let user = ctx.prompts.render_value(
        "profile",
        minijinja::context! {
            task => ctx.task.as_str(),
            constraints => minijinja::Value::from(minijinja::value::Serde(&attrs)),
            inspiration => inspiration,
            example => examples.join("\n"),
            ..ctx.profile_vocab.clone()
        },
    )?;
    let mut messages = ctx.messages(user);
    let mut last: Option<(Rejection, Option<String>)> = None;
    let mut calls = 0u32;
    let rejected = |calls: u32, repairs: u32, r: Rejection, raw: Option<String>| CandidateRecord {
        index,
        profile: None,
        rejection: Some(r),
        raw: raw.map(|t| excerpt(&t, 2000)),
        repairs,
        calls,
    };
    for attempt in 0..=cfg.repair_attempts {
        calls += 1;
        let seed = call_seed(cfg.seed, &["profile", &plan.id, &key, &attempt.to_string()]);
        let reply = ctx
            .ask(
                messages.clone(),
                "patient_profile",
                ctx.profile_schema.clone(),
                cfg.temperature,
                cfg.profile_max_tokens,
                seed,
            )
            .await;
        let (rejection, raw) = match reply {
            Ok((v, text)) => match value_to_profile(&v, &ctx.vocab) {
                Ok(profile) => {
                    return Ok(CandidateRecord {
                        index,
                        profile: Some(profile),
                        rejection: None,
                        raw: None,
                        repairs: attempt,
                        calls,
                    });
                }
                Err(r) => (r, Some(text)),
            },
            Err(e) if fatal(&e) => return Err(e.into()),
            Err(e) => {
                let reason = match e.kind() {
                    ErrorKind::InvalidJson => "invalid_json",
                    ErrorKind::SchemaViolation => "schema_violation",
                    ErrorKind::Truncated => "truncated",
                    _ => "model_error",
                };
                let r = Rejection::new(
                    reason,
                    format!("{}: {}", e.kind(), excerpt(e.message(), 400)),
                );
                if reason == "model_error" {
                    // The model layer already retried the transport; a re-ask would not help.
                    return Ok(rejected(calls, attempt, r, None));
                }
                (r, e.raw().map(str::to_string))
            }
        };
        if attempt < cfg.repair_attempts {
            if let Some(t) = raw.as_deref().filter(|t| !t.trim().is_empty()) {
                messages.push(ChatMessage::assistant(excerpt(t, 3000)));
            }
            let fix = ctx
                .prompts
                .render("repair", json!({"error": excerpt(&rejection.detail, 400)}))?;
            messages.push(ChatMessage::user(fix));
        }
        last = Some((rejection, raw));
    }
    let (r, raw) = last.unwrap_or_else(|| (Rejection::new("model_error", "no reply"), None));
    Ok(rejected(calls, cfg.repair_attempts, r, raw))
}

/// The vocabulary as the profile prompt lists it (`beliefs`, `emotions`, `styles`), built once.
pub(crate) fn profile_vocab(v: &therapygym_core::Vocabulary) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(profile_vocab_json(v)))
}

fn profile_vocab_json(v: &therapygym_core::Vocabulary) -> Value {
    let beliefs: Vec<Value> = v
        .helpless
        .iter()
        .chain(&v.unlovable)
        .chain(&v.worthless)
        .map(|t| json!({"id": t.id, "label": t.label}))
        .collect();
    let emotions: Vec<Value> = v
        .emotions
        .iter()
        .map(|t| json!({"id": t.id, "label": t.label}))
        .collect();
    let styles: Vec<&str> = v.styles.iter().map(|s| s.id.as_str()).collect();
    json!({"beliefs": beliefs, "emotions": emotions, "styles": styles})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waves_cover_every_leaf_before_any_leaf_twice() {
        let jobs: Vec<Job> = Jobs::new(vec![4, 10, 2], 2, false, 0).collect();
        let got: Vec<(usize, u64, u32)> = jobs.iter().map(|j| (j.plan, j.start, j.count)).collect();
        assert_eq!(
            got,
            vec![
                (0, 0, 2),
                (1, 0, 2),
                (2, 0, 2),
                (0, 2, 2),
                (1, 2, 2),
                (1, 4, 2),
                (1, 6, 2),
                (1, 8, 2)
            ]
        );
        assert!(jobs.iter().enumerate().all(|(i, j)| j.seq == i as u64));
        let total: u32 = jobs.iter().map(|j| j.count).sum();
        assert_eq!(total, 16);
    }

    #[test]
    fn top_up_waves_are_bounded() {
        let jobs: Vec<Job> = Jobs::new(vec![1, 1], 1, true, 3).collect();
        assert_eq!(jobs.len(), 2 + 3 * 2);
        assert!(jobs[2..].iter().all(|j| j.topup));
        assert_eq!((jobs[2].start, jobs[4].start, jobs[6].start), (1, 2, 3));
        assert!(jobs[2].wave < jobs[4].wave);
        assert_eq!(Jobs::new(vec![], 1, true, 3).count(), 0);
        // Planned samples that do not divide into chunks: the last chunk is short.
        let jobs: Vec<Job> = Jobs::new(vec![5], 2, false, 0).collect();
        assert_eq!(
            jobs.iter().map(|j| j.count).collect::<Vec<_>>(),
            vec![2, 2, 1]
        );
    }
}
