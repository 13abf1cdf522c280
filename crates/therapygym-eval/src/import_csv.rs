//! `therapygym import-transcripts FILE.csv --format csv …`: utterance-per-row corpora (the layout
//! public counselling corpora use) into a run. Columns are named by flags ([`CsvMapping`]): the
//! dialogue id, the utterance order, the speaker (mapped to our roles with `--speaker-map`) and
//! the text; optional per-dialogue labels (`--label-col`, constant within a dialogue) and
//! per-utterance annotations (`--annotation-col`). Labels and annotations are kept in the
//! session's `meta` (`labels: {COL: value}`, `annotations: {COL: [value|null per message]}`),
//! where `export` and `validate --known-groups` read them.
//!
//! As for JSONL, every bad row is reported in one pass with its line number, and nothing is
//! imported while any row is bad.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value, json};
use therapygym_core::csv::{self, CsvRecord};
use therapygym_core::error::{DataError, Location, Problems, read_to_string};
use therapygym_core::profile::valid_id;
use therapygym_core::{Speaker, Transcript, Turn};
use therapygym_run::RunError;

use crate::import::{ImportedDialogue, write_import};

/// Which CSV columns hold what, and how speaker values map to roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvMapping {
    pub dialogue_col: String,
    pub order_col: String,
    pub speaker_col: String,
    pub text_col: String,
    /// Corpus speaker value → role (`--speaker-map therapist=therapist,client=patient`).
    pub speaker_map: BTreeMap<String, Speaker>,
    /// Per-dialogue labels (a quality rating, a condition), constant within a dialogue.
    pub label_cols: Vec<String>,
    /// Per-utterance codes (a behaviour label per row).
    pub annotation_cols: Vec<String>,
}

/// Parses `--speaker-map` values (`VALUE=ROLE[,VALUE=ROLE…]`, repeatable) into a map.
pub fn parse_speaker_map(values: &[String]) -> Result<BTreeMap<String, Speaker>, RunError> {
    let mut map = BTreeMap::new();
    for pair in values.iter().flat_map(|v| v.split(',')) {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let (value, role) = pair.split_once('=').ok_or_else(|| {
            RunError::Invalid(format!(
                "--speaker-map `{pair}`: expected VALUE=ROLE, e.g. `--speaker-map therapist=therapist,client=patient`"
            ))
        })?;
        let speaker = Speaker::parse(role).ok_or_else(|| {
            RunError::Invalid(format!(
                "--speaker-map `{pair}`: `{role}` is not a role; use therapist or patient"
            ))
        })?;
        if map.insert(value.trim().to_string(), speaker).is_some() {
            return Err(RunError::Invalid(format!(
                "--speaker-map maps `{}` twice",
                value.trim()
            )));
        }
    }
    if map.is_empty() {
        return Err(RunError::Invalid(
            "--speaker-map is empty; e.g. `--speaker-map therapist=therapist,client=patient`"
                .into(),
        ));
    }
    Ok(map)
}

fn at(path: &Path, line: Option<usize>, id: Option<&str>) -> Location {
    Location {
        file: path.into(),
        line,
        id: id.map(String::from),
    }
}

/// The column index of every mapped column, or one error naming all that are missing.
struct Columns {
    dialogue: usize,
    order: usize,
    speaker: usize,
    text: usize,
    labels: Vec<(String, usize)>,
    annotations: Vec<(String, usize)>,
}

impl Columns {
    fn find(header: &CsvRecord, m: &CsvMapping, path: &Path) -> Result<Self, DataError> {
        let names: Vec<&str> = header.fields.iter().map(|f| f.trim()).collect();
        let mut missing = Vec::new();
        let mut find = |flag: &str, col: &str| {
            let i = names.iter().position(|n| *n == col);
            if i.is_none() {
                missing.push(format!("`{col}` (--{flag})"));
            }
            i.unwrap_or(0)
        };
        let dialogue = find("dialogue-col", &m.dialogue_col);
        let order = find("order-col", &m.order_col);
        let speaker = find("speaker-col", &m.speaker_col);
        let text = find("text-col", &m.text_col);
        let labels = m
            .label_cols
            .iter()
            .map(|c| (c.clone(), find("label-col", c)))
            .collect();
        let annotations = m
            .annotation_cols
            .iter()
            .map(|c| (c.clone(), find("annotation-col", c)))
            .collect();
        if !missing.is_empty() {
            return Err(DataError::invalid(
                at(path, Some(header.line), None),
                format!(
                    "the header has no column {}; its columns: {}",
                    missing.join(", "),
                    names.join(", ")
                ),
            ));
        }
        Ok(Self {
            dialogue,
            order,
            speaker,
            text,
            labels,
            annotations,
        })
    }
}

/// One good row.
struct Row {
    line: usize,
    order: i64,
    speaker: Speaker,
    text: String,
    labels: Vec<String>,
    annotations: Vec<Option<String>>,
}

/// Every dialogue of an utterance-per-row CSV, rows ordered by the order column, dialogues in
/// the order they first appear. All bad rows are reported in one pass.
pub fn parse_csv_transcripts(
    text: &str,
    path: &Path,
    m: &CsvMapping,
) -> Result<Vec<ImportedDialogue>, DataError> {
    let records = csv::parse(text, path)?;
    let Some((header, rows)) = records.split_first() else {
        return Err(DataError::invalid(
            at(path, None, None),
            "the file is empty; expected a header row and one row per utterance",
        ));
    };
    let cols = Columns::find(header, m, path)?;
    let mut problems = Problems::default();
    // Dialogue id → its rows, in first-appearance order.
    let mut order: Vec<String> = Vec::new();
    let mut dialogues: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for r in rows {
        match parse_row(r, &cols, m, path) {
            Ok((id, row)) => {
                let rows = dialogues.entry(id.clone()).or_insert_with(|| {
                    order.push(id.clone());
                    Vec::new()
                });
                if let Some(first) = rows.iter().find(|x| x.order == row.order) {
                    problems.push(DataError::field(
                        at(path, Some(row.line), Some(&id)),
                        &m.order_col,
                        format!(
                            "duplicate order {} in this dialogue (also on line {})",
                            row.order, first.line
                        ),
                    ));
                } else {
                    rows.push(row);
                }
            }
            Err(e) => problems.push(e),
        }
    }
    let mut out = Vec::new();
    for id in order {
        let Some(mut rows) = dialogues.remove(&id) else {
            continue;
        };
        rows.sort_by_key(|r| r.order);
        match assemble(&id, &rows, &cols, m, path) {
            Ok(d) => out.push(d),
            Err(errors) => errors.into_iter().for_each(|e| problems.push(e)),
        }
    }
    problems.finish()?;
    if out.is_empty() {
        return Err(DataError::invalid(
            at(path, None, None),
            "the file holds no dialogues (only a header)",
        ));
    }
    Ok(out)
}

fn parse_row(
    r: &CsvRecord,
    cols: &Columns,
    m: &CsvMapping,
    path: &Path,
) -> Result<(String, Row), DataError> {
    let cell = |i: usize| r.fields.get(i).map(|s| s.trim()).unwrap_or("");
    let id = cell(cols.dialogue);
    if id.is_empty() {
        return Err(DataError::field(
            at(path, Some(r.line), None),
            &m.dialogue_col,
            "missing; every row needs its dialogue's id",
        ));
    }
    let loc = at(path, Some(r.line), Some(id));
    if !valid_id(id) {
        return Err(DataError::field(
            loc,
            &m.dialogue_col,
            "use at most 128 characters from A-Z a-z 0-9 . _ : -",
        ));
    }
    let order_text = cell(cols.order);
    let order = order_text.parse::<i64>().map_err(|_| {
        DataError::field(
            loc.clone(),
            &m.order_col,
            format!("`{order_text}` is not a whole number (the utterance's position)"),
        )
    })?;
    let who = cell(cols.speaker);
    if who.is_empty() {
        return Err(DataError::field(
            loc,
            &m.speaker_col,
            "missing; every utterance needs a speaker",
        ));
    }
    let speaker = *m.speaker_map.get(who).ok_or_else(|| {
        DataError::field(
            loc.clone(),
            &m.speaker_col,
            format!(
                "`{who}` is not in --speaker-map (it maps {})",
                m.speaker_map
                    .keys()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })?;
    // The text keeps its inner layout; only a blank cell is an error.
    let text = r.fields.get(cols.text).map(String::as_str).unwrap_or("");
    if text.trim().is_empty() {
        return Err(DataError::field(
            loc,
            &m.text_col,
            "empty; every utterance needs its text",
        ));
    }
    let row = Row {
        line: r.line,
        order,
        speaker,
        text: text.trim().to_string(),
        labels: cols
            .labels
            .iter()
            .map(|(_, i)| cell(*i).to_string())
            .collect(),
        annotations: cols
            .annotations
            .iter()
            .map(|(_, i)| Some(cell(*i).to_string()).filter(|s| !s.is_empty()))
            .collect(),
    };
    Ok((id.to_string(), row))
}

/// A dialogue's transcript and meta from its sorted rows, or every problem with it.
fn assemble(
    id: &str,
    rows: &[Row],
    cols: &Columns,
    m: &CsvMapping,
    path: &Path,
) -> Result<ImportedDialogue, Vec<DataError>> {
    let mut errors = Vec::new();
    let first_line = rows.iter().map(|r| r.line).min();
    let mut labels = Map::new();
    for (k, (col, _)) in cols.labels.iter().enumerate() {
        // Empty cells are allowed (corpora often fill a label on one row only); the values
        // given must agree.
        let mut seen: Option<(&str, usize)> = None;
        for r in rows {
            let v = r.labels[k].as_str();
            if v.is_empty() {
                continue;
            }
            match seen {
                None => seen = Some((v, r.line)),
                Some((w, line)) if w != v => {
                    errors.push(DataError::field(
                        at(path, Some(r.line), Some(id)),
                        col,
                        format!(
                            "`{v}` here but `{w}` on line {line}; a label must be constant within a dialogue"
                        ),
                    ));
                    break;
                }
                Some(_) => {}
            }
        }
        if let Some((v, _)) = seen {
            labels.insert(col.clone(), json!(v));
        }
    }
    if !rows.iter().any(|r| r.speaker == Speaker::Therapist) {
        errors.push(DataError::field(
            at(path, first_line, Some(id)),
            &m.speaker_col,
            "no therapist utterance in this dialogue: there is nothing to judge",
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let turns = rows
        .iter()
        .map(|r| Turn::new(r.speaker, r.text.clone()))
        .collect();
    let mut meta = Map::new();
    if !cols.labels.is_empty() {
        meta.insert("labels".into(), Value::Object(labels));
    }
    if !cols.annotations.is_empty() {
        let annotations: Map<String, Value> = cols
            .annotations
            .iter()
            .enumerate()
            .map(|(k, (col, _))| {
                let values: Vec<Value> = rows.iter().map(|r| json!(r.annotations[k])).collect();
                (col.clone(), Value::Array(values))
            })
            .collect();
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    Ok(ImportedDialogue {
        id: id.to_string(),
        profile_id: "external".into(),
        transcript: Transcript { turns },
        meta,
    })
}

/// Creates a run at `out` holding the dialogues of the CSV `file`. Returns how many were
/// imported.
pub fn import_csv_transcripts(
    file: &Path,
    out: &Path,
    judge: &str,
    mapping: &CsvMapping,
) -> Result<usize, RunError> {
    let text = read_to_string(file)?;
    let dialogues = parse_csv_transcripts(&text, file, mapping)?;
    let roles: BTreeMap<&str, &str> = mapping
        .speaker_map
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // The mapping is part of the data: another mapping of the same file is another import.
    let columns = json!({
        "format": "csv",
        "dialogue_col": mapping.dialogue_col, "order_col": mapping.order_col,
        "speaker_col": mapping.speaker_col, "text_col": mapping.text_col,
        "speaker_map": roles, "label_cols": mapping.label_cols,
        "annotation_cols": mapping.annotation_cols,
    });
    write_import(
        file,
        &text,
        "transcripts.csv",
        &dialogues,
        judge,
        out,
        Some(columns),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping() -> CsvMapping {
        CsvMapping {
            dialogue_col: "dialogue".into(),
            order_col: "turn".into(),
            speaker_col: "speaker".into(),
            text_col: "text".into(),
            speaker_map: parse_speaker_map(&["counsellor=therapist,client=patient".into()])
                .unwrap(),
            label_cols: vec!["quality".into()],
            annotation_cols: vec!["code".into()],
        }
    }

    const GOOD: &str = "dialogue,turn,speaker,text,quality,code\n\
d1,2,client,\"I drink, sometimes\",high,\n\
d1,1,counsellor,What brings you here?,high,question\n\
d1,3,counsellor,You drink sometimes.,,reflection\n\
d2,1,counsellor,Hello.,low,\n";

    #[test]
    fn rows_become_ordered_dialogues_with_labels_and_annotations() {
        let v = parse_csv_transcripts(GOOD, Path::new("c.csv"), &mapping()).unwrap();
        assert_eq!(v.len(), 2);
        let d1 = &v[0];
        assert_eq!(d1.id, "d1");
        let texts: Vec<&str> = d1
            .transcript
            .turns
            .iter()
            .map(|t| t.text.as_str())
            .collect();
        assert_eq!(
            texts,
            [
                "What brings you here?",
                "I drink, sometimes",
                "You drink sometimes."
            ]
        );
        assert_eq!(d1.transcript.turns[1].speaker, Speaker::Patient);
        assert_eq!(d1.meta["labels"], json!({"quality": "high"}));
        assert_eq!(
            d1.meta["annotations"],
            json!({"code": ["question", null, "reflection"]})
        );
        assert_eq!(v[1].meta["labels"], json!({"quality": "low"}));
    }

    #[test]
    fn every_bad_row_is_reported_with_its_line() {
        let text = "dialogue,turn,speaker,text,quality,code\n\
d1,1,counsellor,Hi,high,\n\
d1,1,client,Hello,high,\n\
d1,2,,Hello,high,\n\
d1,3,narrator,Once upon a time,high,\n\
d1,4,client,   ,high,\n\
d1,5,client,Fine,low,\n\
d2,x,client,Hi,low,\n";
        let e = parse_csv_transcripts(text, Path::new("c.csv"), &mapping())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("6 problems:"), "{e}");
        for want in [
            "c.csv:3 (`d1`): field `turn`: duplicate order 1 in this dialogue (also on line 2)",
            "c.csv:4 (`d1`): field `speaker`: missing",
            "c.csv:5 (`d1`): field `speaker`: `narrator` is not in --speaker-map",
            "c.csv:6 (`d1`): field `text`: empty",
            "c.csv:7 (`d1`): field `quality`: `low` here but `high` on line 2",
            "c.csv:8 (`d2`): field `turn`: `x` is not a whole number",
        ] {
            assert!(e.contains(want), "missing {want:?} in {e}");
        }
    }

    #[test]
    fn missing_columns_and_bad_maps_are_named() {
        let e = parse_csv_transcripts(
            "dialogue,speaker,text\nd1,client,x\n",
            Path::new("c.csv"),
            &mapping(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("c.csv:1: the header has no column `turn` (--order-col), `quality` (--label-col), `code` (--annotation-col)"),
            "{e}"
        );
        assert!(parse_speaker_map(&["client".into()]).is_err());
        assert!(parse_speaker_map(&["client=narrator".into()]).is_err());
        assert!(parse_speaker_map(&["a=therapist".into(), "a=patient".into()]).is_err());
        let e = parse_csv_transcripts(
            "dialogue,turn,speaker,text,quality,code\nd1,1,client,x,,\n",
            Path::new("c.csv"),
            &mapping(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no therapist utterance"), "{e}");
    }

    mod fuzz {
        //! Property tests: arbitrary bytes and mutations of a good corpus are imported or
        //! rejected with a typed error naming the file, never a panic; what is imported has
        //! valid ids, a therapist utterance and one annotation per message.
        use super::*;
        use proptest::prelude::*;
        use therapygym_testkit::fuzz;

        fn holds(text: &str) -> Result<(), TestCaseError> {
            match parse_csv_transcripts(text, Path::new("fuzz.csv"), &mapping()) {
                Ok(v) => {
                    for d in &v {
                        prop_assert!(valid_id(&d.id), "{}", d.id);
                        prop_assert!(
                            d.transcript
                                .turns
                                .iter()
                                .any(|t| t.speaker == Speaker::Therapist)
                        );
                        let n = d.meta["annotations"]["code"].as_array().map(Vec::len);
                        prop_assert_eq!(n, Some(d.transcript.turns.len()));
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    prop_assert!(msg.contains("fuzz.csv"), "{msg}");
                }
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(fuzz::config(128))]

            #[test]
            fn arbitrary_or_mutated_corpora(text in prop_oneof![
                fuzz::mutated_text(GOOD),
                fuzz::bytes(1024).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
            ]) {
                holds(&text)?;
            }
        }
    }
}
