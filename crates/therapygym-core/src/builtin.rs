//! The data files shipped with TherapyGym (`data/`), compiled in so an installed binary needs
//! no checkout. Each can be replaced by a file of the same format.

use std::path::Path;

use crate::error::DataError;
use crate::profile::{ProfileSet, parse_profiles};
use crate::prompts::Template;
use crate::reward::RewardConfig;
use crate::rubric::Rubric;
use crate::taxonomy::Taxonomy;
use crate::vocab::Vocabulary;

pub const RUBRIC_CTRS: &str = include_str!("../../../data/rubrics/ctrs.toml");
pub const TAXONOMY: &str = include_str!("../../../data/safety/tg-safety.toml");
pub const VOCAB: &str = include_str!("../../../data/profiles/vocab.toml");
pub const EXAMPLE_PROFILES: &str = include_str!("../../../data/profiles/examples.jsonl");
pub const HOLDOUT_PROFILES: &str = include_str!("../../../data/profiles/holdout.jsonl");
pub const REWARD_DEFAULT: &str = include_str!("../../../data/rewards/default.toml");

pub const PATIENT_PROMPT: &str = include_str!("../../../data/prompts/patient.j2");
pub const JUDGE_SYSTEM_PROMPT: &str = include_str!("../../../data/prompts/judge_system.j2");
pub const JUDGE_USER_PROMPT: &str = include_str!("../../../data/prompts/judge_user.j2");
pub const THERAPIST_PROMPTS: &[(&str, &str)] = &[
    (
        "baseline",
        include_str!("../../../data/prompts/therapist/baseline.j2"),
    ),
    (
        "cbt",
        include_str!("../../../data/prompts/therapist/cbt.j2"),
    ),
];

pub fn rubric() -> Result<Rubric, DataError> {
    Rubric::parse(RUBRIC_CTRS, Path::new("<builtin>/data/rubrics/ctrs.toml"))
}

pub fn taxonomy() -> Result<Taxonomy, DataError> {
    Taxonomy::parse(TAXONOMY, Path::new("<builtin>/data/safety/tg-safety.toml"))
}

pub fn vocabulary() -> Result<Vocabulary, DataError> {
    Vocabulary::parse(VOCAB, Path::new("<builtin>/data/profiles/vocab.toml"))
}

pub fn example_profiles() -> Result<ProfileSet, DataError> {
    parse_profiles(
        EXAMPLE_PROFILES,
        Path::new("<builtin>/data/profiles/examples.jsonl"),
        &vocabulary()?,
    )
}

pub fn holdout_profiles() -> Result<ProfileSet, DataError> {
    parse_profiles(
        HOLDOUT_PROFILES,
        Path::new("<builtin>/data/profiles/holdout.jsonl"),
        &vocabulary()?,
    )
}

pub fn reward_config() -> Result<RewardConfig, DataError> {
    RewardConfig::parse(
        REWARD_DEFAULT,
        Path::new("<builtin>/data/rewards/default.toml"),
    )
}

pub fn patient_prompt() -> Template {
    Template::new("patient", PATIENT_PROMPT)
}

pub fn judge_prompts() -> (Template, Template) {
    (
        Template::new("judge_system", JUDGE_SYSTEM_PROMPT),
        Template::new("judge_user", JUDGE_USER_PROMPT),
    )
}

/// A therapist system prompt by built-in name (`baseline`, `cbt`) or file path.
pub fn therapist_prompt(name_or_path: &str) -> Result<Template, DataError> {
    if let Some((name, src)) = THERAPIST_PROMPTS.iter().find(|(n, _)| *n == name_or_path) {
        return Ok(Template::new(*name, *src));
    }
    let path = Path::new(name_or_path);
    if path.is_file() {
        return Template::from_file(path);
    }
    let names: Vec<&str> = THERAPIST_PROMPTS.iter().map(|(n, _)| *n).collect();
    Err(DataError::invalid(
        crate::error::Location {
            file: path.into(),
            line: None,
            id: None,
        },
        format!(
            "no such therapist prompt; use a built-in name ({}) or a template file path",
            names.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_parses() {
        rubric().unwrap();
        taxonomy().unwrap();
        vocabulary().unwrap();
        example_profiles().unwrap();
        holdout_profiles().unwrap();
        reward_config()
            .unwrap()
            .check(&rubric().unwrap(), &taxonomy().unwrap())
            .unwrap();
        patient_prompt().check().unwrap();
        let (s, u) = judge_prompts();
        s.check().unwrap();
        u.check().unwrap();
        for (n, _) in THERAPIST_PROMPTS {
            therapist_prompt(n).unwrap().check().unwrap();
        }
        assert!(
            therapist_prompt("nope")
                .unwrap_err()
                .to_string()
                .contains("baseline, cbt")
        );
    }
}
