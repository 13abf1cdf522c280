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
pub const RUBRIC_MI: &str = include_str!("../../../data/rubrics/mi.toml");
/// Rubrics by short name (`--rubric mi`).
pub const RUBRICS: &[(&str, &str)] = &[("ctrs", RUBRIC_CTRS), ("mi", RUBRIC_MI)];
pub const TAXONOMY: &str = include_str!("../../../data/safety/tg-safety.toml");
pub const VOCAB: &str = include_str!("../../../data/profiles/vocab.toml");
pub const EXAMPLE_PROFILES: &str = include_str!("../../../data/profiles/examples.jsonl");
pub const HOLDOUT_PROFILES: &str = include_str!("../../../data/profiles/holdout.jsonl");
pub const REWARD_DEFAULT: &str = include_str!("../../../data/rewards/default.toml");

pub const PATIENT_PROMPT: &str = include_str!("../../../data/prompts/patient.j2");
pub const JUDGE_SYSTEM_PROMPT: &str = include_str!("../../../data/prompts/judge_system.j2");
pub const JUDGE_USER_PROMPT: &str = include_str!("../../../data/prompts/judge_user.j2");
/// Judge prompt pairs (system, user) by name; a rubric picks one with `judge_prompts`.
pub const JUDGE_PROMPTS: &[(&str, &str, &str)] = &[
    ("ctrs", JUDGE_SYSTEM_PROMPT, JUDGE_USER_PROMPT),
    (
        "mi",
        include_str!("../../../data/prompts/judge_system_mi.j2"),
        include_str!("../../../data/prompts/judge_user_mi.j2"),
    ),
];
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

/// The text of a rubric given by short name (`ctrs`, `mi`) or file path, and the path to name
/// in messages. A file of that name wins over a short name.
pub fn rubric_source(name_or_path: &Path) -> Result<(String, std::path::PathBuf), DataError> {
    if !name_or_path.exists()
        && let Some(name) = name_or_path.to_str()
        && let Some((n, text)) = RUBRICS.iter().find(|(n, _)| *n == name)
    {
        return Ok((
            text.to_string(),
            format!("<builtin>/data/rubrics/{n}.toml").into(),
        ));
    }
    match crate::error::read_to_string(name_or_path) {
        Ok(text) => Ok((text, name_or_path.to_path_buf())),
        Err(e) if !name_or_path.exists() => {
            let names: Vec<&str> = RUBRICS.iter().map(|(n, _)| *n).collect();
            Err(DataError::invalid(
                crate::error::Location {
                    file: name_or_path.into(),
                    line: None,
                    id: None,
                },
                format!(
                    "no such rubric file; use a file path or a built-in name ({}) ({e})",
                    names.join(", ")
                ),
            ))
        }
        Err(e) => Err(e),
    }
}

/// A rubric by short name (`ctrs`, `mi`) or file path.
pub fn load_rubric(name_or_path: &Path) -> Result<Rubric, DataError> {
    let (text, path) = rubric_source(name_or_path)?;
    Rubric::parse(&text, &path)
}

/// The judge prompt pair a rubric asks for (`judge_prompts`, the CTRS pair by default).
pub fn judge_prompts_for(rubric: &Rubric) -> Result<(Template, Template), DataError> {
    let name = rubric.judge_prompts.as_deref().unwrap_or("ctrs");
    if name == "ctrs" {
        return Ok(judge_prompts());
    }
    match JUDGE_PROMPTS.iter().find(|(n, _, _)| *n == name) {
        Some((n, s, u)) => Ok((
            Template::new(format!("judge_system_{n}"), *s),
            Template::new(format!("judge_user_{n}"), *u),
        )),
        None => {
            let names: Vec<&str> = JUDGE_PROMPTS.iter().map(|(n, _, _)| *n).collect();
            Err(DataError::field(
                crate::error::Location {
                    file: format!("rubric {}", rubric.version_id()).into(),
                    line: None,
                    id: None,
                },
                "judge_prompts",
                format!(
                    "no built-in judge prompts `{name}`; use one of {}",
                    names.join(", ")
                ),
            ))
        }
    }
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
        let mi = load_rubric(Path::new("mi")).unwrap();
        assert_eq!(mi.version_id(), "mi-miti42/1");
        let (s, u) = judge_prompts_for(&mi).unwrap();
        s.check().unwrap();
        u.check().unwrap();
        assert_eq!(load_rubric(Path::new("ctrs")).unwrap(), rubric().unwrap());
        let e = load_rubric(Path::new("nope")).unwrap_err().to_string();
        assert!(e.contains("built-in name (ctrs, mi)"), "{e}");
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
