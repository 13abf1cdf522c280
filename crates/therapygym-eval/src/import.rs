//! `therapygym import-transcripts FILE.jsonl --out DIR`: external dialogues into a run, ready for
//! `therapygym judge DIR` and `therapygym validate --run DIR`.
//!
//! Each line: `{"session_id" | "dialogue_id": ID, "profile_id"?: ID, "messages" | "turns":
//! [{"role": "therapist"|"patient"|"assistant"|"user", "content" | "text": "…"}]}` — the export
//! format of `therapygym export` (other keys are ignored, so an export file imports as is).

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Map, Value, json};
use therapygym_core::error::{DataError, Location, Problems, read_to_string};
use therapygym_core::profile::valid_id;
use therapygym_core::{Speaker, Transcript, Turn};
use therapygym_store::{RunStore, SessionRecord, SessionStatus};

use therapygym_run::{InputFiles, OutDir, RunConfig, RunError, Staged};

/// Every dialogue of a JSONL file. All bad lines are reported in one pass (the first
/// [`therapygym_core::error::MAX_REPORTED`] listed, the rest counted), so a corpus is fixed in
/// one round, and nothing is imported while any line is bad.
pub fn parse_transcripts(
    text: &str,
    path: &Path,
) -> Result<Vec<(String, String, Transcript)>, DataError> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut problems = Problems::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = Location {
            file: path.into(),
            line: Some(i + 1),
            id: None,
        };
        match parse_line(line, at) {
            Ok((at, dialogue)) => {
                if seen.insert(dialogue.0.clone()) {
                    out.push(dialogue);
                } else {
                    problems.push(DataError::field(
                        at,
                        "session_id",
                        "duplicate id in this file",
                    ));
                }
            }
            Err(e) => problems.push(e),
        }
    }
    problems.finish()?;
    if out.is_empty() {
        return Err(DataError::invalid(
            Location {
                file: path.into(),
                line: None,
                id: None,
            },
            "the file holds no dialogues",
        ));
    }
    Ok(out)
}

/// One line: its location (now with the id) and its dialogue.
fn parse_line(
    line: &str,
    at: Location,
) -> Result<(Location, (String, String, Transcript)), DataError> {
    let v: Value = serde_json::from_str(line)
        .map_err(|e| DataError::invalid(at.clone(), format!("not a JSON object ({e})")))?;
    let id = ["session_id", "dialogue_id", "id"]
        .iter()
        .find_map(|k| {
            v.get(*k).and_then(|x| {
                x.as_str()
                    .map(String::from)
                    .or_else(|| x.as_u64().map(|n| n.to_string()))
            })
        })
        .ok_or_else(|| {
            DataError::field(
                at.clone(),
                "session_id",
                "missing; every dialogue needs an id (`session_id` or `dialogue_id`)",
            )
        })?;
    let at = Location {
        id: Some(id.clone()),
        ..at
    };
    if !valid_id(&id) {
        return Err(DataError::field(
            at,
            "session_id",
            "use at most 128 characters from A-Z a-z 0-9 . _ : -",
        ));
    }
    let profile_id = v
        .get("profile_id")
        .and_then(Value::as_str)
        .unwrap_or("external")
        .to_string();
    let msgs = v
        .get("messages")
        .or_else(|| v.get("turns"))
        .and_then(Value::as_array)
        .ok_or_else(|| {
            DataError::field(
                at.clone(),
                "messages",
                "missing; expected a list of {\"role\", \"content\"}",
            )
        })?;
    let mut turns = Vec::new();
    for (k, m) in msgs.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        if role == "system" {
            continue;
        }
        let speaker = Speaker::parse(role).ok_or_else(|| {
            DataError::field(
                at.clone(),
                format!("messages[{k}].role"),
                format!("\"{role}\" is not a role; use therapist/assistant or patient/user"),
            )
        })?;
        let text = m
            .get("content")
            .or_else(|| m.get("text"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                DataError::field(
                    at.clone(),
                    format!("messages[{k}].content"),
                    "missing; expected a string",
                )
            })?;
        turns.push(Turn::new(speaker, text));
    }
    if !turns.iter().any(|t| t.speaker == Speaker::Therapist) {
        return Err(DataError::field(
            at,
            "messages",
            "no therapist message: there is nothing to judge",
        ));
    }
    Ok((at, (id, profile_id, Transcript { turns })))
}

/// One dialogue to import, whatever the file format.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedDialogue {
    pub id: String,
    pub profile_id: String,
    pub transcript: Transcript,
    /// Kept in the session's `meta` beside `imported_from` (labels, annotations).
    pub meta: Map<String, Value>,
}

/// Creates a run at `out` holding the dialogues of `file`. Returns how many were imported.
pub fn import_transcripts(file: &Path, out: &Path, judge: &str) -> Result<usize, RunError> {
    let text = read_to_string(file)?;
    let dialogues: Vec<ImportedDialogue> = parse_transcripts(&text, file)?
        .into_iter()
        .map(|(id, profile_id, transcript)| ImportedDialogue {
            id,
            profile_id,
            transcript,
            meta: Map::new(),
        })
        .collect();
    write_import(
        file,
        &text,
        "transcripts.jsonl",
        &dialogues,
        judge,
        out,
        None,
    )
}

/// The run-writing half of every importer: a new run at `out` (staged, so nothing is
/// half-imported) whose manifest names the source file and `mapping` (how its columns were
/// read, part of the config hash), one completed session per dialogue. Returns the count.
pub(crate) fn write_import(
    file: &Path,
    text: &str,
    default_name: &str,
    dialogues: &[ImportedDialogue],
    judge: &str,
    out: &Path,
    mapping: Option<Value>,
) -> Result<usize, RunError> {
    // The run names its source by file name only (no path of this machine in a manifest).
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| default_name.into());
    let mut config = RunConfig::new("baseline");
    config.therapist = format!("import:{name}");
    config.patient = "import".into();
    config.judge = judge.to_string();
    let sha = therapygym_core::hash::text_hash(text);
    // Without a mapping the hash input is as it always was (JSONL imports keep their hash).
    let hash = therapygym_core::hash::content_hash(&match &mapping {
        None => json!({"import": sha}),
        Some(m) => json!({"import": sha, "mapping": m}),
    });
    let mut source = json!({"file": name, "sha256": sha, "dialogues": dialogues.len()});
    if let (Some(m), Some(obj)) = (mapping, source.as_object_mut()) {
        obj.insert("mapping".into(), m);
    }
    let manifest = json!({
        "schema_revision": 1, "kind": "import", "run_id": uuid::Uuid::now_v7().to_string(),
        "created_at": therapygym_store::timestamp(), "config_hash": hash, "config": config,
        "source": source,
    });
    let staged = Staged::new(
        OutDir::Given(out.to_path_buf()),
        &InputFiles::default(),
        "choose another `--out` (an import always creates a new run)",
    )?;
    let store = staged.commit(&manifest, &hash, |store| {
        store.record_attempt("import-transcripts", None)?;
        insert_dialogues(store, dialogues, &name)
    })?;
    Ok(store.session_statuses()?.len())
}

fn insert_dialogues(
    store: &RunStore,
    dialogues: &[ImportedDialogue],
    source: &str,
) -> Result<(), RunError> {
    for d in dialogues {
        let mut meta = Map::new();
        meta.insert("imported_from".into(), json!(source));
        meta.extend(d.meta.clone());
        store.insert_session(&SessionRecord {
            id: d.id.clone(),
            profile_id: d.profile_id.clone(),
            epoch: 0,
            seed: therapygym_core::seed::derive("import", &d.id, 0, None),
            status: SessionStatus::Completed,
            style: String::new(),
            end_reason: None,
            therapist_system: String::new(),
            patient_system: String::new(),
            transcript: d.transcript.clone(),
            error: None,
            duration_ms: 0,
            attempt: 1,
            created_at: therapygym_store::timestamp(),
            meta: Value::Object(meta),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_export_records_and_reports_bad_lines() {
        let p = Path::new("d.jsonl");
        let ok = r#"{"session_id":"d1","messages":[{"role":"therapist","content":"Hi"},{"role":"patient","content":"Hello"}],"judgment":null}
{"dialogue_id":"d2","turns":[{"role":"assistant","text":"Hi"}]}"#;
        let v = parse_transcripts(ok, p).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].2.turns[0].speaker, Speaker::Therapist);
        let e = parse_transcripts(
            r#"{"session_id":"d1","messages":[{"role":"narrator","content":"x"}]}"#,
            p,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("d.jsonl:1 (`d1`): field `messages[0].role`"),
            "{e}"
        );
        let e = parse_transcripts("{\"messages\":[]}", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("field `session_id`: missing"), "{e}");
    }

    #[test]
    fn every_bad_line_is_reported_in_one_pass() {
        let p = Path::new("d.jsonl");
        let text = [
            r#"{"session_id":"d1","messages":[{"role":"therapist","content":"Hi"}]}"#,
            "not json",
            r#"{"session_id":"d1","messages":[{"role":"therapist","content":"Again"}]}"#,
            r#"{"session_id":"d3","messages":[{"role":"patient","content":"Only me"}]}"#,
        ]
        .join("\n");
        let e = parse_transcripts(&text, p).unwrap_err().to_string();
        assert!(e.starts_with("3 problems:"), "{e}");
        assert!(e.contains("d.jsonl:2"), "{e}");
        assert!(
            e.contains("d.jsonl:3 (`d1`): field `session_id`: duplicate"),
            "{e}"
        );
        assert!(
            e.contains("d.jsonl:4 (`d3`): field `messages`: no therapist"),
            "{e}"
        );
    }

    mod fuzz {
        //! Property tests: arbitrary bytes and mutations of export records are imported or
        //! rejected with a typed error naming the file, never a panic; what is imported has a
        //! valid id and a therapist message.
        #![allow(clippy::unwrap_used)]
        use super::*;
        use proptest::prelude::*;
        use therapygym_testkit::fuzz;

        const EXPORT: &str = r#"{"session_id":"d1","profile_id":"tg-001","messages":[{"role":"therapist","content":"Hi"},{"role":"patient","content":"Hello"}],"judgment":null}
{"dialogue_id":"d2","turns":[{"role":"system","content":"s"},{"role":"assistant","text":"Hi"},{"role":"user","text":"Hey"}]}
{"id":3,"messages":[{"role":"therapist","content":"Hi"}]}"#;

        fn holds(text: &str) -> Result<(), TestCaseError> {
            match parse_transcripts(text, Path::new("fuzz.jsonl")) {
                Ok(v) => {
                    for (id, _, t) in &v {
                        prop_assert!(valid_id(id), "{id}");
                        prop_assert!(t.turns.iter().any(|t| t.speaker == Speaker::Therapist));
                        let _ = t.hash();
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    prop_assert!(msg.contains("fuzz.jsonl"), "{msg}");
                }
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(fuzz::config(128))]

            #[test]
            fn arbitrary_bytes(bytes in fuzz::bytes(1024)) {
                holds(&String::from_utf8_lossy(&bytes))?;
            }

            #[test]
            fn mutated_records(text in prop_oneof![fuzz::mutated_jsonl(EXPORT), fuzz::mutated_text(EXPORT)]) {
                holds(&text)?;
            }
        }
    }
}
