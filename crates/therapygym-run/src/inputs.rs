//! A run's inputs live inside its directory. When a run is created, every file the user named
//! (profiles, rubric, taxonomy, vocabulary, prompts, reward config, calibration map) is copied
//! into `inputs/` and the run's settings name the copies by relative path; readers resolve those
//! paths against the run directory. A run directory copied or moved elsewhere therefore resumes,
//! re-judges, exports and reports with nothing outside it, and no manifest holds a path of the
//! machine it was made on. Shipped defaults stay `None`: they are part of the binary, and their
//! hashes are in the manifest (a changed default shows up as config drift on resume).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use therapygym_core::{DataError, builtin};

use crate::assets::AssetSources;

/// The folder of a run directory that holds its input files.
pub const INPUTS_DIR: &str = "inputs";

/// Input files to write into a new run: relative path (`inputs/…`) → exact content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputFiles(BTreeMap<String, Vec<u8>>);

impl InputFiles {
    /// Adds (or replaces) one file; returns its relative path.
    pub fn put(&mut self, name: &str, content: Vec<u8>) -> PathBuf {
        let rel = format!("{INPUTS_DIR}/{name}");
        self.0.insert(rel.clone(), content);
        PathBuf::from(rel)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The input files an existing run holds (`DIR/inputs/*`; none when it has no folder), so
    /// a run made from it (`therapygym merge`) keeps exactly the same bytes.
    pub fn read_run(dir: &Path) -> Result<Self, DataError> {
        let mut files = Self::default();
        let root = dir.join(INPUTS_DIR);
        let entries = match std::fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
            Err(e) => return Err(DataError::io(&root, e)),
        };
        for e in entries {
            let path = e.map_err(|e| DataError::io(&root, e))?.path();
            if let (true, Some(name)) = (path.is_file(), path.file_name()) {
                let bytes = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
                files.put(&name.to_string_lossy(), bytes);
            }
        }
        Ok(files)
    }

    /// Copies a user's file in under `stem` (keeping its extension, else `default_ext`).
    fn copy(&mut self, path: &Path, stem: &str, default_ext: &str) -> Result<PathBuf, DataError> {
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .filter(|e| e.chars().all(|c| c.is_ascii_alphanumeric()))
            .unwrap_or(default_ext);
        Ok(self.put(&format!("{stem}.{ext}"), bytes))
    }
}

/// A therapist prompt given by name (`cbt`, `baseline`) rather than as a file.
pub(crate) fn builtin_prompt(name: &str) -> bool {
    builtin::THERAPIST_PROMPTS.iter().any(|(n, _)| *n == name)
}

impl AssetSources {
    /// The settings a new run stores: every user file replaced by its copy under `inputs/`,
    /// with the copies' content.
    pub fn bundle(&self) -> Result<(AssetSources, InputFiles), DataError> {
        let mut files = InputFiles::default();
        let mut out = self.clone();
        let fields: [(&mut Option<PathBuf>, &str, &str); 9] = [
            (&mut out.profiles, "profiles", "jsonl"),
            (&mut out.rubric, "rubric", "toml"),
            (&mut out.taxonomy, "taxonomy", "toml"),
            (&mut out.vocab, "vocabulary", "toml"),
            (&mut out.patient_prompt, "patient_prompt", "j2"),
            (&mut out.judge_system_prompt, "judge_system_prompt", "j2"),
            (&mut out.judge_user_prompt, "judge_user_prompt", "j2"),
            (&mut out.reward_config, "reward", "toml"),
            (&mut out.calibration, "calibration", "toml"),
        ];
        for (field, stem, ext) in fields {
            if let Some(p) = field.take() {
                *field = Some(if stem == "rubric" && !p.exists() {
                    // A built-in rubric by short name (`--rubric mi`): its text is copied in.
                    let (text, _) = builtin::rubric_source(&p)?;
                    files.put("rubric.toml", text.into_bytes())
                } else {
                    files.copy(&p, stem, ext)?
                });
            }
        }
        if !builtin_prompt(&self.therapist_prompt) {
            let p = files.copy(Path::new(&self.therapist_prompt), "therapist_prompt", "j2")?;
            out.therapist_prompt = p.display().to_string();
        }
        Ok((out, files))
    }

    /// These settings with relative paths resolved against `dir` (a run directory). Absolute
    /// paths (runs made before inputs were copied in) are kept as they are.
    pub fn resolved_in(&self, dir: &Path) -> AssetSources {
        let mut out = self.clone();
        for field in [
            &mut out.profiles,
            &mut out.rubric,
            &mut out.taxonomy,
            &mut out.vocab,
            &mut out.patient_prompt,
            &mut out.judge_system_prompt,
            &mut out.judge_user_prompt,
            &mut out.reward_config,
            &mut out.calibration,
        ] {
            if let Some(p) = field.take() {
                *field = Some(dir.join(p));
            }
        }
        if !builtin_prompt(&self.therapist_prompt) {
            out.therapist_prompt = dir.join(&self.therapist_prompt).display().to_string();
        }
        out
    }

    /// Every file these settings name that is an absolute path (for checks and messages).
    pub fn absolute_paths(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = [
            &self.profiles,
            &self.rubric,
            &self.taxonomy,
            &self.vocab,
            &self.patient_prompt,
            &self.judge_system_prompt,
            &self.judge_user_prompt,
            &self.reward_config,
            &self.calibration,
        ]
        .into_iter()
        .flatten()
        .filter(|p| p.is_absolute())
        .cloned()
        .collect();
        if Path::new(&self.therapist_prompt).is_absolute() {
            v.push(PathBuf::from(&self.therapist_prompt));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bundling_copies_user_files_and_resolving_finds_the_copies() {
        let d = tempfile::tempdir().unwrap();
        let rubric = d.path().join("my-rubric.toml");
        std::fs::write(&rubric, "x").unwrap();
        let prompt = d.path().join("t.j2");
        std::fs::write(&prompt, "hello").unwrap();
        let mut src = AssetSources::new(prompt.display().to_string());
        src.rubric = Some(rubric);
        let (rel, files) = src.bundle().unwrap();
        assert_eq!(rel.rubric.as_deref(), Some(Path::new("inputs/rubric.toml")));
        assert_eq!(rel.therapist_prompt, "inputs/therapist_prompt.j2");
        assert!(rel.absolute_paths().is_empty());
        let got: Vec<(&str, &[u8])> = files.iter().collect();
        assert_eq!(
            got,
            [
                ("inputs/rubric.toml", b"x".as_slice()),
                ("inputs/therapist_prompt.j2", b"hello".as_slice())
            ]
        );
        let back = rel.resolved_in(Path::new("/r"));
        assert_eq!(
            back.rubric.as_deref(),
            Some(Path::new("/r/inputs/rubric.toml"))
        );
        assert_eq!(back.therapist_prompt, "/r/inputs/therapist_prompt.j2");
        // Built-in names are not files.
        let (b, files) = AssetSources::new("cbt").bundle().unwrap();
        assert_eq!(b.therapist_prompt, "cbt");
        assert!(files.is_empty());
        assert_eq!(b.resolved_in(Path::new("/r")).therapist_prompt, "cbt");
    }

    #[test]
    fn a_builtin_rubric_name_is_copied_in_as_a_file() {
        let mut src = AssetSources::new("cbt");
        src.rubric = Some("mi".into());
        let (rel, files) = src.bundle().unwrap();
        assert_eq!(rel.rubric.as_deref(), Some(Path::new("inputs/rubric.toml")));
        let (_, text) = files.iter().next().unwrap();
        assert_eq!(text, builtin::RUBRIC_MI.as_bytes());
        src.rubric = Some("nope".into());
        let e = src.bundle().unwrap_err().to_string();
        assert!(e.contains("built-in name (ctrs, mi)"), "{e}");
    }

    #[test]
    fn a_missing_input_names_the_file() {
        let mut src = AssetSources::new("cbt");
        src.taxonomy = Some("/nonexistent/tax.toml".into());
        let e = src.bundle().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/tax.toml"), "{e}");
    }
}
