//! Property tests of the data loaders (profiles, rubric, taxonomy, vocabulary, reward config):
//! arbitrary bytes and mutations of the shipped files never panic, and every rejection is a
//! typed [`DataError`] whose message names the file. `PROPTEST_CASES=N` runs longer.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use therapygym_testkit::fuzz;

use crate::error::DataError;
use crate::{
    ItemScore, Judgment, LabelFlag, RewardConfig, Rubric, Taxonomy, Vocabulary, builtin,
    profile::parse_profiles,
};

const CASES: u32 = 96;

/// A rejection must be a message that names the file (with line or record where it has one).
fn named(e: &DataError, file: &str) -> Result<(), TestCaseError> {
    let msg = e.to_string();
    prop_assert!(msg.contains(file), "the error does not name {file}: {msg}");
    Ok(())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The example profiles as a JSON array (Patient-Ψ's form).
fn profiles_array() -> String {
    let items: Vec<&str> = builtin::EXAMPLE_PROFILES
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    format!("[\n{}\n]", items.join(",\n"))
}

fn check_profiles(input: &str) -> Result<(), TestCaseError> {
    let vocab = builtin::vocabulary().unwrap();
    let path = Path::new("fuzz/profiles.jsonl");
    match parse_profiles(input, path, &vocab) {
        Ok(set) => {
            for p in &set.profiles {
                // What a run does with each profile: hash it, serialise it.
                let _ = p.hash();
                serde_json::to_string(p).unwrap();
            }
            Ok(())
        }
        Err(e) => named(&e, "fuzz/profiles.jsonl"),
    }
}

/// A loaded rubric and taxonomy are usable: a full judgment on them gives a reward.
fn exercise(rubric: &Rubric, taxonomy: &Taxonomy, reward: &RewardConfig) {
    let judgment = Judgment {
        ctrs: rubric
            .items
            .iter()
            .map(|i| {
                let score = ItemScore {
                    score: rubric.max_score,
                    rationale: String::new(),
                };
                (i.id.clone(), score)
            })
            .collect(),
        safety: taxonomy
            .enabled()
            .map(|l| {
                let flag = LabelFlag {
                    flag: true,
                    evidence: String::new(),
                };
                (l.id.clone(), flag)
            })
            .collect::<BTreeMap<_, _>>(),
        codes: Vec::new(),
    };
    let _ = reward.check(rubric, taxonomy);
    let _ = reward.item_weights(rubric);
    let _ = reward.compute(&judgment, rubric, "homework agenda", true);
    let _ = rubric.hash();
    let _ = taxonomy.version_id();
}

proptest! {
    #![proptest_config(fuzz::config(CASES))]

    #[test]
    fn profiles_from_arbitrary_bytes(bytes in fuzz::bytes(2048)) {
        check_profiles(&text(&bytes))?;
    }

    #[test]
    fn profiles_from_mutated_jsonl(input in fuzz::mutated_jsonl(builtin::EXAMPLE_PROFILES)) {
        check_profiles(&input)?;
    }

    #[test]
    fn profiles_from_mutated_json_arrays(input in fuzz::mutated_text(&profiles_array())) {
        check_profiles(&input)?;
    }

    #[test]
    fn rubrics(input in prop_oneof![
        fuzz::bytes(1024).prop_map(|b| text(&b)),
        fuzz::mutated_text(builtin::RUBRIC_CTRS),
    ]) {
        match Rubric::parse(&input, Path::new("fuzz/rubric.toml")) {
            Ok(r) => exercise(&r, &builtin::taxonomy().unwrap(), &builtin::reward_config().unwrap()),
            Err(e) => named(&e, "fuzz/rubric.toml")?,
        }
    }

    #[test]
    fn taxonomies(input in prop_oneof![
        fuzz::bytes(1024).prop_map(|b| text(&b)),
        fuzz::mutated_text(builtin::TAXONOMY),
    ]) {
        match Taxonomy::parse(&input, Path::new("fuzz/taxonomy.toml")) {
            Ok(t) => exercise(&builtin::rubric().unwrap(), &t, &builtin::reward_config().unwrap()),
            Err(e) => named(&e, "fuzz/taxonomy.toml")?,
        }
    }

    #[test]
    fn reward_configs(input in prop_oneof![
        fuzz::bytes(1024).prop_map(|b| text(&b)),
        fuzz::mutated_text(builtin::REWARD_DEFAULT),
        fuzz::mutated_text(include_str!("../../../data/rewards/cbt-language.toml")),
    ]) {
        match RewardConfig::parse(&input, Path::new("fuzz/reward.toml")) {
            Ok(c) => exercise(&builtin::rubric().unwrap(), &builtin::taxonomy().unwrap(), &c),
            Err(e) => named(&e, "fuzz/reward.toml")?,
        }
    }

    #[test]
    fn vocabularies(input in prop_oneof![
        fuzz::bytes(1024).prop_map(|b| text(&b)),
        fuzz::mutated_text(builtin::VOCAB),
    ]) {
        match Vocabulary::parse(&input, Path::new("fuzz/vocab.toml")) {
            Ok(v) => {
                // The shipped profiles against a mutated vocabulary: accepted or a typed error.
                let path = Path::new("fuzz/examples.jsonl");
                if let Err(e) = parse_profiles(builtin::EXAMPLE_PROFILES, path, &v) {
                    named(&e, "fuzz/examples.jsonl")?;
                }
            }
            Err(e) => named(&e, "fuzz/vocab.toml")?,
        }
    }

    /// Bytes that are not UTF-8 reach the loaders through files: a typed I/O error.
    #[test]
    fn profile_files_of_arbitrary_bytes(bytes in fuzz::bytes(512)) {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("p.jsonl");
        std::fs::write(&path, &bytes).unwrap();
        if let Err(e) = crate::load_profiles(&path, &builtin::vocabulary().unwrap()) {
            named(&e, "p.jsonl")?;
        }
    }
}
