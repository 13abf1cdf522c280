//! Exact and near-duplicate detection that scales to the paper's 13,093 profiles.
//!
//! - **Exact**: the normalised text (`text::normalise`) of a profile's narrative fields
//!   (history, intermediate belief, coping strategies, situation, automatic thought,
//!   behaviour; the name is left out, so a renamed copy is still a copy) equals a kept one's.
//! - **Near**: the Jaccard similarity of the word-3-shingle sets is at least the threshold
//!   (default 0.7). Candidates come from MinHash LSH (64 hashes, 16 bands × 4 rows: a pair at
//!   0.7 becomes a candidate with probability 1 − (1 − 0.7⁴)¹⁶ ≈ 0.99, at 0.8 ≈ 0.9999); every
//!   candidate pair is then checked with the exact Jaccard index, so there are no false
//!   positives. Each check costs O(bands + candidates), not O(kept).
//! - **Seed copies**: seed profiles are indexed first; a candidate that duplicates a seed
//!   (exactly or nearly) is removed as `seed_copy` — small models like to copy the example.

use std::collections::HashMap;

use serde::Serialize;
use therapygym_core::Profile;

use crate::text::{BANDS, band_keys, jaccard, minhash, normalise, shingles};

/// The narrative text of a profile that duplicates are judged on.
pub fn profile_text(p: &Profile) -> String {
    [
        p.history.as_str(),
        &p.intermediate_belief,
        &p.coping_strategies,
        &p.situation,
        &p.auto_thought,
        &p.behavior,
    ]
    .join(" \n ")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DupKind {
    Exact,
    Near,
    SeedCopy,
}

impl DupKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DupKind::Exact => "exact_duplicate",
            DupKind::Near => "near_duplicate",
            DupKind::SeedCopy => "seed_copy",
        }
    }
}

/// A duplicate found: of which entry, and how similar.
#[derive(Debug, Clone, PartialEq)]
pub struct Duplicate {
    pub kind: DupKind,
    /// Index of the entry it duplicates (insertion order, seeds included).
    pub of: usize,
    pub similarity: f64,
}

/// Prepared text of one profile (normalised text and its shingles).
#[derive(Debug, Clone)]
pub struct Prepared {
    pub normalised: String,
    pub shingles: Vec<u64>,
}

impl Prepared {
    pub fn of(p: &Profile) -> Self {
        let normalised = normalise(&profile_text(p));
        let shingles = shingles(&normalised);
        Self {
            normalised,
            shingles,
        }
    }
}

#[derive(Debug)]
pub struct DedupIndex {
    threshold: f64,
    exact: HashMap<String, usize>,
    entries: Vec<Vec<u64>>,
    seed: Vec<bool>,
    buckets: HashMap<(u8, u64), Vec<u32>>,
}

impl DedupIndex {
    pub fn new(threshold: f64) -> Self {
        Self {
            threshold,
            exact: HashMap::new(),
            entries: Vec::new(),
            seed: Vec::new(),
            buckets: HashMap::new(),
        }
    }

    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The shingles of entry `i` (for the similarity report).
    pub fn shingles(&self, i: usize) -> &[u64] {
        self.entries.get(i).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether `p` duplicates an entry, without inserting it.
    pub fn check(&self, p: &Prepared) -> Option<Duplicate> {
        let kind_for = |i: usize, near: DupKind| {
            if self.seed.get(i).copied().unwrap_or(false) {
                DupKind::SeedCopy
            } else {
                near
            }
        };
        if let Some(&i) = self.exact.get(&p.normalised) {
            return Some(Duplicate {
                kind: kind_for(i, DupKind::Exact),
                of: i,
                similarity: 1.0,
            });
        }
        let keys = band_keys(&minhash(&p.shingles));
        let mut best: Option<(usize, f64)> = None;
        let mut seen = std::collections::HashSet::new();
        for (b, key) in keys.iter().enumerate() {
            let Some(list) = self.buckets.get(&(b as u8, *key)) else {
                continue;
            };
            for &i in list {
                let i = i as usize;
                if !seen.insert(i) {
                    continue;
                }
                let s = jaccard(&p.shingles, &self.entries[i]);
                if s >= self.threshold && best.is_none_or(|(_, bs)| s > bs) {
                    best = Some((i, s));
                }
            }
        }
        best.map(|(i, s)| Duplicate {
            kind: kind_for(i, DupKind::Near),
            of: i,
            similarity: s,
        })
    }

    /// Adds an entry (call after `check` said it is new, or for seeds). Returns its index.
    pub fn insert(&mut self, p: Prepared, is_seed: bool) -> usize {
        let i = self.entries.len();
        let keys = band_keys(&minhash(&p.shingles));
        for (b, key) in keys.iter().enumerate().take(BANDS) {
            self.buckets
                .entry((b as u8, *key))
                .or_default()
                .push(u32::try_from(i).unwrap_or(u32::MAX));
        }
        self.exact.entry(p.normalised).or_insert(i);
        self.entries.push(p.shingles);
        self.seed.push(is_seed);
        i
    }

    /// Checks and, when new, inserts. `Err` names the duplicate.
    pub fn admit(&mut self, p: Prepared) -> Result<usize, Duplicate> {
        match self.check(&p) {
            Some(d) => Err(d),
            None => Ok(self.insert(p, false)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(history: &str) -> Profile {
        static BASE: std::sync::OnceLock<Profile> = std::sync::OnceLock::new();
        let mut p = BASE
            .get_or_init(|| {
                therapygym_core::builtin::example_profiles()
                    .unwrap()
                    .profiles[0]
                    .clone()
            })
            .clone();
        p.history = history.into();
        for f in [
            &mut p.intermediate_belief,
            &mut p.coping_strategies,
            &mut p.situation,
            &mut p.auto_thought,
            &mut p.behavior,
        ] {
            f.clear();
        }
        p
    }

    const H: &str = "Maya grew up on a sheep farm in the hills and moved to the city at nineteen to study nursing, where she worked night shifts for six years before a back injury forced her to stop";

    #[test]
    fn exact_near_and_seed_copies() {
        let mut idx = DedupIndex::new(0.7);
        let seed =
            profile("A completely different history about a retired teacher in a seaside town.");
        idx.insert(Prepared::of(&seed), true);
        let a = profile(H);
        assert_eq!(idx.admit(Prepared::of(&a)), Ok(1));
        // Same text, other case and punctuation, other name: an exact duplicate.
        let mut b = profile(&H.to_uppercase().replace(' ', "  "));
        b.name = "Other".into();
        let d = idx.admit(Prepared::of(&b)).unwrap_err();
        assert_eq!((d.kind, d.of, d.similarity), (DupKind::Exact, 1, 1.0));
        // One word changed near the end: a near duplicate.
        let c = profile(&H.replace("forced", "made"));
        let d = idx.admit(Prepared::of(&c)).unwrap_err();
        assert_eq!(d.kind, DupKind::Near);
        assert!(
            d.similarity >= 0.7 && d.similarity < 1.0,
            "{}",
            d.similarity
        );
        // A copy of the seed.
        let d = idx.admit(Prepared::of(&seed)).unwrap_err();
        assert_eq!(d.kind, DupKind::SeedCopy);
        // Different enough: kept.
        let e = profile(
            "Tom is a bus driver whose wife left last winter; he now lives alone with two dogs and rarely calls his brother.",
        );
        assert!(idx.admit(Prepared::of(&e)).is_ok());
        assert_eq!(idx.len(), 3);
    }

    #[test]
    fn near_duplicates_are_found_among_many() {
        // 3,000 distinct texts, then perturbed copies of 100 of them: LSH must find nearly all.
        let mut idx = DedupIndex::new(0.7);
        let text = |i: usize| {
            (0..60)
                .map(|k| format!("w{}", (i * 7919 + k * 104_729) % 100_003))
                .collect::<Vec<_>>()
                .join(" ")
        };
        for i in 0..3000 {
            assert!(idx.admit(Prepared::of(&profile(&text(i)))).is_ok(), "{i}");
        }
        let mut found = 0;
        for i in (0..3000).step_by(30) {
            let t = text(i).replacen("w", "v", 3);
            if idx.check(&Prepared::of(&profile(&t))).is_some() {
                found += 1;
            }
        }
        assert!(found >= 97, "found {found} of 100");
    }
}
