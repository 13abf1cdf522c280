//! Helpers for tests that run the real `therapygym` binary.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

/// Every role scripted (`echo`): schema-valid judgments, echoed turns.
pub const SCRIPTED: [&str; 6] = [
    "--therapist",
    "scripted:echo",
    "--patient",
    "scripted:echo",
    "--judge",
    "scripted:echo",
];

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_therapygym"));
    // Tests never wait for real backoff sleeps; computed waits are still applied to logic.
    c.env("THERAPYGYM_TEST_NO_RETRY_DELAY", "1");
    c
}

pub fn run(args: &[&str], cwd: &Path) -> Output {
    bin()
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run therapygym")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// (id, status, attempt, created_at) of every session in a run.
pub fn sessions(dir: &Path) -> Vec<(String, String, i64, String)> {
    let c = rusqlite::Connection::open(dir.join("run.sqlite")).unwrap();
    let mut st = c
        .prepare("SELECT id, status, attempt, created_at FROM sessions ORDER BY id")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

pub fn count(dir: &Path, sql: &str) -> i64 {
    let c = rusqlite::Connection::open(dir.join("run.sqlite")).unwrap();
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Like [`count`], for polling a run another process is still creating: `None` until the
/// database and its tables exist.
pub fn try_count(dir: &Path, sql: &str) -> Option<i64> {
    let db = dir.join("run.sqlite");
    if !db.is_file() {
        return None;
    }
    let c = rusqlite::Connection::open(db).ok()?;
    c.query_row(sql, [], |r| r.get(0)).ok()
}
