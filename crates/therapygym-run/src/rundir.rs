//! Creating a run directory in one step. The store, the manifest, the input files and the first
//! rows are made in a hidden staging directory beside the target and renamed into place, so a
//! run directory either does not exist or holds everything a resume needs: a process killed
//! while creating a run leaves no half-made directory under the name the user asked for.
//!
//! Default names (`runs/eval-20261127-101500`) are made unique: when the name is taken (two runs
//! started in the same second), `-2`, `-3`, … is appended.

use std::path::{Path, PathBuf};

use serde_json::Value;
use therapygym_store::RunStore;

use crate::error::RunError;
use crate::inputs::{INPUTS_DIR, InputFiles};

/// Where a new run goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutDir {
    /// Exactly this directory (it must not exist, or be empty).
    Given(PathBuf),
    /// `PARENT/KIND-YYYYMMDD-HHMMSS`, with a suffix when that name is taken.
    Default { parent: PathBuf, kind: String },
}

impl OutDir {
    /// `runs/KIND-<local time>`.
    pub fn default_for(kind: &str) -> Self {
        OutDir::Default {
            parent: PathBuf::from("runs"),
            kind: kind.to_string(),
        }
    }

    fn parent(&self) -> PathBuf {
        match self {
            OutDir::Given(p) => p
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
            OutDir::Default { parent, .. } => parent.clone(),
        }
    }
}

/// The names a default run directory may take, in order.
fn candidates(parent: &Path, kind: &str, stamp: &str) -> impl Iterator<Item = PathBuf> {
    let (parent, base) = (parent.to_path_buf(), format!("{kind}-{stamp}"));
    (1..=1000u32).map(move |n| match n {
        1 => parent.join(&base),
        n => parent.join(format!("{base}-{n}")),
    })
}

/// A default run directory taken for one process: created empty, so a second process started
/// in the same second gets the next name (`mkdir` either creates or fails, atomically). Commands
/// that write their run in place (`synth`, `train`, `serve`) use it; dropping it removes the
/// directory only while it is still empty, so a command that fails at start-up leaves nothing
/// behind and a run that wrote anything is kept.
#[derive(Debug)]
pub struct ClaimedDir {
    path: PathBuf,
    /// The parent this claim created (`runs/`), removed with it while empty.
    made_parent: Option<PathBuf>,
}

impl ClaimedDir {
    /// Claims the first free name `PARENT/KIND-<local time>[-N]`.
    pub fn claim(parent: &Path, kind: &str) -> Result<Self, RunError> {
        let made_parent = (!parent.exists()).then(|| parent.to_path_buf());
        std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S").to_string();
        for c in candidates(parent, kind, &stamp) {
            match std::fs::create_dir(&c) {
                Ok(()) => {
                    return Ok(Self {
                        path: c,
                        made_parent,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io(&c, e)),
            }
        }
        Err(RunError::Invalid(format!(
            "cannot find a free run directory name {kind}-{stamp}-N under {}; pass `--out DIR`",
            parent.display()
        )))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ClaimedDir {
    fn drop(&mut self) {
        // `remove_dir` refuses a non-empty directory: a run that started is never removed.
        if std::fs::remove_dir(&self.path).is_ok()
            && let Some(p) = &self.made_parent
        {
            let _ = std::fs::remove_dir(p);
        }
    }
}

fn is_free(p: &Path) -> bool {
    match std::fs::read_dir(p) {
        Ok(mut d) => d.next().is_none(),
        Err(_) => !p.exists(),
    }
}

fn io(path: &Path, e: std::io::Error) -> RunError {
    RunError::Invalid(format!("{}: {e}", path.display()))
}

/// Removes the staging folders (`.therapygym-PID-TAG.creating` / `.inputs`) of creations whose
/// process is gone (killed between staging and commit). Only where `/proc` tells which
/// processes live; a folder of a live process, or of an unknown name, is left alone.
fn sweep_abandoned(parent: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(".therapygym-")) else {
            continue;
        };
        let staged = rest.ends_with(".creating") || rest.ends_with(".inputs");
        let pid = rest
            .split_once('-')
            .and_then(|(p, _)| p.parse::<u32>().ok());
        if let (true, Some(pid)) = (staged, pid)
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A run being created: its input files are written (so the run's data can be loaded from
/// exactly the bytes the run will keep) but nothing is visible under the target name yet.
#[derive(Debug)]
pub struct Staged {
    out: OutDir,
    parent: PathBuf,
    /// Holds `inputs/` until the commit moves it into the run.
    inputs_root: PathBuf,
    stage: PathBuf,
    has_inputs: bool,
}

impl Staged {
    /// Checks the target is free and writes `files` to a hidden folder beside it. `advice` ends
    /// the "already exists" message (what the user can do instead, for the command at hand).
    pub fn new(out: OutDir, files: &InputFiles, advice: &str) -> Result<Staged, RunError> {
        if let OutDir::Given(p) = &out
            && !is_free(p)
        {
            return Err(RunError::Invalid(format!(
                "{} already exists and is not empty; {advice}",
                p.display()
            )));
        }
        let parent = out.parent();
        std::fs::create_dir_all(&parent).map_err(|e| io(&parent, e))?;
        sweep_abandoned(&parent);
        // The creator's pid in the name lets a later creation remove what a killed one left.
        let tag = format!("{}-{}", std::process::id(), uuid::Uuid::now_v7().simple());
        let staged = Staged {
            inputs_root: parent.join(format!(".therapygym-{tag}.inputs")),
            stage: parent.join(format!(".therapygym-{tag}.creating")),
            parent,
            out,
            has_inputs: !files.is_empty(),
        };
        for (rel, bytes) in files.iter() {
            let path = staged.inputs_root.join(rel);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
            }
            therapygym_store::fs::atomic_write(&path, bytes).map_err(|e| io(&path, e))?;
            if let Some(dir) = path.parent() {
                therapygym_store::fs::set_private(dir);
            }
        }
        Ok(staged)
    }

    /// The directory the input files' relative paths (`inputs/…`) resolve against until the
    /// run is committed.
    pub fn base(&self) -> &Path {
        &self.inputs_root
    }

    /// Creates the store with `manifest`, runs `init` on it (profiles, the first attempt, …),
    /// moves the inputs in and renames the whole into place. Returns the store at its final path.
    pub fn commit(
        self,
        manifest: &Value,
        config_hash: &str,
        init: impl FnOnce(&RunStore) -> Result<(), RunError>,
    ) -> Result<RunStore, RunError> {
        let store = RunStore::create(&self.stage, manifest, config_hash)?;
        init(&store)?;
        drop(store); // closes the database (and its WAL) before the directory moves
        if self.has_inputs {
            let (from, to) = (
                self.inputs_root.join(INPUTS_DIR),
                self.stage.join(INPUTS_DIR),
            );
            std::fs::rename(&from, &to).map_err(|e| io(&to, e))?;
        }
        let dir = self.place()?;
        if let Ok(d) = std::fs::File::open(&self.parent) {
            let _ = d.sync_all();
        }
        Ok(RunStore::open(&dir)?)
    }

    /// Renames the staging directory to the target (the next free name for a default one).
    fn place(&self) -> Result<PathBuf, RunError> {
        match &self.out {
            OutDir::Given(p) => {
                std::fs::rename(&self.stage, p).map_err(|e| {
                    RunError::Invalid(format!(
                        "cannot create {} ({e}); another process may have created it meanwhile",
                        p.display()
                    ))
                })?;
                Ok(p.clone())
            }
            OutDir::Default { parent, kind } => {
                let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S").to_string();
                for c in candidates(parent, kind, &stamp) {
                    // A rename onto an existing non-empty directory fails: the next name is tried.
                    if is_free(&c) && std::fs::rename(&self.stage, &c).is_ok() {
                        return Ok(c);
                    }
                }
                Err(RunError::Invalid(format!(
                    "cannot find a free run directory name {kind}-{stamp}-N under {}; pass `--out DIR`",
                    parent.display()
                )))
            }
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // After a commit both are gone; after a failure they are removed so nothing is left.
        let _ = std::fs::remove_dir_all(&self.inputs_root);
        let _ = std::fs::remove_dir_all(&self.stage);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn claimed_default_dirs_are_distinct_and_an_unused_one_is_removed() {
        let d = tempfile::tempdir().unwrap();
        let runs = d.path().join("runs");
        let a = ClaimedDir::claim(&runs, "synth").unwrap();
        let b = ClaimedDir::claim(&runs, "synth").unwrap();
        assert_ne!(a.path(), b.path());
        assert!(a.path().is_dir() && b.path().is_dir());
        std::fs::write(b.path().join("manifest.json"), "{}").unwrap();
        let (pa, pb) = (a.path().to_path_buf(), b.path().to_path_buf());
        drop(a);
        drop(b);
        assert!(!pa.exists(), "an empty claimed directory is removed");
        assert!(pb.join("manifest.json").is_file(), "a used one is kept");
        std::fs::remove_file(pb.join("manifest.json")).unwrap();
        drop(ClaimedDir::claim(&runs, "serve").unwrap());
        assert!(runs.is_dir(), "a parent the claim did not make stays");
        std::fs::remove_dir_all(&runs).unwrap();
        drop(ClaimedDir::claim(&runs, "serve").unwrap());
        assert!(!runs.exists(), "a parent the claim made goes with it");
    }

    #[test]
    fn a_committed_run_holds_its_inputs_and_nothing_is_left_beside_it() {
        let d = tempfile::tempdir().unwrap();
        let mut files = InputFiles::default();
        files.put("rubric.toml", b"r".to_vec());
        let out = d.path().join("run");
        let s = Staged::new(OutDir::Given(out.clone()), &files, "choose another").unwrap();
        assert_eq!(
            std::fs::read(s.base().join("inputs/rubric.toml")).unwrap(),
            b"r"
        );
        let store = s
            .commit(&json!({"k": 1}), "h", |st| {
                st.record_attempt("test", None)
                    .map(|_| ())
                    .map_err(Into::into)
            })
            .unwrap();
        assert_eq!(store.dir(), out);
        assert_eq!(store.attempts().unwrap(), 1);
        assert_eq!(std::fs::read(out.join("inputs/rubric.toml")).unwrap(), b"r");
        let names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["run"]);
        let e = Staged::new(OutDir::Given(out), &files, "choose another `--out`").unwrap_err();
        assert!(
            e.to_string().ends_with("not empty; choose another `--out`"),
            "{e}"
        );
    }

    #[test]
    fn a_failed_creation_leaves_nothing_and_default_names_do_not_collide() {
        let d = tempfile::tempdir().unwrap();
        let mut files = InputFiles::default();
        files.put("x", b"x".to_vec());
        let s = Staged::new(OutDir::Given(d.path().join("r")), &files, "").unwrap();
        let e = s.commit(&json!({}), "h", |_| Err(RunError::Invalid("no".into())));
        assert!(e.is_err());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
        let out = OutDir::Default {
            parent: d.path().to_path_buf(),
            kind: "eval".into(),
        };
        let mut dirs = Vec::new();
        for _ in 0..3 {
            let s = Staged::new(out.clone(), &InputFiles::default(), "").unwrap();
            dirs.push(
                s.commit(&json!({}), "h", |_| Ok(()))
                    .unwrap()
                    .dir()
                    .to_path_buf(),
            );
        }
        dirs.sort();
        dirs.dedup();
        assert_eq!(dirs.len(), 3, "{dirs:?}");
    }

    #[test]
    fn a_new_creation_removes_what_a_killed_one_left_and_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        // A pid above the kernel's maximum (4,194,304) cannot be running.
        let dead = [
            ".therapygym-99999999-ab.creating",
            ".therapygym-99999999-ab.inputs",
        ];
        let alive = format!(".therapygym-{}-cd.creating", std::process::id());
        for n in dead
            .iter()
            .copied()
            .chain([alive.as_str(), ".therapygym-old.creating", "keep"])
        {
            std::fs::create_dir(d.path().join(n)).unwrap();
        }
        let s = Staged::new(
            OutDir::Given(d.path().join("run")),
            &InputFiles::default(),
            "",
        )
        .unwrap();
        drop(s);
        let mut names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [alive.as_str(), ".therapygym-old.creating", "keep"]);
    }
}
