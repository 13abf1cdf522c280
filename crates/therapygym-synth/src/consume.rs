//! Consuming finished leaf jobs, in their fixed sequence order (never in completion order):
//! the profile check of stored candidates, deduplication, counting, and the stopping rules.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Value, json};
use therapygym_core::{Location, Profile, Vocabulary, parse_profile_value};

use crate::config::SynthConfig;
use crate::dedup::{DedupIndex, Prepared};
use crate::progress::Totals;
use crate::state::{CandidateRecord, JobRecord};
use crate::tree::LeafCounts;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    TargetReached,
    TopupStalled,
    GaveUp,
}

impl Stop {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Stop::TargetReached => "target_reached",
            Stop::TopupStalled => "topup_stalled",
            Stop::GaveUp => "gave_up",
        }
    }
}

/// A kept profile and where it came from.
pub(crate) struct Kept {
    pub(crate) profile: Profile,
    pub(crate) leaf: String,
    pub(crate) index: u64,
    pub(crate) wave: u32,
}

/// Consumes leaf job records in sequence order: deduplication, counting, stopping rules.
pub(crate) struct Consumer {
    pub(crate) target: Option<usize>,
    pub(crate) give_up_after: usize,
    pub(crate) vocab: Arc<Vocabulary>,
    pub(crate) index: DedupIndex,
    pub(crate) kept: Vec<Kept>,
    pub(crate) rejections: BTreeMap<String, u64>,
    pub(crate) duplicates: BTreeMap<String, u64>,
    pub(crate) rejected_log: Vec<Value>,
    pub(crate) totals: Totals,
    pub(crate) repaired: u64,
    pub(crate) misses_in_row: usize,
    /// (wave, top-up, kept when the wave began)
    pub(crate) wave: Option<(u32, bool, usize)>,
    pub(crate) per_leaf: HashMap<String, LeafCounts>,
}

impl Consumer {
    pub(crate) fn new(cfg: &SynthConfig, vocab: Arc<Vocabulary>, seeds: &[Profile]) -> Self {
        let mut index = DedupIndex::new(cfg.near_dup_threshold);
        for s in seeds {
            index.insert(Prepared::of(s), true);
        }
        Self {
            target: cfg.target,
            give_up_after: cfg.give_up_after,
            vocab,
            index,
            kept: Vec::new(),
            rejections: BTreeMap::new(),
            duplicates: BTreeMap::new(),
            rejected_log: Vec::new(),
            totals: Totals::default(),
            repaired: 0,
            misses_in_row: 0,
            wave: None,
            per_leaf: HashMap::new(),
        }
    }

    /// Checked before a record is consumed: a top-up wave that kept nothing ends the phase.
    pub(crate) fn before(&mut self, rec: &JobRecord) -> Option<Stop> {
        match self.wave {
            Some((w, topup, at_start)) if w != rec.wave => {
                if topup && self.kept.len() == at_start {
                    return Some(Stop::TopupStalled);
                }
                self.wave = Some((rec.wave, rec.topup, self.kept.len()));
            }
            None => self.wave = Some((rec.wave, rec.topup, self.kept.len())),
            _ => {}
        }
        None
    }

    fn reject(&mut self, leaf: &str, index: u64, reason: &str, detail: Value) {
        *self.rejections.entry(reason.to_string()).or_insert(0) += 1;
        self.totals.rejected += 1;
        self.per_leaf.entry(leaf.to_string()).or_default().rejected += 1;
        self.rejected_log
            .push(json!({"leaf": leaf, "index": index, "reason": reason, "detail": detail}));
    }

    /// A candidate profile: kept unless it is a duplicate (or, read back from the run
    /// directory, no longer passes the profile check). Returns whether it was kept.
    fn admit(&mut self, rec: &JobRecord, c: &CandidateRecord, p: &Profile, stored: bool) -> bool {
        let checked = if stored {
            let v = serde_json::to_value(p).unwrap_or(Value::Null);
            let at = Location {
                file: "<stored synthesised profile>".into(),
                line: None,
                id: None,
            };
            parse_profile_value(&v, at, &self.vocab).map(|(p, _)| p)
        } else {
            Ok(p.clone())
        };
        let p = match checked {
            Ok(p) => p,
            Err(e) => {
                self.reject(&rec.leaf, c.index, "invalid", json!(e.to_string()));
                return false;
            }
        };
        let leaf = self.per_leaf.entry(rec.leaf.clone()).or_default();
        match self.index.admit(Prepared::of(&p)) {
            Ok(_) => {
                leaf.kept += 1;
                self.totals.kept += 1;
                if c.repairs > 0 {
                    self.repaired += 1;
                }
                self.kept.push(Kept {
                    profile: p,
                    leaf: rec.leaf.clone(),
                    index: c.index,
                    wave: rec.wave,
                });
                true
            }
            Err(d) => {
                leaf.duplicates += 1;
                *self
                    .duplicates
                    .entry(d.kind.as_str().to_string())
                    .or_insert(0) += 1;
                self.totals.duplicates += 1;
                false
            }
        }
    }

    /// `stored`: the record was read back from the run directory, so its profiles are
    /// checked again (fresh ones were checked when they were generated).
    pub(crate) fn consume(&mut self, rec: &JobRecord, stored: bool) -> Option<Stop> {
        for c in &rec.candidates {
            if self.target.is_some_and(|t| self.kept.len() >= t) {
                return Some(Stop::TargetReached);
            }
            self.totals.candidates += 1;
            self.per_leaf
                .entry(rec.leaf.clone())
                .or_default()
                .candidates += 1;
            let kept_now = match (&c.profile, &c.rejection) {
                (Some(p), _) => self.admit(rec, c, p, stored),
                (None, Some(r)) => {
                    let detail = json!({"detail": r.detail, "raw": c.raw, "repairs": c.repairs});
                    self.reject(&rec.leaf, c.index, &r.reason, detail);
                    false
                }
                (None, None) => {
                    self.reject(
                        &rec.leaf,
                        c.index,
                        "model_error",
                        json!("no outcome recorded"),
                    );
                    false
                }
            };
            if kept_now {
                self.misses_in_row = 0;
            } else {
                self.misses_in_row += 1;
                if self.misses_in_row >= self.give_up_after {
                    return Some(Stop::GaveUp);
                }
            }
        }
        if self.target.is_some_and(|t| self.kept.len() >= t) {
            return Some(Stop::TargetReached);
        }
        None
    }
}
