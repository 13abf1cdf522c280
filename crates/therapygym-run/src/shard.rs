//! `eval --shard I/N`: the I-th of N disjoint, deterministic slices of a run's planned
//! sessions, so an evaluation scales out over the schedulers people already have (Kubernetes
//! Indexed Jobs, SLURM job arrays) and `therapygym merge` puts the slices back together.
//!
//! The slice is taken by session id: the planned ids are sorted and the k-th (0-based) goes to
//! shard `k mod N + 1`. It depends only on the profiles, sessions per profile and N, so shards
//! never overlap and together cover the plan, whatever machine runs them.

use serde::{Deserialize, Serialize};

use crate::error::RunError;

/// The scheduler variables `--shard auto/N` reads, in order; both are 0-based.
pub const SHARD_INDEX_VARS: [&str; 2] = ["JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID"];

/// Shard `index` of `count` (1 ≤ index ≤ count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// `I/N`, or `auto/N` with I from the scheduler's 0-based index (+1).
    pub fn parse(s: &str) -> Result<Self, RunError> {
        Self::parse_with(s, |k| std::env::var(k).ok())
    }

    fn parse_with(s: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, RunError> {
        let bad = |why: String| RunError::Invalid(format!("`--shard {s}`: {why}"));
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| bad("expected I/N (e.g. 2/8) or auto/N".into()))?;
        let count: u32 = n
            .trim()
            .parse()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| bad(format!("N must be a whole number ≥ 1, not `{n}`")))?;
        let index = if i.trim() == "auto" {
            let (var, v) = SHARD_INDEX_VARS
                .iter()
                .find_map(|k| env(k).map(|v| (*k, v)))
                .ok_or_else(|| {
                    bad(format!(
                        "auto needs {} (0-based) in the environment; pass I/N otherwise",
                        SHARD_INDEX_VARS.join(" or ")
                    ))
                })?;
            let zero: u32 = v
                .trim()
                .parse()
                .map_err(|_| bad(format!("{var}=`{v}` is not a whole number")))?;
            zero.checked_add(1)
                .ok_or_else(|| bad(format!("{var}=`{v}` is too large")))?
        } else {
            i.trim()
                .parse()
                .map_err(|_| bad(format!("I must be a whole number or `auto`, not `{i}`")))?
        };
        if index == 0 || index > count {
            return Err(bad(format!(
                "I must be between 1 and {count} (from a 0-based scheduler index, I = index + 1)"
            )));
        }
        Ok(Self { index, count })
    }

    /// The ids of `ids` (any order) that belong to this shard.
    pub fn select<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
        let mut sorted: Vec<&str> = ids.into_iter().collect();
        sorted.sort_unstable();
        sorted.dedup();
        sorted
            .into_iter()
            .enumerate()
            .filter(|(k, _)| *k as u64 % u64::from(self.count) == u64::from(self.index - 1))
            .map(|(_, id)| id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_fixed_and_scheduler_indices() {
        let none = |_: &str| None;
        assert_eq!(
            Shard::parse_with("2/8", none).unwrap(),
            Shard { index: 2, count: 8 }
        );
        let k8s = |k: &str| (k == "JOB_COMPLETION_INDEX").then(|| "0".to_string());
        assert_eq!(Shard::parse_with("auto/4", k8s).unwrap().index, 1);
        let slurm = |k: &str| (k == "SLURM_ARRAY_TASK_ID").then(|| "3".to_string());
        assert_eq!(Shard::parse_with("auto/4", slurm).unwrap().index, 4);
        for bad in ["0/4", "5/4", "1/0", "x/2", "3", "auto/4"] {
            let e = Shard::parse_with(bad, none).unwrap_err().to_string();
            assert!(e.starts_with(&format!("`--shard {bad}`")), "{e}");
        }
        let e = Shard::parse_with("auto/3", slurm).unwrap_err().to_string();
        assert!(e.contains("between 1 and 3"), "{e}");
    }

    #[test]
    fn shards_are_disjoint_and_cover_the_plan() {
        let ids: Vec<String> = (0..23).map(|i| format!("p{i}:0")).collect();
        let mut all: Vec<&str> = Vec::new();
        for index in 1..=5 {
            let s = Shard { index, count: 5 };
            let got = s.select(ids.iter().map(String::as_str));
            assert!((4..=5).contains(&got.len()), "{got:?}");
            all.extend(got);
        }
        all.sort_unstable();
        let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
        want.sort_unstable();
        assert_eq!(all, want);
        // The order the ids come in does not matter.
        let s = Shard { index: 2, count: 5 };
        let rev = s.select(ids.iter().rev().map(String::as_str));
        assert_eq!(rev, s.select(ids.iter().map(String::as_str)));
    }
}
