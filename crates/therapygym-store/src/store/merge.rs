//! Copying the rows of other run stores into this one (`therapygym merge`): the stores are
//! attached and copied table by table in one transaction, so a merge is all or nothing and
//! every byte (transcripts, token counts, judgments, rewards) stays as the shards stored it.

use std::path::Path;

use rusqlite::{OptionalExtension, params};

use super::{RunStore, StoreError};

/// Tables copied in full, in foreign-key order. Profiles and judgment sets are shared by the
/// shards of one plan (same ids, same content), so duplicates of those are skipped; a session
/// in two stores is an error (shards must be disjoint).
const COPIES: [(&str, &str); 6] = [
    (
        "profiles",
        "INSERT OR IGNORE INTO main.profiles SELECT * FROM src.profiles",
    ),
    (
        "judgment sets",
        "INSERT OR IGNORE INTO main.judge_sets SELECT * FROM src.judge_sets",
    ),
    (
        "sessions",
        "INSERT INTO main.sessions SELECT * FROM src.sessions",
    ),
    (
        "messages",
        "INSERT INTO main.messages SELECT * FROM src.messages",
    ),
    (
        "judgments",
        "INSERT INTO main.judgments SELECT * FROM src.judgments",
    ),
    (
        "rewards",
        "INSERT INTO main.rewards SELECT * FROM src.rewards",
    ),
];

impl RunStore {
    /// Copies every profile, session (with its messages), judgment set, judgment and reward of
    /// the runs in `sources` into this store; returns the number of sessions copied. Sessions
    /// must not repeat across stores (or be here already): the first repeated id is named.
    /// Each source is copied in its own transaction (SQLite cannot attach inside one), so call
    /// it on a store being created (a staged run), which is discarded whole on an error.
    pub fn absorb(&self, sources: &[&Path]) -> Result<usize, StoreError> {
        let mut sessions = 0;
        for dir in sources {
            sessions += self.absorb_one(dir)?;
        }
        Ok(sessions)
    }

    fn absorb_one(&self, dir: &Path) -> Result<usize, StoreError> {
        let db = dir.join("run.sqlite");
        let copied = self.with(|c| {
            c.execute("ATTACH DATABASE ?1 AS src", params![db.to_string_lossy()])?;
            let result = (|| {
                let tx = c.transaction()?;
                let repeated: Option<String> = tx
                    .query_row(
                        "SELECT id FROM src.sessions WHERE id IN (SELECT id FROM main.sessions) ORDER BY id LIMIT 1",
                        [],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(id) = repeated {
                    return Ok(Err(id));
                }
                let mut sessions = 0;
                for (table, sql) in COPIES {
                    let n = tx.execute(sql, [])?;
                    if table == "sessions" {
                        sessions = n;
                    }
                }
                tx.commit()?;
                Ok(Ok(sessions))
            })();
            c.execute("DETACH DATABASE src", [])?;
            result
        })?;
        copied.map_err(|id| StoreError::Invalid {
            path: dir.to_path_buf(),
            message: format!(
                "session `{id}` is also in another of the runs given; shards must be disjoint (each shard I/N of one plan once)"
            ),
        })
    }
}
