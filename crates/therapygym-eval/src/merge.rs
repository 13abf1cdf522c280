//! `therapygym merge SHARD_DIR... --out DIR`: the shard runs of one `eval --shard I/N` plan
//! become one run, on which `judge`, `export`, `validate`, `report` and `view` work as on a run
//! made in one piece. Refused, with the reason, when the shards are not all the shards of one
//! plan (another N, a repeated or missing index, manifests that differ in anything but the
//! shard) or when one is unfinished (it is named with its `--resume` command).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use therapygym_run::{Assets, InputFiles, OutDir, RunConfig, RunError, Shard, Staged};
use therapygym_store::{RunStore, SessionStatus};

use crate::run::{check_kind, diff_keys, planned_sessions};
use crate::summary::{Summary, summarize};

/// What a merge made.
#[derive(Debug)]
pub struct Merged {
    pub dir: PathBuf,
    pub shards: u32,
    pub sessions: usize,
    pub summary: Summary,
}

struct ShardRun {
    dir: PathBuf,
    store: RunStore,
    manifest: Value,
    config: RunConfig,
    shard: Shard,
}

/// The manifest without what may differ between the shards of one plan.
fn comparable(m: &Value) -> Value {
    let mut m = m.clone();
    if let Some(o) = m.as_object_mut() {
        for k in ["run_id", "created_at", "config_hash", "concurrency"] {
            o.remove(k);
        }
    }
    if let Some(c) = m.get_mut("config").and_then(Value::as_object_mut) {
        c.remove("shard");
    }
    m
}

fn open_shard(dir: &Path) -> Result<ShardRun, RunError> {
    let store = RunStore::open(dir)?;
    check_kind(&store, "merge")?;
    let (manifest, _) = store.manifest()?;
    let config = RunConfig::stored(&store)?;
    let shard = config.shard.ok_or_else(|| {
        RunError::Invalid(format!(
            "{}: not a shard (it was made without `eval --shard I/N`); `merge` combines the shards of one sharded plan",
            dir.display()
        ))
    })?;
    Ok(ShardRun {
        dir: dir.to_path_buf(),
        store,
        manifest,
        config,
        shard,
    })
}

/// Every shard 1..N exactly once, all of one N.
fn check_indices(runs: &[ShardRun]) -> Result<u32, RunError> {
    let n = runs[0].shard.count;
    let mut by_index: BTreeMap<u32, &Path> = BTreeMap::new();
    for r in runs {
        if r.shard.count != n {
            return Err(RunError::Invalid(format!(
                "{} is shard {} but {} is shard {}: shards of one plan share N",
                r.dir.display(),
                r.shard,
                runs[0].dir.display(),
                runs[0].shard
            )));
        }
        if let Some(other) = by_index.insert(r.shard.index, &r.dir) {
            return Err(RunError::Invalid(format!(
                "shard {} is given twice ({} and {}); give each shard once",
                r.shard,
                other.display(),
                r.dir.display()
            )));
        }
    }
    let missing: Vec<String> = (1..=n)
        .filter(|i| !by_index.contains_key(i))
        .map(|i| format!("{i}/{n}"))
        .collect();
    if !missing.is_empty() {
        return Err(RunError::Invalid(format!(
            "shard(s) {} missing: give every shard of the plan (run them with `eval --shard I/{n}`)",
            missing.join(", ")
        )));
    }
    Ok(n)
}

fn check_same_plan(runs: &[ShardRun]) -> Result<(), RunError> {
    let first = comparable(&runs[0].manifest);
    for r in &runs[1..] {
        let mut keys = Vec::new();
        diff_keys(&first, &comparable(&r.manifest), "", &mut keys);
        if !keys.is_empty() {
            keys.truncate(8);
            return Err(RunError::Invalid(format!(
                "{} and {} are not shards of one plan: their manifests differ in {}",
                runs[0].dir.display(),
                r.dir.display(),
                keys.join(", ")
            )));
        }
    }
    Ok(())
}

/// Names every shard with planned sessions not yet stored as completed or failed.
fn check_finished(runs: &[ShardRun]) -> Result<(), RunError> {
    let mut unfinished = Vec::new();
    for r in runs {
        let assets = Assets::load_in(&r.config.assets, &r.dir)?;
        let planned = planned_sessions(&r.config, &assets.profiles.profiles);
        let statuses = r.store.session_statuses()?;
        let left = planned
            .iter()
            .filter(|p| {
                !matches!(
                    statuses.get(&p.id),
                    Some(SessionStatus::Completed | SessionStatus::Failed)
                )
            })
            .count();
        if left > 0 {
            unfinished.push(format!(
                "{} (shard {}): {left} of {} sessions not run; finish it with `therapygym eval --resume {}`",
                r.dir.display(),
                r.shard,
                planned.len(),
                r.dir.display()
            ));
        }
    }
    if unfinished.is_empty() {
        Ok(())
    } else {
        Err(RunError::Invalid(format!(
            "unfinished shard(s):\n  {}",
            unfinished.join("\n  ")
        )))
    }
}

pub fn merge_shards(dirs: &[PathBuf], out: &Path) -> Result<Merged, RunError> {
    if dirs.is_empty() {
        return Err(RunError::Invalid(
            "no shard directories given; pass every shard of the plan".into(),
        ));
    }
    let mut runs = dirs
        .iter()
        .map(|d| open_shard(d))
        .collect::<Result<Vec<_>, _>>()?;
    let n = check_indices(&runs)?;
    check_same_plan(&runs)?;
    check_finished(&runs)?;
    runs.sort_by_key(|r| r.shard.index);

    let first = &runs[0];
    let mut config = first.config.clone();
    config.shard = None;
    let files = InputFiles::read_run(&first.dir)?;
    let staged = Staged::new(
        OutDir::Given(out.to_path_buf()),
        &files,
        "choose another `--out`",
    )?;
    let assets = Assets::load_in(&config.assets, staged.base())?;
    let hash = assets.config_hash(&config);
    let mut manifest = first.manifest.clone();
    let from: Vec<Value> = runs
        .iter()
        .map(|r| json!({"shard": r.shard.to_string(), "run_id": r.manifest["run_id"]}))
        .collect();
    if let Some(m) = manifest.as_object_mut() {
        m.insert("run_id".into(), json!(uuid::Uuid::now_v7().to_string()));
        m.insert("created_at".into(), json!(therapygym_store::timestamp()));
        m.insert("config_hash".into(), json!(hash));
        m.insert("config".into(), json!(config));
        m.insert("merged_from".into(), json!(from));
    }
    let judge_hash = first.store.judge_sets()?.first().map(|s| s.hash.clone());
    let sources: Vec<&Path> = runs.iter().map(|r| r.dir.as_path()).collect();
    let mut sessions = 0;
    let store = staged.commit(&manifest, &hash, |store| {
        sessions = store.absorb(&sources)?;
        store.record_attempt("merge", Some(&format!("{n} shards")))?;
        Ok(())
    })?;
    let planned = planned_sessions(&config, &assets.profiles.profiles);
    let summary = summarize(
        &store,
        judge_hash.as_deref().unwrap_or_default(),
        &planned,
        &assets,
    )?;
    store.write_json("summary.json", &summary)?;
    Ok(Merged {
        dir: store.dir().to_path_buf(),
        shards: n,
        sessions,
        summary,
    })
}
