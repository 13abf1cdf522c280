mod merge;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use therapygym_core::{Profile, Rubric, Speaker, Taxonomy, Transcript, Turn, Verdict};

/// Bump when the tables change; `open` refuses newer files and migrates older ones.
/// Revision 2: `judge_sets.definitions` (the rubric and taxonomy a set was judged with).
pub const SCHEMA_REVISION: i64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("run store {}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("run directory {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("run directory {}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("run store {}: stored data is unreadable ({message})", path.display())]
    Corrupt { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// The transcript finished (scored or not: judging is separate).
    Completed,
    /// The session could not finish (a model failed after retries); resume retries it.
    Failed,
    /// Expired or abandoned by an RL engine before the end (kept for inspection).
    Expired,
}

impl SessionStatus {
    fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Completed => "completed",
            SessionStatus::Failed => "failed",
            SessionStatus::Expired => "expired",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "completed" => Some(SessionStatus::Completed),
            "failed" => Some(SessionStatus::Failed),
            "expired" => Some(SessionStatus::Expired),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// `{profile_id}:{epoch}` for evaluations; any safe id for imported or served sessions.
    pub id: String,
    pub profile_id: String,
    pub epoch: u32,
    pub seed: u64,
    pub status: SessionStatus,
    pub style: String,
    pub end_reason: Option<String>,
    pub therapist_system: String,
    pub patient_system: String,
    pub transcript: Transcript,
    pub error: Option<String>,
    pub duration_ms: u64,
    pub attempt: u32,
    pub created_at: String,
    /// Free-form extras (group id, engine ids, ...).
    pub meta: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgmentRow {
    pub session_id: String,
    pub judge_hash: String,
    pub verdict: Verdict,
    /// The judge's full record (samples, raw replies, spread).
    pub record: Value,
    pub reward: Option<f64>,
    pub reward_breakdown: Option<Value>,
    /// Calibrated scores per item, when a calibration map was applied.
    pub calibrated: Option<Value>,
    pub attempts: u32,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeSet {
    pub hash: String,
    pub identity: Value,
    pub created_at: String,
    /// `{"rubric": …, "taxonomy": …}`: the full definitions the set was judged with, so a run
    /// re-judged under another rubric stays readable without the files. `None` for sets written
    /// before store revision 2.
    pub definitions: Option<Value>,
}

impl JudgeSet {
    /// The rubric this set was judged with (`None` for sets from before store revision 2).
    pub fn rubric(&self) -> Option<Rubric> {
        self.definitions
            .as_ref()
            .and_then(|d| serde_json::from_value(d.get("rubric")?.clone()).ok())
    }

    /// The safety taxonomy this set was judged with (`None` for sets from before revision 2).
    pub fn taxonomy(&self) -> Option<Taxonomy> {
        self.definitions
            .as_ref()
            .and_then(|d| serde_json::from_value(d.get("taxonomy")?.clone()).ok())
    }
}

impl JudgeSet {
    /// The judge (model spec) of this set.
    pub fn judge_spec(&self) -> &str {
        self.identity["model"].as_str().unwrap_or("unknown judge")
    }

    /// One line per set: hash, date, judge (and calibration), for messages and listings.
    pub fn listing(sets: &[JudgeSet]) -> String {
        if sets.is_empty() {
            return "  (none)".into();
        }
        sets.iter()
            .map(|s| {
                let cal = if s.identity.get("calibration").is_some() {
                    ", calibrated"
                } else {
                    ""
                };
                format!(
                    "  {}  {}  judge {}{cal}",
                    s.hash,
                    s.created_at,
                    s.judge_spec()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// What one role's model replies cost: replies counted, their tokens and wall time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleUsage {
    /// Model replies counted (judge: every attempt, re-asks and self-consistency samples included).
    pub calls: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Wall time in milliseconds: each therapist/patient reply's generation; each judge sample
    /// from its first request to its last reply (re-asks and retry waits included).
    pub wall_ms: u64,
}

/// Token use and wall time per role over a run (the judge: one judgment set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageByRole {
    pub therapist: RoleUsage,
    pub patient: RoleUsage,
    pub judge: RoleUsage,
}

pub struct RunStore {
    dir: PathBuf,
    db: PathBuf,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for RunStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS manifest (id INTEGER PRIMARY KEY CHECK (id = 1), json TEXT NOT NULL, config_hash TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS attempts (n INTEGER PRIMARY KEY, pid INTEGER NOT NULL, started_at TEXT NOT NULL, version TEXT NOT NULL, command TEXT NOT NULL, note TEXT);
CREATE TABLE IF NOT EXISTS profiles (id TEXT PRIMARY KEY, hash TEXT NOT NULL, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
  id TEXT PRIMARY KEY, profile_id TEXT NOT NULL, epoch INTEGER NOT NULL, seed INTEGER NOT NULL,
  status TEXT NOT NULL, style TEXT NOT NULL, end_reason TEXT, therapist_system TEXT NOT NULL,
  patient_system TEXT NOT NULL, error TEXT, duration_ms INTEGER NOT NULL, attempt INTEGER NOT NULL,
  created_at TEXT NOT NULL, meta TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
  session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE, idx INTEGER NOT NULL,
  speaker TEXT NOT NULL, text TEXT NOT NULL, prompt_tokens INTEGER, completion_tokens INTEGER,
  latency_ms INTEGER, finish_reason TEXT, PRIMARY KEY (session_id, idx));
CREATE TABLE IF NOT EXISTS judge_sets (hash TEXT PRIMARY KEY, identity TEXT NOT NULL, created_at TEXT NOT NULL, definitions TEXT);
CREATE TABLE IF NOT EXISTS judgments (
  session_id TEXT NOT NULL REFERENCES sessions(id), judge_hash TEXT NOT NULL REFERENCES judge_sets(hash),
  status TEXT NOT NULL, reason TEXT, verdict TEXT NOT NULL, record TEXT NOT NULL, attempts INTEGER NOT NULL,
  calibrated TEXT, created_at TEXT NOT NULL, PRIMARY KEY (session_id, judge_hash));
CREATE TABLE IF NOT EXISTS rewards (
  session_id TEXT NOT NULL, judge_hash TEXT NOT NULL, reward REAL, breakdown TEXT,
  PRIMARY KEY (session_id, judge_hash), FOREIGN KEY (session_id, judge_hash) REFERENCES judgments(session_id, judge_hash));
"#;

/// The timestamp format of every run file (store rows, manifests, metrics): RFC 3339, UTC,
/// milliseconds, `Z` suffix — sortable as text.
pub fn timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl RunStore {
    fn sql<T>(&self, r: rusqlite::Result<T>) -> Result<T, StoreError> {
        r.map_err(|source| StoreError::Sqlite {
            path: self.db.clone(),
            source,
        })
    }

    /// Opens the database with the run store's settings; `schema` also creates missing tables
    /// (an existing run; a new one creates them inside its first transaction).
    fn connect(dir: &Path, schema: bool) -> Result<Self, StoreError> {
        let db = dir.join("run.sqlite");
        let conn = Connection::open(&db).map_err(|source| StoreError::Sqlite {
            path: db.clone(),
            source,
        })?;
        let store = Self {
            dir: dir.to_path_buf(),
            db,
            conn: Mutex::new(conn),
        };
        store.with(|c| {
            c.busy_timeout(std::time::Duration::from_secs(30))?;
            c.pragma_update(None, "journal_mode", "WAL")?;
            c.pragma_update(None, "synchronous", "FULL")?;
            c.pragma_update(None, "foreign_keys", "ON")?;
            if schema {
                c.execute_batch(SCHEMA)?;
            }
            Ok(())
        })?;
        crate::fs::set_private(&store.db);
        Ok(store)
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut guard = self.conn.lock().map_err(|_| StoreError::Invalid {
            path: self.dir.clone(),
            message: "store lock poisoned".into(),
        })?;
        self.sql(f(&mut guard))
    }

    /// Runs `f` in one read transaction: its queries see one snapshot of the database, so rows
    /// another connection commits meanwhile (a `serve` process writing sessions) appear in all
    /// of them or in none.
    fn read<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
    }

    /// Creates a new run directory (it must not exist, or be empty, or hold only the database
    /// of a creation that was killed before it committed) with its manifest. The tables, the
    /// schema revision and the manifest are committed in one transaction before any model call,
    /// so a process killed while creating a run leaves either a run that `open` reads or a
    /// directory that `create` may create again.
    pub fn create(dir: &Path, manifest: &Value, config_hash: &str) -> Result<Self, StoreError> {
        if dir.exists() {
            let empty = std::fs::read_dir(dir)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if !empty && !Self::remove_uncommitted(dir) {
                return Err(StoreError::Invalid {
                    path: dir.into(),
                    message: "already exists and is not empty; use `--resume` to continue that run or choose another `--out`".into(),
                });
            }
        }
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.into(),
            source,
        })?;
        crate::fs::set_private(dir);
        let store = Self::connect(dir, false)?;
        let json = serde_json::to_string(manifest).unwrap_or_default();
        store.with(|c| {
            let tx = c.transaction()?;
            tx.execute_batch(SCHEMA)?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_revision', ?1)",
                params![SCHEMA_REVISION.to_string()],
            )?;
            crate::fault::pause_point("store-create-before-manifest");
            tx.execute(
                "INSERT INTO manifest (id, json, config_hash, created_at) VALUES (1, ?1, ?2, ?3)",
                params![json, config_hash, timestamp()],
            )?;
            tx.commit()
        })?;
        store.write_json("manifest.json", manifest)?;
        Ok(store)
    }

    /// The files SQLite keeps for `run.sqlite` (the database, its WAL, shared memory and
    /// rollback journal).
    const DB_FILES: [&'static str; 4] = [
        "run.sqlite",
        "run.sqlite-wal",
        "run.sqlite-shm",
        "run.sqlite-journal",
    ];

    /// Whether `dir` holds nothing but a run database without a committed manifest (a creation
    /// killed before its commit, or by a version that committed the tables first): then those
    /// files are removed and `true` returned. Anything else in `dir` is left alone.
    fn remove_uncommitted(dir: &Path) -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        let only_db = entries.into_iter().all(|e| {
            e.ok().is_some_and(|e| {
                Self::DB_FILES
                    .iter()
                    .any(|n| e.file_name().to_str() == Some(n))
            })
        });
        if !only_db || Self::has_manifest(&dir.join("run.sqlite")) != Some(false) {
            return false;
        }
        Self::DB_FILES
            .iter()
            .map(|n| dir.join(n))
            .filter(|p| p.exists())
            .all(|p| std::fs::remove_file(p).is_ok())
    }

    /// `Some(true)` when the database at `db` has a committed manifest, `Some(false)` when it
    /// is readable and has none (or no tables at all), `None` when it cannot be read.
    fn has_manifest(db: &Path) -> Option<bool> {
        if std::fs::metadata(db).ok()?.len() == 0 {
            return Some(false);
        }
        let c = Connection::open(db).ok()?;
        let tables: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'manifest'",
                [],
                |r| r.get(0),
            )
            .ok()?;
        if tables == 0 {
            return Some(false);
        }
        c.query_row("SELECT COUNT(*) FROM manifest", [], |r| r.get::<_, i64>(0))
            .ok()
            .map(|n| n > 0)
    }

    /// Opens an existing run.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = dir.join("run.sqlite");
        if !db.is_file() {
            let message = if dir.is_dir() {
                "is not a TherapyGym run (no run.sqlite); `therapygym runs` lists the runs under a directory"
            } else {
                "does not exist; `therapygym runs` lists the runs under a directory"
            };
            return Err(StoreError::Invalid {
                path: dir.into(),
                message: message.into(),
            });
        }
        if Self::has_manifest(&db) == Some(false) {
            return Err(StoreError::Invalid {
                path: dir.into(),
                message: "holds a run whose creation was interrupted before anything was committed; there is nothing to resume: start the run again with the same `--out`".into(),
            });
        }
        let store = Self::connect(dir, true)?;
        let rev: Option<String> = store.with(|c| {
            c.query_row(
                "SELECT value FROM meta WHERE key = 'schema_revision'",
                [],
                |r| r.get(0),
            )
            .optional()
        })?;
        match rev.and_then(|r| r.parse::<i64>().ok()) {
            Some(r) if r < SCHEMA_REVISION => {
                store.migrate(r)?;
                Ok(store)
            }
            Some(SCHEMA_REVISION) => Ok(store),
            Some(r) => Err(StoreError::Invalid {
                path: dir.into(),
                message: format!(
                    "was written by a newer TherapyGym (store revision {r} > {SCHEMA_REVISION}); upgrade to read it"
                ),
            }),
            None => Err(StoreError::Corrupt {
                path: dir.into(),
                message: "no schema revision".into(),
            }),
        }
    }

    /// Brings a store of an older revision up to this one, in one transaction.
    fn migrate(&self, from: i64) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            if from < 2 {
                tx.execute_batch("ALTER TABLE judge_sets ADD COLUMN definitions TEXT")?;
            }
            tx.execute(
                "UPDATE meta SET value = ?1 WHERE key = 'schema_revision'",
                params![SCHEMA_REVISION.to_string()],
            )?;
            tx.commit()
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a JSON file into the run directory atomically.
    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StoreError> {
        let path = self.dir.join(name);
        let bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
        crate::fs::atomic_write(&path, &bytes).map_err(|source| StoreError::Io { path, source })
    }

    pub fn manifest(&self) -> Result<(Value, String), StoreError> {
        let (json, hash): (String, String) = self.with(|c| {
            c.query_row(
                "SELECT json, config_hash FROM manifest WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })?;
        let v = serde_json::from_str(&json).map_err(|e| StoreError::Corrupt {
            path: self.db.clone(),
            message: e.to_string(),
        })?;
        Ok((v, hash))
    }

    /// Records one process start (a fresh run or a resume); returns its number.
    pub fn record_attempt(&self, command: &str, note: Option<&str>) -> Result<u32, StoreError> {
        self.with(|c| {
            let n: i64 = c.query_row("SELECT COALESCE(MAX(n), 0) + 1 FROM attempts", [], |r| r.get(0))?;
            c.execute(
                "INSERT INTO attempts (n, pid, started_at, version, command, note) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![n, std::process::id(), timestamp(), env!("CARGO_PKG_VERSION"), command, note],
            )?;
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        })
    }

    pub fn attempts(&self) -> Result<u32, StoreError> {
        self.with(|c| c.query_row("SELECT COUNT(*) FROM attempts", [], |r| r.get::<_, i64>(0)))
            .map(|n| u32::try_from(n).unwrap_or(0))
    }

    pub fn put_profiles(&self, profiles: &[Profile]) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            for p in profiles {
                tx.execute(
                    "INSERT OR REPLACE INTO profiles (id, hash, json) VALUES (?1, ?2, ?3)",
                    params![p.id, p.hash(), serde_json::to_string(p).unwrap_or_default()],
                )?;
            }
            tx.commit()
        })
    }

    pub fn profiles(&self) -> Result<Vec<Profile>, StoreError> {
        let rows: Vec<String> = self.with(|c| {
            let mut st = c.prepare("SELECT json FROM profiles ORDER BY rowid")?;
            st.query_map([], |r| r.get(0))?.collect()
        })?;
        rows.iter()
            .map(|j| {
                serde_json::from_str(j).map_err(|e| StoreError::Corrupt {
                    path: self.db.clone(),
                    message: e.to_string(),
                })
            })
            .collect()
    }

    /// Commits a session and all its messages in one transaction. A failed session with the same
    /// id is replaced (resume retries failures); a completed one is never overwritten. The
    /// transaction takes the write lock first (`IMMEDIATE`), so it waits for another process's
    /// writer (busy timeout) instead of failing "database is locked" when its read upgrades.
    pub fn insert_session(&self, s: &SessionRecord) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let existing: Option<String> = tx.query_row("SELECT status FROM sessions WHERE id = ?1", params![s.id], |r| r.get(0)).optional()?;
            if let Some(status) = existing {
                if status == "completed" {
                    return Err(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
                        Some(format!("session `{}` is already completed in this run", s.id)),
                    ));
                }
                tx.execute("DELETE FROM messages WHERE session_id = ?1", params![s.id])?;
                tx.execute("DELETE FROM sessions WHERE id = ?1", params![s.id])?;
            }
            tx.execute(
                "INSERT INTO sessions (id, profile_id, epoch, seed, status, style, end_reason, therapist_system, patient_system, error, duration_ms, attempt, created_at, meta)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                params![
                    s.id, s.profile_id, s.epoch, s.seed as i64, s.status.as_str(), s.style, s.end_reason, s.therapist_system,
                    s.patient_system, s.error, s.duration_ms as i64, s.attempt, s.created_at, s.meta.to_string()
                ],
            )?;
            for (i, t) in s.transcript.turns.iter().enumerate() {
                tx.execute(
                    "INSERT INTO messages (session_id, idx, speaker, text, prompt_tokens, completion_tokens, latency_ms, finish_reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![s.id, i as i64, t.speaker.as_str(), t.text, t.prompt_tokens, t.completion_tokens, t.latency_ms.map(|x| x as i64), t.finish_reason],
                )?;
            }
            tx.commit()
        })
    }

    /// Every session with its messages, in insertion order.
    pub fn sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        self.select_sessions(0)
    }

    /// The sessions of epoch `epoch` and later (a resumed training run needs only those of the
    /// step it was interrupted in, not the whole history).
    pub fn sessions_from_epoch(&self, epoch: u32) -> Result<Vec<SessionRecord>, StoreError> {
        self.select_sessions(epoch)
    }

    fn select_sessions(&self, min_epoch: u32) -> Result<Vec<SessionRecord>, StoreError> {
        type MessageRow = (
            String,
            String,
            String,
            Option<u32>,
            Option<u32>,
            Option<i64>,
            Option<String>,
        );
        type Row = (
            String,
            String,
            u32,
            i64,
            String,
            String,
            Option<String>,
            String,
            String,
            Option<String>,
            i64,
            u32,
            String,
            String,
        );
        // Sessions and their messages from one snapshot: never a session without its messages.
        let (message_rows, rows): (Vec<MessageRow>, Vec<Row>) = self.read(|tx| {
            let mut st = tx.prepare("SELECT m.session_id, m.speaker, m.text, m.prompt_tokens, m.completion_tokens, m.latency_ms, m.finish_reason FROM messages m JOIN sessions s ON s.id = m.session_id WHERE s.epoch >= ?1 ORDER BY m.session_id, m.idx")?;
            let messages = st
                .query_map([min_epoch], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut st = tx.prepare("SELECT id, profile_id, epoch, seed, status, style, end_reason, therapist_system, patient_system, error, duration_ms, attempt, created_at, meta FROM sessions WHERE epoch >= ?1 ORDER BY rowid")?;
            let sessions = st
                .query_map([min_epoch], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?, r.get(10)?, r.get(11)?, r.get(12)?, r.get(13)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((messages, sessions))
        })?;
        let mut out: Vec<SessionRecord> = Vec::new();
        let mut messages: BTreeMap<String, Vec<Turn>> = BTreeMap::new();
        for (sid, speaker, text, pt, ct, lat, fin) in message_rows {
            let speaker = Speaker::parse(&speaker).ok_or_else(|| StoreError::Corrupt {
                path: self.db.clone(),
                message: format!("unknown speaker `{speaker}`"),
            })?;
            messages.entry(sid).or_default().push(Turn {
                speaker,
                text,
                prompt_tokens: pt,
                completion_tokens: ct,
                latency_ms: lat.map(|x| x as u64),
                finish_reason: fin,
            });
        }
        for (
            id,
            profile_id,
            epoch,
            seed,
            status,
            style,
            end_reason,
            ts,
            ps,
            error,
            dur,
            attempt,
            created_at,
            meta,
        ) in rows
        {
            let status = SessionStatus::parse(&status).ok_or_else(|| StoreError::Corrupt {
                path: self.db.clone(),
                message: format!("unknown status `{status}`"),
            })?;
            let turns = messages.remove(&id).unwrap_or_default();
            out.push(SessionRecord {
                id,
                profile_id,
                epoch,
                seed: seed as u64,
                status,
                style,
                end_reason,
                therapist_system: ts,
                patient_system: ps,
                transcript: Transcript { turns },
                error,
                duration_ms: dur as u64,
                attempt,
                created_at,
                meta: serde_json::from_str(&meta).unwrap_or(Value::Null),
            });
        }
        Ok(out)
    }

    /// `id → error` of every session that has one (failed or expired), cheap (no messages).
    pub fn session_errors(&self) -> Result<BTreeMap<String, String>, StoreError> {
        let rows: Vec<(String, String)> = self.with(|c| {
            let mut st = c.prepare("SELECT id, error FROM sessions WHERE error IS NOT NULL")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(rows.into_iter().collect())
    }

    /// `id → {"therapist": n, "patient": n}` of every session whose model calls were retried
    /// (the `retries` key of its meta), cheap (no messages).
    pub fn session_retries(&self) -> Result<BTreeMap<String, Value>, StoreError> {
        let rows: Vec<(String, String)> = self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, json_extract(meta, '$.retries') FROM sessions
                 WHERE json_type(meta, '$.retries') = 'object'",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, v)| serde_json::from_str(&v).ok().map(|v| (id, v)))
            .collect())
    }

    /// `(id, status)` of every session, cheap (no messages).
    pub fn session_statuses(&self) -> Result<BTreeMap<String, SessionStatus>, StoreError> {
        let rows: Vec<(String, String)> = self.with(|c| {
            let mut st = c.prepare("SELECT id, status FROM sessions")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, s)| SessionStatus::parse(&s).map(|s| (id, s)))
            .collect())
    }

    /// Registers a judgment set (idempotent) with its identity and the rubric and taxonomy it
    /// judges with; a set registered before store revision 2 gains its definitions here.
    pub fn ensure_judge_set(
        &self,
        hash: &str,
        identity: &Value,
        rubric: &Rubric,
        taxonomy: &Taxonomy,
    ) -> Result<(), StoreError> {
        let definitions = serde_json::json!({"rubric": rubric, "taxonomy": taxonomy}).to_string();
        self.with(|c| {
            c.execute(
                "INSERT INTO judge_sets (hash, identity, created_at, definitions) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (hash) DO UPDATE SET definitions = excluded.definitions WHERE definitions IS NULL",
                params![hash, identity.to_string(), timestamp(), definitions],
            )
            .map(|_| ())
        })
    }

    pub fn judge_sets(&self) -> Result<Vec<JudgeSet>, StoreError> {
        let rows: Vec<(String, String, String, Option<String>)> = self.with(|c| {
            let mut st = c.prepare(
                "SELECT hash, identity, created_at, definitions FROM judge_sets ORDER BY rowid",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(rows
            .into_iter()
            .map(|(hash, identity, created_at, definitions)| JudgeSet {
                hash,
                identity: serde_json::from_str(&identity).unwrap_or(Value::Null),
                created_at,
                definitions: definitions.and_then(|d| serde_json::from_str(&d).ok()),
            })
            .collect())
    }

    /// Picks a judgment set: `wanted` is a full hash or a unique prefix (with or without
    /// `sha256:`), `None` the most recent set. An unknown, ambiguous or missing set is an error
    /// that lists the run's sets with their judge and date.
    pub fn find_judge_set(&self, wanted: Option<&str>) -> Result<JudgeSet, StoreError> {
        let sets = self.judge_sets()?;
        let invalid = |message: String| StoreError::Invalid {
            path: self.dir.clone(),
            message,
        };
        let Some(h) = wanted else {
            return sets.into_iter().next_back().ok_or_else(|| {
                invalid("has no judgment sets yet; score it with `therapygym judge DIR`".into())
            });
        };
        let want = h.trim_start_matches("sha256:");
        let mut matches: Vec<JudgeSet> = sets
            .iter()
            .filter(|s| {
                s.hash == h
                    || (!want.is_empty() && s.hash.trim_start_matches("sha256:").starts_with(want))
            })
            .cloned()
            .collect();
        match matches.len() {
            1 => Ok(matches.remove(0)),
            0 => Err(invalid(format!(
                "has no judgment set `{h}`; its sets:\n{}",
                JudgeSet::listing(&sets)
            ))),
            _ => Err(invalid(format!(
                "judgment set prefix `{h}` matches {} sets; give more of the hash:\n{}",
                matches.len(),
                JudgeSet::listing(&matches)
            ))),
        }
    }

    /// `judge_hash → (scored, unscored)` judgment counts of every set, cheap (no records).
    pub fn judgment_counts(&self) -> Result<BTreeMap<String, (u64, u64)>, StoreError> {
        let rows: Vec<(String, String, i64)> = self.with(|c| {
            let mut st = c.prepare(
                "SELECT judge_hash, status, COUNT(*) FROM judgments GROUP BY judge_hash, status",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for (hash, status, n) in rows {
            let e = out.entry(hash).or_default();
            let n = u64::try_from(n).unwrap_or(0);
            if status == "scored" {
                e.0 += n;
            } else {
                e.1 += n;
            }
        }
        Ok(out)
    }

    /// The most recently created judge set.
    pub fn latest_judge_hash(&self) -> Result<Option<String>, StoreError> {
        Ok(self.judge_sets()?.pop().map(|s| s.hash))
    }

    /// Stores one judgment and its reward in one transaction; an existing row for the same
    /// (session, judge) is kept (judging is idempotent).
    pub fn insert_judgment(&self, j: &JudgmentRow) -> Result<bool, StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let (status, reason) = match &j.verdict {
                Verdict::Scored { .. } => ("scored", None),
                Verdict::Unscored { reason, .. } => ("unscored", Some(reason.as_str())),
            };
            let n = tx.execute(
                "INSERT OR IGNORE INTO judgments (session_id, judge_hash, status, reason, verdict, record, attempts, calibrated, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    j.session_id, j.judge_hash, status, reason, serde_json::to_string(&j.verdict).unwrap_or_default(),
                    j.record.to_string(), j.attempts, j.calibrated.as_ref().map(|v| v.to_string()), j.created_at
                ],
            )?;
            if n == 1 {
                tx.execute(
                    "INSERT INTO rewards (session_id, judge_hash, reward, breakdown) VALUES (?1, ?2, ?3, ?4)",
                    params![j.session_id, j.judge_hash, j.reward, j.reward_breakdown.as_ref().map(|v| v.to_string())],
                )?;
            }
            tx.commit()?;
            Ok(n == 1)
        })
    }

    /// Judgments of one judge set, keyed by session id.
    pub fn judgments(&self, judge_hash: &str) -> Result<BTreeMap<String, JudgmentRow>, StoreError> {
        type Row = (
            String,
            String,
            String,
            u32,
            Option<String>,
            String,
            Option<f64>,
            Option<String>,
        );
        let rows: Vec<Row> = self.with(|c| {
            let mut st = c.prepare(
                "SELECT j.session_id, j.verdict, j.record, j.attempts, j.calibrated, j.created_at, r.reward, r.breakdown
                 FROM judgments j LEFT JOIN rewards r ON r.session_id = j.session_id AND r.judge_hash = j.judge_hash
                 WHERE j.judge_hash = ?1",
            )?;
            let rows = st.query_map(params![judge_hash], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?)))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        let corrupt = |e: serde_json::Error| StoreError::Corrupt {
            path: self.db.clone(),
            message: e.to_string(),
        };
        let mut out = BTreeMap::new();
        for (sid, verdict, record, attempts, calibrated, created_at, reward, breakdown) in rows {
            out.insert(
                sid.clone(),
                JudgmentRow {
                    session_id: sid,
                    judge_hash: judge_hash.to_string(),
                    verdict: serde_json::from_str(&verdict).map_err(corrupt)?,
                    record: serde_json::from_str(&record).map_err(corrupt)?,
                    reward,
                    reward_breakdown: breakdown
                        .map(|b| serde_json::from_str(&b))
                        .transpose()
                        .map_err(corrupt)?,
                    calibrated: calibrated
                        .map(|b| serde_json::from_str(&b))
                        .transpose()
                        .map_err(corrupt)?,
                    attempts,
                    created_at,
                },
            );
        }
        Ok(out)
    }

    /// Tokens and wall time per role: therapist and patient over every stored reply (messages
    /// without counts, e.g. imported ones, are not replies of ours and are skipped); the judge
    /// over every sample of every judgment in `judge_hash` (judge records written before usage
    /// was recorded count their calls and time with 0 tokens).
    pub fn usage_by_role(&self, judge_hash: &str) -> Result<UsageByRole, StoreError> {
        type Sums = (i64, i64, i64, i64);
        let (speakers, judge): (Vec<(String, Sums)>, Sums) = self.read(|c| {
            let mut st = c.prepare(
                "SELECT speaker, COUNT(completion_tokens), COALESCE(SUM(prompt_tokens), 0),
                        COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(latency_ms), 0)
                 FROM messages WHERE completion_tokens IS NOT NULL GROUP BY speaker",
            )?;
            let rows = st
                .query_map([], |r| {
                    Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let judge = c.query_row(
                "SELECT COALESCE(SUM(json_extract(s.value, '$.attempts')), 0),
                        COALESCE(SUM(json_extract(s.value, '$.prompt_tokens')), 0),
                        COALESCE(SUM(json_extract(s.value, '$.completion_tokens')), 0),
                        COALESCE(SUM(json_extract(s.value, '$.latency_ms')), 0)
                 FROM judgments j, json_each(j.record, '$.samples') s WHERE j.judge_hash = ?1",
                params![judge_hash],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
            Ok((rows, judge))
        })?;
        let usage = |(calls, p, c, ms): Sums| RoleUsage {
            calls: calls.max(0) as u64,
            prompt_tokens: p.max(0) as u64,
            completion_tokens: c.max(0) as u64,
            wall_ms: ms.max(0) as u64,
        };
        let mut out = UsageByRole {
            judge: usage(judge),
            ..UsageByRole::default()
        };
        for (speaker, sums) in speakers {
            match Speaker::parse(&speaker) {
                Some(Speaker::Therapist) => out.therapist = usage(sums),
                Some(Speaker::Patient) => out.patient = usage(sums),
                None => {}
            }
        }
        Ok(out)
    }

    /// `PRAGMA integrity_check` (tests and `recover`).
    pub fn integrity_ok(&self) -> Result<bool, StoreError> {
        self.with(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)))
            .map(|s| s == "ok")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use therapygym_core::{Judgment, UnscoredReason};

    fn defs() -> (Rubric, Taxonomy) {
        (
            therapygym_core::builtin::rubric().unwrap(),
            therapygym_core::builtin::taxonomy().unwrap(),
        )
    }

    #[test]
    fn judge_sets_keep_their_rubric_and_taxonomy() {
        let d = tempfile::tempdir().unwrap();
        let s = RunStore::create(d.path(), &json!({}), "h").unwrap();
        let (rubric, taxonomy) = defs();
        s.ensure_judge_set("j", &json!({"m": 1}), &rubric, &taxonomy)
            .unwrap();
        let sets = s.judge_sets().unwrap();
        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0].rubric().unwrap(), rubric);
        assert_eq!(sets[0].taxonomy().unwrap(), taxonomy);
    }

    #[test]
    fn a_revision_1_store_is_migrated_on_open() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("run.sqlite");
        let c = Connection::open(&db).unwrap();
        // The revision-1 tables as they were shipped (judge_sets without `definitions`).
        c.execute_batch(&SCHEMA.replace(", definitions TEXT);", ");"))
            .unwrap();
        c.execute_batch(
            "INSERT INTO meta VALUES ('schema_revision', '1');
             INSERT INTO manifest VALUES (1, '{}', 'h', 't');
             INSERT INTO judge_sets VALUES ('old', '{}', 't');",
        )
        .unwrap();
        drop(c);
        let s = RunStore::open(d.path()).unwrap();
        let sets = s.judge_sets().unwrap();
        assert_eq!(sets[0].definitions, None);
        let (rubric, taxonomy) = defs();
        s.ensure_judge_set("old", &json!({}), &rubric, &taxonomy)
            .unwrap();
        assert_eq!(s.judge_sets().unwrap()[0].rubric().unwrap(), rubric);
        drop(s);
        // Opening again is a no-op: the revision is current.
        RunStore::open(d.path()).unwrap();
    }

    fn session(id: &str, status: SessionStatus) -> SessionRecord {
        SessionRecord {
            id: id.into(),
            profile_id: "p".into(),
            epoch: 0,
            seed: 42,
            status,
            style: "plain".into(),
            end_reason: Some("turn_limit".into()),
            therapist_system: "t".into(),
            patient_system: "p".into(),
            transcript: Transcript {
                turns: vec![
                    Turn::new(Speaker::Therapist, "hi"),
                    Turn::new(Speaker::Patient, "hello"),
                ],
            },
            error: None,
            duration_ms: 5,
            attempt: 1,
            created_at: timestamp(),
            meta: json!({}),
        }
    }

    #[test]
    fn create_open_and_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("run");
        let s = RunStore::create(&dir, &json!({"a": 1}), "sha256:x").unwrap();
        assert!(dir.join("manifest.json").is_file());
        s.record_attempt("eval", None).unwrap();
        s.insert_session(&session("p#0", SessionStatus::Completed))
            .unwrap();
        drop(s);
        let s = RunStore::open(&dir).unwrap();
        assert_eq!(
            s.manifest().unwrap(),
            (json!({"a": 1}), "sha256:x".to_string())
        );
        let all = s.sessions().unwrap();
        assert_eq!(
            all,
            vec![session("p#0", SessionStatus::Completed)]
                .into_iter()
                .map(|mut x| {
                    x.created_at = all[0].created_at.clone();
                    x
                })
                .collect::<Vec<_>>()
        );
        assert!(
            s.insert_session(&session("p#0", SessionStatus::Completed))
                .is_err(),
            "completed sessions are never overwritten"
        );
        assert!(
            RunStore::create(&dir, &json!({}), "h")
                .unwrap_err()
                .to_string()
                .contains("--resume")
        );
        assert!(s.integrity_ok().unwrap());
    }

    #[test]
    fn a_creation_that_never_committed_its_manifest_is_created_again() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("run");
        std::fs::create_dir(&dir).unwrap();
        // What a version that committed the tables and the revision before the manifest left
        // when killed between them.
        let c = Connection::open(dir.join("run.sqlite")).unwrap();
        c.execute_batch(SCHEMA).unwrap();
        c.execute("INSERT INTO meta VALUES ('schema_revision', '2')", [])
            .unwrap();
        drop(c);
        let e = RunStore::open(&dir).unwrap_err().to_string();
        assert!(
            e.contains("interrupted") && e.contains("same `--out`"),
            "{e}"
        );
        let s = RunStore::create(&dir, &json!({"a": 1}), "h").unwrap();
        assert_eq!(s.manifest().unwrap(), (json!({"a": 1}), "h".to_string()));
        drop(s);
        RunStore::open(&dir).unwrap();
        // A committed run is never replaced.
        let e = RunStore::create(&dir, &json!({}), "h").unwrap_err();
        assert!(e.to_string().contains("--resume"), "{e}");
    }

    #[test]
    fn a_directory_with_other_files_beside_an_empty_database_is_left_alone() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("run.sqlite"), b"").unwrap();
        std::fs::write(d.path().join("notes.txt"), b"mine").unwrap();
        assert!(RunStore::create(d.path(), &json!({}), "h").is_err());
        assert_eq!(std::fs::read(d.path().join("notes.txt")).unwrap(), b"mine");
        // Only the empty database: it is created again.
        std::fs::remove_file(d.path().join("notes.txt")).unwrap();
        RunStore::create(d.path(), &json!({}), "h").unwrap();
    }

    #[test]
    fn a_reader_never_sees_a_session_without_its_messages_while_another_connection_writes() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_path_buf();
        drop(RunStore::create(&dir, &json!({}), "h").unwrap());
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (dir, done) = (dir.clone(), std::sync::Arc::clone(&done));
            std::thread::spawn(move || {
                // Its own connection, as a `serve` process writing beside a reader would be.
                let w = RunStore::open(&dir).unwrap();
                for i in 0..200 {
                    w.insert_session(&session(&format!("s{i:03}"), SessionStatus::Completed))
                        .unwrap();
                }
                done.store(true, std::sync::atomic::Ordering::SeqCst);
            })
        };
        let r = RunStore::open(&dir).unwrap();
        let mut reads = 0;
        loop {
            let finished = done.load(std::sync::atomic::Ordering::SeqCst);
            let all = r.sessions().unwrap();
            reads += 1;
            for s in &all {
                assert_eq!(
                    s.transcript.turns.len(),
                    2,
                    "read {reads}: session {} without its messages",
                    s.id
                );
            }
            if finished {
                assert_eq!(all.len(), 200);
                break;
            }
        }
        writer.join().unwrap();
        assert!(reads > 1);
    }

    #[test]
    fn sessions_from_an_epoch_skip_earlier_ones_with_their_messages() {
        let d = tempfile::tempdir().unwrap();
        let s = RunStore::create(d.path(), &json!({}), "h").unwrap();
        for (id, epoch) in [("a", 0), ("b", 1), ("c", 2)] {
            let mut r = session(id, SessionStatus::Completed);
            r.epoch = epoch;
            s.insert_session(&r).unwrap();
        }
        let later = s.sessions_from_epoch(1).unwrap();
        let ids: Vec<&str> = later.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
        assert!(later.iter().all(|r| r.transcript.turns.len() == 2));
        assert_eq!(s.sessions().unwrap().len(), 3);
    }

    #[test]
    fn usage_by_role_sums_replies_and_every_judge_sample() {
        let d = tempfile::tempdir().unwrap();
        let s = RunStore::create(d.path(), &json!({}), "h").unwrap();
        let mut r = session("a:0", SessionStatus::Completed);
        for (i, t) in r.transcript.turns.iter_mut().enumerate() {
            t.prompt_tokens = Some(10 * (i as u32 + 1));
            t.completion_tokens = Some(i as u32 + 1);
            t.latency_ms = Some(100);
        }
        // An imported message without counts is not a reply of ours.
        r.transcript
            .turns
            .push(Turn::new(Speaker::Therapist, "imported"));
        s.insert_session(&r).unwrap();
        let (rubric, taxonomy) = defs();
        s.ensure_judge_set("j", &json!({}), &rubric, &taxonomy)
            .unwrap();
        let sample = |attempts: u32, p: u64, c: u64, ms: u64| {
            json!({"verdict": {"status": "unscored", "reason": "refusal", "detail": ""},
                   "attempts": attempts, "raw": null, "latency_ms": ms,
                   "prompt_tokens": p, "completion_tokens": c})
        };
        let row = JudgmentRow {
            session_id: "a:0".into(),
            judge_hash: "j".into(),
            verdict: Verdict::Unscored {
                reason: UnscoredReason::Refusal,
                detail: String::new(),
            },
            record: json!({"samples": [sample(3, 300, 30, 50), sample(1, 100, 10, 20)]}),
            reward: None,
            reward_breakdown: None,
            calibrated: None,
            attempts: 4,
            created_at: timestamp(),
        };
        s.insert_judgment(&row).unwrap();
        let u = s.usage_by_role("j").unwrap();
        let role = |calls, prompt_tokens, completion_tokens, wall_ms| RoleUsage {
            calls,
            prompt_tokens,
            completion_tokens,
            wall_ms,
        };
        assert_eq!(u.therapist, role(1, 10, 1, 100));
        assert_eq!(u.patient, role(1, 20, 2, 100));
        assert_eq!(u.judge, role(4, 400, 40, 70));
        assert_eq!(
            s.usage_by_role("other").unwrap().judge,
            RoleUsage::default()
        );
    }

    #[test]
    fn failed_sessions_are_replaced_and_judgments_are_idempotent() {
        let d = tempfile::tempdir().unwrap();
        let s = RunStore::create(d.path(), &json!({}), "h").unwrap();
        s.insert_session(&session("p#0", SessionStatus::Failed))
            .unwrap();
        s.insert_session(&session("p#0", SessionStatus::Completed))
            .unwrap();
        assert_eq!(
            s.session_statuses().unwrap()["p#0"],
            SessionStatus::Completed
        );
        let (rubric, taxonomy) = defs();
        s.ensure_judge_set("j1", &json!({"model": "x"}), &rubric, &taxonomy)
            .unwrap();
        let row = JudgmentRow {
            session_id: "p#0".into(),
            judge_hash: "j1".into(),
            verdict: Verdict::Unscored {
                reason: UnscoredReason::Truncated,
                detail: "cut".into(),
            },
            record: json!({"raw": "{"}),
            reward: None,
            reward_breakdown: None,
            calibrated: None,
            attempts: 3,
            created_at: timestamp(),
        };
        assert!(s.insert_judgment(&row).unwrap());
        assert!(!s.insert_judgment(&row).unwrap());
        let got = s.judgments("j1").unwrap();
        assert_eq!(got["p#0"].reward, None);
        assert_eq!(got["p#0"].verdict, row.verdict);
        let scored = JudgmentRow {
            verdict: Verdict::Scored {
                judgment: Judgment {
                    codes: Vec::new(),
                    ctrs: BTreeMap::new(),
                    safety: BTreeMap::new(),
                },
            },
            reward: Some(0.5),
            judge_hash: "j2".into(),
            ..row
        };
        s.ensure_judge_set("j2", &json!({}), &rubric, &taxonomy)
            .unwrap();
        s.insert_judgment(&scored).unwrap();
        assert_eq!(s.judgments("j2").unwrap()["p#0"].reward, Some(0.5));
        assert_eq!(s.latest_judge_hash().unwrap().as_deref(), Some("j2"));
    }
}
