//! The diversity report (`diversity.json`): distinct values per field, coverage of the belief,
//! emotion and style vocabularies, the distribution of pairwise similarity, and what was removed
//! as duplicates or rejected.
//!
//! Pairwise similarity is the Jaccard index of word-3-shingle sets over the narrative fields
//! (the measure near-duplicate removal uses). Up to 50,000 pairs it covers every pair; above,
//! 50,000 pairs drawn with the run seed.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Deserialize, Serialize};
use therapygym_core::{Profile, Vocabulary};

use crate::dedup::Prepared;
use crate::rng::Rng;
use crate::text::{jaccard, normalise};

pub const MAX_PAIRS: usize = 50_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    pub used: usize,
    pub total: usize,
    pub share: f64,
    pub missing: Vec<String>,
    /// Profiles using each id.
    pub counts: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bin {
    pub from: f64,
    pub to: f64,
    pub pairs: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Similarity {
    pub measure: String,
    pub pairs: usize,
    pub sampled: bool,
    pub mean: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    pub histogram: Vec<Bin>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Removed {
    pub method: String,
    pub near_threshold: f64,
    /// `exact_duplicate`, `near_duplicate`, `seed_copy`.
    pub duplicates: BTreeMap<String, u64>,
    /// Invalid candidates by reason.
    pub rejections: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiversityReport {
    pub profiles: usize,
    /// Distinct (normalised) values per field; list fields count distinct combinations.
    pub distinct_values: BTreeMap<String, usize>,
    pub coverage: BTreeMap<String, Coverage>,
    pub similarity: Similarity,
    pub removed: Removed,
}

fn coverage<'a>(
    ids: impl Iterator<Item = &'a str>,
    used: impl Iterator<Item = &'a str>,
) -> Coverage {
    let all: Vec<&str> = ids.collect();
    let mut counts: BTreeMap<String, usize> = all.iter().map(|i| (i.to_string(), 0)).collect();
    for u in used {
        *counts.entry(u.to_string()).or_insert(0) += 1;
    }
    let missing: Vec<String> = all
        .iter()
        .filter(|i| counts.get(**i).copied().unwrap_or(0) == 0)
        .map(|i| i.to_string())
        .collect();
    let used = all.len() - missing.len();
    Coverage {
        used,
        total: all.len(),
        share: if all.is_empty() {
            0.0
        } else {
            used as f64 / all.len() as f64
        },
        missing,
        counts,
    }
}

fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted.get(i).copied()
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

pub fn similarity(profiles: &[Profile], seed: u64) -> Similarity {
    let prepared: Vec<Vec<u64>> = profiles.iter().map(|p| Prepared::of(p).shingles).collect();
    let n = prepared.len();
    let all_pairs = n.saturating_mul(n.saturating_sub(1)) / 2;
    let mut sims = Vec::new();
    let sampled = all_pairs > MAX_PAIRS;
    if sampled {
        let mut rng = Rng::for_key(seed, &["similarity-pairs"]);
        let mut seen = HashSet::new();
        while sims.len() < MAX_PAIRS {
            let (a, b) = (rng.below(n), rng.below(n));
            if a == b || !seen.insert((a.min(b), a.max(b))) {
                continue;
            }
            sims.push(jaccard(&prepared[a], &prepared[b]));
        }
    } else {
        for a in 0..n {
            for b in a + 1..n {
                sims.push(jaccard(&prepared[a], &prepared[b]));
            }
        }
    }
    let mut histogram: Vec<Bin> = (0..10)
        .map(|i| Bin {
            from: i as f64 / 10.0,
            to: (i + 1) as f64 / 10.0,
            pairs: 0,
        })
        .collect();
    for s in &sims {
        let i = ((s * 10.0).floor() as usize).min(9);
        histogram[i].pairs += 1;
    }
    sims.sort_by(|a, b| a.total_cmp(b));
    let mean = if sims.is_empty() {
        None
    } else {
        Some(round4(sims.iter().sum::<f64>() / sims.len() as f64))
    };
    Similarity {
        measure: "Jaccard index of word-3-shingle sets of the narrative fields".into(),
        pairs: sims.len(),
        sampled,
        mean,
        p50: quantile(&sims, 0.5).map(round4),
        p90: quantile(&sims, 0.9).map(round4),
        p99: quantile(&sims, 0.99).map(round4),
        max: sims.last().copied().map(round4),
        histogram,
    }
}

pub fn report(
    profiles: &[Profile],
    vocab: &Vocabulary,
    seed: u64,
    removed: Removed,
) -> DiversityReport {
    let mut distinct: BTreeMap<String, usize> = BTreeMap::new();
    type Field = fn(&Profile) -> &str;
    let text_fields: [(&str, Field); 7] = [
        ("name", |p| &p.name),
        ("history", |p| &p.history),
        ("intermediate_belief", |p| &p.intermediate_belief),
        ("coping_strategies", |p| &p.coping_strategies),
        ("situation", |p| &p.situation),
        ("auto_thought", |p| &p.auto_thought),
        ("behavior", |p| &p.behavior),
    ];
    for (name, get) in text_fields {
        let set: HashSet<String> = profiles.iter().map(|p| normalise(get(p))).collect();
        distinct.insert(name.into(), set.len());
    }
    let combos = |get: fn(&Profile) -> Vec<&str>| {
        profiles
            .iter()
            .map(|p| {
                let mut v = get(p);
                v.sort_unstable();
                v.join("+")
            })
            .collect::<BTreeSet<String>>()
            .len()
    };
    distinct.insert(
        "core_beliefs".into(),
        combos(|p| {
            p.helpless_belief
                .iter()
                .chain(&p.unlovable_belief)
                .chain(&p.worthless_belief)
                .map(String::as_str)
                .collect()
        }),
    );
    distinct.insert(
        "emotion".into(),
        combos(|p| p.emotion.iter().map(String::as_str).collect()),
    );
    distinct.insert("style".into(), combos(|p| vec![p.style.as_str()]));

    let mut cov = BTreeMap::new();
    cov.insert(
        "helpless_belief".into(),
        coverage(
            vocab.helpless.iter().map(|t| t.id.as_str()),
            profiles
                .iter()
                .flat_map(|p| p.helpless_belief.iter().map(String::as_str)),
        ),
    );
    cov.insert(
        "unlovable_belief".into(),
        coverage(
            vocab.unlovable.iter().map(|t| t.id.as_str()),
            profiles
                .iter()
                .flat_map(|p| p.unlovable_belief.iter().map(String::as_str)),
        ),
    );
    cov.insert(
        "worthless_belief".into(),
        coverage(
            vocab.worthless.iter().map(|t| t.id.as_str()),
            profiles
                .iter()
                .flat_map(|p| p.worthless_belief.iter().map(String::as_str)),
        ),
    );
    cov.insert(
        "emotion".into(),
        coverage(
            vocab.emotions.iter().map(|t| t.id.as_str()),
            profiles
                .iter()
                .flat_map(|p| p.emotion.iter().map(String::as_str)),
        ),
    );
    cov.insert(
        "style".into(),
        coverage(
            vocab.styles.iter().map(|s| s.id.as_str()),
            profiles.iter().map(|p| p.style.as_str()),
        ),
    );
    DiversityReport {
        profiles: profiles.len(),
        distinct_values: distinct,
        coverage: cov,
        similarity: similarity(profiles, seed),
        removed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_coverage_and_similarity() {
        let set = therapygym_core::builtin::example_profiles().unwrap();
        let vocab = therapygym_core::builtin::vocabulary().unwrap();
        let removed = Removed {
            method: "m".into(),
            near_threshold: 0.7,
            duplicates: BTreeMap::new(),
            rejections: BTreeMap::new(),
        };
        let r = report(&set.profiles, &vocab, 1, removed);
        assert_eq!(r.profiles, set.profiles.len());
        assert_eq!(r.distinct_values["history"], set.profiles.len());
        let styles = &r.coverage["style"];
        assert_eq!(styles.total, 6);
        assert_eq!(styles.counts.values().sum::<usize>(), set.profiles.len());
        let n = set.profiles.len();
        assert_eq!(r.similarity.pairs, n * (n - 1) / 2);
        assert!(!r.similarity.sampled);
        assert!(
            r.similarity.max.unwrap() < 0.7,
            "hand-written profiles are not near duplicates"
        );
        assert_eq!(
            r.similarity
                .histogram
                .iter()
                .map(|b| b.pairs)
                .sum::<usize>(),
            r.similarity.pairs
        );
        // Many profiles: sampled pairs.
        let many: Vec<Profile> = (0..400).map(|i| set.profiles[i % n].clone()).collect();
        let s = similarity(&many, 3);
        assert!(s.sampled);
        assert_eq!(s.pairs, MAX_PAIRS);
    }
}
