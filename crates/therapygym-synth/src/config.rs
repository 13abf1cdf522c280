//! The settings of a synthesis run. Every TreeSynth default (`docs/synth.md`, "Settings") is here and
//! configurable; everything that changes results is stored in the run directory and must not
//! change on resume (concurrency changes speed only and is not part of it).

use serde::{Deserialize, Serialize};

use crate::error::SynthError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthConfig {
    /// The model spec (informational; the caller opens the model).
    pub model: String,
    /// Stop when this many valid, unique profiles exist (train + holdout). `None`: generate
    /// everything the tree plans.
    pub target: Option<usize>,
    /// `max_depth`: levels below the root (default 4).
    pub depth: u32,
    /// `num_samples_per_node`: sketches per node, and the size of one leaf sample set (10).
    pub samples_per_node: usize,
    /// `max_attribute_count`: an `infinite` dimension is asked for more values until its list
    /// exceeds this (50).
    pub max_values: usize,
    /// `max_sample_infinite_attribute`: a value list longer than this makes one list-valued
    /// child instead of one child per value (50).
    pub infinite_threshold: usize,
    /// `infinite_path_samples`: a leaf generates this^k sample sets, k = list-valued nodes on
    /// its path (10).
    pub infinite_path_samples: u64,
    /// Attempts to pick a valid new dimension before the node becomes a leaf (5).
    pub dimension_attempts: u32,
    /// Value-expansion requests per node, malformed replies included (upstream: unbounded).
    pub max_expand_rounds: u32,
    /// Re-asks after a malformed sketch reply before the node becomes a leaf.
    pub step_retries: u32,
    /// Re-asks (with the profile check's error) after an unusable profile before it is rejected.
    pub repair_attempts: u32,
    /// Profiles held out from training (the paper holds out 20), at most a fifth of the set.
    pub holdout: usize,
    pub seed: u64,
    /// While a target is set, a level is not expanded when the frontier, as leaves, already
    /// plans `target × oversample` profiles. Set `full_tree` to always grow to `depth`.
    pub oversample: f64,
    pub full_tree: bool,
    /// With a target not yet reached after every leaf generated its planned sets: extra rounds
    /// over all leaves at most this many times (a round that keeps nothing ends them).
    pub max_topup_rounds: u32,
    /// Stop the leaf phase after this many candidates in a row without a kept profile.
    pub give_up_after: usize,
    /// Sampling temperature of sketches, expansions and profiles (0.7).
    pub temperature: f32,
    /// Sampling temperature of dimension attempts (1.0).
    pub dimension_temperature: f32,
    /// `max_tokens` of one profile reply.
    pub profile_max_tokens: u32,
    /// Near duplicates: word-3-shingle Jaccard similarity at or above this (0.7).
    pub near_dup_threshold: f64,
    /// Seed profiles shown as examples in each sketch and profile prompt.
    pub examples_per_prompt: usize,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            model: "embedded".into(),
            target: None,
            depth: 4,
            samples_per_node: 10,
            max_values: 50,
            infinite_threshold: 50,
            infinite_path_samples: 10,
            dimension_attempts: 5,
            max_expand_rounds: 8,
            step_retries: 2,
            repair_attempts: 2,
            holdout: 20,
            seed: 20261127,
            oversample: 1.5,
            full_tree: false,
            max_topup_rounds: 20,
            give_up_after: 200,
            temperature: 0.7,
            dimension_temperature: 1.0,
            profile_max_tokens: 1024,
            near_dup_threshold: 0.7,
            examples_per_prompt: 1,
        }
    }
}

impl SynthConfig {
    pub fn check(&self) -> Result<(), SynthError> {
        let bad = |m: String| Err(SynthError::Config(m));
        if self.samples_per_node < 2 {
            return bad(
                "`samples_per_node` must be at least 2 (a dimension splits samples)".into(),
            );
        }
        if self.samples_per_node > 100 {
            return bad("`samples_per_node` must be at most 100".into());
        }
        if self.max_values < 2 || self.infinite_threshold < 2 {
            return bad("`max_values` and `infinite_threshold` must be at least 2".into());
        }
        if self.infinite_path_samples < 1 {
            return bad("`infinite_path_samples` must be at least 1".into());
        }
        if self.dimension_attempts < 1 {
            return bad("`dimension_attempts` must be at least 1".into());
        }
        if self.depth > 12 {
            return bad("`depth` above 12 is not supported".into());
        }
        if self.target == Some(0) {
            return bad("`target` must be at least 1".into());
        }
        if !(1.0..=100.0).contains(&self.oversample) {
            return bad(format!(
                "`oversample` = {} must be between 1 and 100",
                self.oversample
            ));
        }
        if !(0.05..=1.0).contains(&self.near_dup_threshold) {
            return bad(format!(
                "`near_dup_threshold` = {} must be between 0.05 and 1",
                self.near_dup_threshold
            ));
        }
        if self.give_up_after < 1 {
            return bad("`give_up_after` must be at least 1".into());
        }
        for (k, t) in [
            ("temperature", self.temperature),
            ("dimension_temperature", self.dimension_temperature),
        ] {
            if !(0.0..=2.0).contains(&t) {
                return bad(format!("`{k}` = {t} must be between 0 and 2"));
            }
        }
        if self.profile_max_tokens < 64 {
            return bad("`profile_max_tokens` must be at least 64".into());
        }
        Ok(())
    }

    /// Profiles a leaf plans: `samples_per_node × infinite_path_samples^k` (saturating).
    pub fn planned_per_leaf(&self, list_valued_on_path: u32) -> u64 {
        let sets = self
            .infinite_path_samples
            .saturating_pow(list_valued_on_path)
            .max(1);
        sets.saturating_mul(self.samples_per_node as u64)
    }

    /// How many profiles the holdout gets out of `kept`: `holdout`, but at most a fifth.
    pub fn holdout_size(&self, kept: usize) -> usize {
        self.holdout.min(kept / 5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_spec_and_validate() {
        let c = SynthConfig::default();
        c.check().unwrap();
        assert_eq!(
            (
                c.depth,
                c.samples_per_node,
                c.max_values,
                c.infinite_threshold
            ),
            (4, 10, 50, 50)
        );
        assert_eq!((c.infinite_path_samples, c.dimension_attempts), (10, 5));
        assert_eq!(c.planned_per_leaf(0), 10);
        assert_eq!(c.planned_per_leaf(2), 1000);
        assert_eq!(c.planned_per_leaf(40), u64::MAX);
        assert_eq!(c.holdout_size(13093), 20);
        assert_eq!(c.holdout_size(30), 6);
        let e = SynthConfig {
            samples_per_node: 1,
            ..c.clone()
        }
        .check()
        .unwrap_err();
        assert!(e.to_string().contains("`samples_per_node`"), "{e}");
    }
}
