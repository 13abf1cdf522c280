//! The run directory: what is stored, when, and how it is read back on resume.
//!
//! ```text
//! DIR/
//!   synth.json            config, prompts, seed-set hash, one record per process attempt, status
//!   seed_profiles.jsonl   the seed profiles this run was grounded in (resume reads these)
//!   nodes/<id>.json       one per expanded node, written atomically when the node finishes
//!   leaves/batch-NNNNNN.json  finished leaf jobs in consumption order, written atomically
//!                          (every 200 ms or 512 jobs, and at the end)
//!   tree.json             the tree view, rewritten after every level and at the end
//!   profiles.jsonl holdout.jsonl diversity.json provenance.jsonl rejected.jsonl   outputs
//! ```
//! Every write goes through `therapygym_store::fs::atomic_write`, so `kill -9` leaves each file
//! whole (old or new). Stale temp files of a killed process are removed on resume.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use therapygym_core::Profile;

use crate::config::SynthConfig;
use crate::error::SynthError;
use crate::prompts::SynthPrompts;
use crate::tree::NodeResult;

pub const STATE_FILE: &str = "synth.json";
pub const SEEDS_FILE: &str = "seed_profiles.jsonl";
pub const NODES_DIR: &str = "nodes";
pub const LEAVES_DIR: &str = "leaves";
pub const SCHEMA_REVISION: u32 = 1;

/// One process start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub pid: u32,
    pub started_unix: u64,
    pub finished_unix: Option<u64>,
    /// Model calls this attempt made (filled in when it finishes).
    pub model_calls: Option<u64>,
}

/// `synth.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema_revision: u32,
    /// `started` or `finished`.
    pub status: String,
    pub config: SynthConfig,
    pub config_hash: String,
    pub prompts: SynthPrompts,
    pub prompt_hashes: std::collections::BTreeMap<String, String>,
    pub vocab_hash: String,
    pub seed_profiles: SeedInfo,
    pub attempts: Vec<AttemptRecord>,
    /// The final summary, once finished.
    pub summary: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedInfo {
    /// Where they came from (a path or `<builtin>`).
    pub source: String,
    pub count: usize,
    pub sha256: String,
}

/// One candidate of a leaf job: a checked profile (provisional id) or a rejection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateRecord {
    /// Sample index within the leaf.
    pub index: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejection: Option<crate::profile_check::Rejection>,
    /// The start of the last unusable reply (rejected candidates only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    /// Re-asks made (0 = the first reply was used or the call failed outright).
    pub repairs: u32,
    pub calls: u32,
}

/// One finished leaf job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Position in the run's job sequence.
    pub seq: u64,
    pub leaf: String,
    pub start: u64,
    pub count: u32,
    pub wave: u32,
    pub topup: bool,
    pub attempt: u32,
    pub candidates: Vec<CandidateRecord>,
}

/// `leaves/batch-NNNNNN.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub schema_revision: u32,
    pub attempt: u32,
    pub jobs: Vec<JobRecord>,
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<(), SynthError> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| SynthError::state(path, format!("cannot serialise: {e}")))?;
    write_bytes(path, &bytes)
}

/// Compact JSON (large state files).
pub fn write_json_compact<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<(), SynthError> {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| SynthError::state(path, format!("cannot serialise: {e}")))?;
    write_bytes(path, &bytes)
}

pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), SynthError> {
    therapygym_store::fs::atomic_write(path, bytes).map_err(|e| SynthError::io("write", path, e))
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, SynthError> {
    let text = std::fs::read_to_string(path).map_err(|e| SynthError::io("read", path, e))?;
    serde_json::from_str(&text).map_err(|e| SynthError::state(path, e.to_string()))
}

pub fn create_dir(path: &Path) -> Result<(), SynthError> {
    std::fs::create_dir_all(path).map_err(|e| SynthError::io("create", path, e))?;
    therapygym_store::fs::set_private(path);
    Ok(())
}

/// Entries of a state folder in name order, skipping temp files of interrupted writes (which
/// are deleted).
fn list(dir: &Path, prefix: &str) -> Result<Vec<PathBuf>, SynthError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(SynthError::io("list", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| SynthError::io("list", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.contains(".tmp-") {
            let _ = std::fs::remove_file(entry.path());
            continue;
        }
        if name.starts_with(prefix) && name.ends_with(".json") {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

pub fn node_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(NODES_DIR).join(format!("{id}.json"))
}

/// Every stored node result.
pub fn load_nodes(dir: &Path) -> Result<Vec<NodeResult>, SynthError> {
    list(&dir.join(NODES_DIR), "n")?
        .iter()
        .map(|p| read_json::<NodeResult>(p))
        .collect()
}

pub fn batch_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(LEAVES_DIR).join(format!("batch-{n:06}.json"))
}

/// Every stored leaf job, in sequence order; checks that they form a gap-free prefix.
pub fn load_jobs(dir: &Path) -> Result<(Vec<JobRecord>, u64), SynthError> {
    let paths = list(&dir.join(LEAVES_DIR), "batch-")?;
    let mut jobs = Vec::new();
    for p in &paths {
        let b: Batch = read_json(p)?;
        jobs.extend(b.jobs);
    }
    jobs.sort_by_key(|j| j.seq);
    for (i, j) in jobs.iter().enumerate() {
        if j.seq != i as u64 {
            return Err(SynthError::state(
                dir.join(LEAVES_DIR),
                format!("leaf job {i} is missing (found job {} in its place)", j.seq),
            ));
        }
    }
    Ok((jobs, paths.len() as u64))
}

pub fn seeds_to_jsonl(seeds: &[Profile]) -> String {
    therapygym_core::profile::to_jsonl(seeds)
}
