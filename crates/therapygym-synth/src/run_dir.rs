//! The run directory of a synthesis run: created with its settings, prompts and seed profiles,
//! or reopened (checked against their hashes) to continue. What lives in it: `state.rs`.

use std::path::{Path, PathBuf};

use therapygym_core::{Profile, builtin};

use crate::config::SynthConfig;
use crate::error::SynthError;
use crate::prompts::SynthPrompts;
use crate::state::{self, AttemptRecord, Manifest, SCHEMA_REVISION, SeedInfo, now_unix};

/// A run directory, created or opened for resume.
#[derive(Debug)]
pub struct RunDir {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub seeds: Vec<Profile>,
    /// This process's attempt number (1 = first run).
    pub attempt: u32,
}

impl RunDir {
    /// Creates a new run directory. Refuses a non-empty existing one.
    pub fn create(
        out: &Path,
        config: SynthConfig,
        prompts: SynthPrompts,
        seeds: Vec<Profile>,
        seeds_source: &str,
    ) -> Result<Self, SynthError> {
        config.check()?;
        prompts.check()?;
        if out.exists() {
            let non_empty = std::fs::read_dir(out)
                .map_err(|e| SynthError::io("read", out, e))?
                .next()
                .is_some();
            if non_empty {
                return Err(SynthError::RunDir(format!(
                    "{} already exists and is not empty; continue it with `--resume {}` or choose another `--out`",
                    out.display(),
                    out.display()
                )));
            }
        }
        state::create_dir(out)?;
        state::create_dir(&out.join(state::NODES_DIR))?;
        state::create_dir(&out.join(state::LEAVES_DIR))?;
        let seeds_text = state::seeds_to_jsonl(&seeds);
        state::write_bytes(&out.join(state::SEEDS_FILE), seeds_text.as_bytes())?;
        let vocab = builtin::vocabulary()?;
        let manifest = Manifest {
            schema_revision: SCHEMA_REVISION,
            status: "started".into(),
            config_hash: therapygym_core::hash::content_hash(&config),
            config,
            prompt_hashes: prompts.hashes(),
            prompts,
            vocab_hash: therapygym_core::hash::content_hash(&vocab),
            seed_profiles: SeedInfo {
                source: seeds_source.into(),
                count: seeds.len(),
                sha256: therapygym_core::hash::text_hash(&seeds_text),
            },
            attempts: vec![AttemptRecord {
                attempt: 1,
                pid: std::process::id(),
                started_unix: now_unix(),
                finished_unix: None,
                model_calls: None,
            }],
            summary: None,
        };
        state::write_json(&out.join(state::STATE_FILE), &manifest)?;
        Ok(Self {
            dir: out.to_path_buf(),
            manifest,
            seeds,
            attempt: 1,
        })
    }

    /// Opens a run directory to continue it (a finished run is re-finalised without calls).
    pub fn open(dir: &Path) -> Result<Self, SynthError> {
        let path = dir.join(state::STATE_FILE);
        if !path.is_file() {
            return Err(SynthError::RunDir(format!(
                "{} is not a synthesis run directory (no {})",
                dir.display(),
                state::STATE_FILE
            )));
        }
        let mut manifest: Manifest = state::read_json(&path)?;
        if manifest.schema_revision != SCHEMA_REVISION {
            return Err(SynthError::state(
                &path,
                format!(
                    "schema_revision {} is not supported (expected {SCHEMA_REVISION})",
                    manifest.schema_revision
                ),
            ));
        }
        if therapygym_core::hash::content_hash(&manifest.config) != manifest.config_hash {
            return Err(SynthError::state(
                &path,
                "the stored config does not match its hash (the file was edited)",
            ));
        }
        manifest.config.check()?;
        manifest.prompts.check()?;
        let seeds_path = dir.join(state::SEEDS_FILE);
        let seeds_text = std::fs::read_to_string(&seeds_path)
            .map_err(|e| SynthError::io("read", &seeds_path, e))?;
        if therapygym_core::hash::text_hash(&seeds_text) != manifest.seed_profiles.sha256 {
            return Err(SynthError::state(
                &seeds_path,
                "the seed profiles changed since the run started",
            ));
        }
        let seeds = if seeds_text.trim().is_empty() {
            Vec::new()
        } else {
            therapygym_core::profile::parse_profiles(
                &seeds_text,
                &seeds_path,
                &builtin::vocabulary()?,
            )?
            .profiles
        };
        let attempt = u32::try_from(manifest.attempts.len() + 1).unwrap_or(u32::MAX);
        manifest.attempts.push(AttemptRecord {
            attempt,
            pid: std::process::id(),
            started_unix: now_unix(),
            finished_unix: None,
            model_calls: None,
        });
        state::write_json(&path, &manifest)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            seeds,
            attempt,
        })
    }

    pub fn config(&self) -> &SynthConfig {
        &self.manifest.config
    }
}
