//! Reading a ratings file: long format (one row per dialogue, rater and item), CSV or JSONL, plus
//! the wide layout (`docs/validate.md`) (one column per item id). Every problem names the file, the
//! line and what was expected; nothing malformed is skipped. An empty score is *unscored*: the
//! row is kept (and counted) but never enters a statistic, and is never read as 0.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;
use therapygym_core::error::{Problems, read_to_string};
use therapygym_core::{DataError, Location, Rubric, Taxonomy};

use crate::error::ValidateError;
use therapygym_core::csv;

/// Column names (and their §5.3 aliases) of the long format.
pub const DIALOGUE_KEYS: [&str; 2] = ["dialogue_id", "session_id"];
/// The rater's name.
pub const RATER_KEYS: [&str; 2] = ["rater", "rater_id"];
/// The CTRS item or safety label id.
pub const ITEM_KEYS: [&str; 2] = ["item", "dimension"];
/// The score (0..6 for an item, 0/1 for a label, empty for unscored).
pub const SCORE_KEYS: [&str; 2] = ["score", "value"];
/// Optional: `human` or `model`, checked against `--judge-rater`.
pub const RATER_KIND_KEY: &str = "rater_kind";
/// Free-text columns the wide layout tolerates besides the ids (the long layout ignores every
/// column it does not use).
pub const WIDE_TEXT_KEYS: [&str; 3] = ["rationale", "notes", "comment"];

/// Whether an id is a CTRS item or a safety label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// A rubric item, scored `min_score..=max_score` (0..6 for the CTRS).
    Item,
    /// A safety label, 0 or 1.
    Label,
}

/// One rubric item as the report needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CatalogItem {
    /// The item id.
    pub id: String,
    /// Whether the item enters the reward (and so the session score).
    pub reward: bool,
}

/// The ids a ratings file may use: the rubric's items and the taxonomy's labels (enabled or not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Catalog {
    /// Rubric items in rubric order.
    pub items: Vec<CatalogItem>,
    /// Safety label ids in taxonomy order.
    pub labels: Vec<String>,
    /// Lowest item score.
    pub min_score: u8,
    /// Highest item score.
    pub max_score: u8,
    /// `rubric-id/version`.
    pub rubric: String,
    /// `taxonomy-id/version`.
    pub taxonomy: String,
}

impl Catalog {
    /// The ids of `rubric` and every label of `taxonomy` (disabled extension labels included,
    /// so expert ratings of them are accepted).
    pub fn new(rubric: &Rubric, taxonomy: &Taxonomy) -> Self {
        Self {
            items: rubric
                .items
                .iter()
                .map(|i| CatalogItem {
                    id: i.id.clone(),
                    reward: i.reward,
                })
                .collect(),
            labels: taxonomy.labels.iter().map(|l| l.id.clone()).collect(),
            min_score: rubric.min_score,
            max_score: rubric.max_score,
            rubric: rubric.version_id(),
            taxonomy: taxonomy.version_id(),
        }
    }

    /// The shipped CTRS rubric and safety taxonomy.
    pub fn builtin() -> Result<Self, DataError> {
        Ok(Self::new(
            &therapygym_core::builtin::rubric()?,
            &therapygym_core::builtin::taxonomy()?,
        ))
    }

    /// The rubric and taxonomy files given, or the shipped ones.
    pub fn load(rubric: Option<&Path>, taxonomy: Option<&Path>) -> Result<Self, DataError> {
        let rubric = match rubric {
            Some(p) => therapygym_core::builtin::load_rubric(p)?,
            None => therapygym_core::builtin::rubric()?,
        };
        let taxonomy = match taxonomy {
            Some(p) => Taxonomy::parse(&read_to_string(p)?, p)?,
            None => therapygym_core::builtin::taxonomy()?,
        };
        Ok(Self::new(&rubric, &taxonomy))
    }

    /// What `id` is, if known.
    pub fn dimension(&self, id: &str) -> Option<Dimension> {
        if self.items.iter().any(|i| i.id == id) {
            Some(Dimension::Item)
        } else if self.labels.iter().any(|l| l == id) {
            Some(Dimension::Label)
        } else {
            None
        }
    }

    /// The integer labels of the item scale (`min_score..=max_score`), for kappa.
    pub fn scale(&self) -> Vec<i64> {
        (i64::from(self.min_score)..=i64::from(self.max_score)).collect()
    }

    fn known_ids(&self) -> String {
        let items: Vec<&str> = self.items.iter().map(|i| i.id.as_str()).collect();
        format!(
            "a CTRS item ({}) or a safety label ({})",
            items.join(", "),
            self.labels.join(", ")
        )
    }
}

/// `human` (an expert) or `model` (a judge), from the optional `rater_kind` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RaterKind {
    /// A human expert.
    Human,
    /// A model (judge).
    Model,
}

/// One rating as read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RatingRow {
    /// 1-based line the record starts on.
    pub line: usize,
    /// Dialogue (= session) id.
    pub dialogue: String,
    /// Rater name.
    pub rater: String,
    /// The `rater_kind` column, when present and non-empty.
    pub rater_kind: Option<RaterKind>,
    /// Item or label id.
    pub item: String,
    /// Whether `item` is a CTRS item or a safety label.
    pub dimension: Dimension,
    /// The score (labels: 0.0 or 1.0); `None` = unscored (empty in the file).
    pub score: Option<f64>,
}

/// Which layout the file used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// One row per (dialogue, rater, item).
    Long,
    /// One row per (dialogue, rater) with a column per item id.
    Wide,
    /// JSONL whose records use either layout.
    Mixed,
}

/// A parsed, row-level-validated ratings file: ids known, scores in range, no duplicates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RatingsFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its layout.
    pub layout: Layout,
    /// Every rating, unscored ones included, in file order.
    pub rows: Vec<RatingRow>,
}

impl RatingsFile {
    /// Ratings left empty (unscored), which no statistic uses.
    pub fn unscored(&self) -> usize {
        self.rows.iter().filter(|r| r.score.is_none()).count()
    }
}

/// Reads and checks a ratings file (CSV, or JSONL for `.jsonl`/`.ndjson`/`.json` or when the
/// first character is `{`).
pub fn read_ratings(path: &Path, catalog: &Catalog) -> Result<RatingsFile, ValidateError> {
    let text = read_to_string(path)?;
    Ok(parse_ratings(&text, path, catalog)?)
}

/// Parses ratings text; `path` is only used in messages and to pick CSV or JSONL.
pub fn parse_ratings(text: &str, path: &Path, catalog: &Catalog) -> Result<RatingsFile, DataError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let jsonl = match ext.as_deref() {
        Some("jsonl" | "ndjson" | "json") => true,
        Some("csv") => false,
        _ => text
            .trim_start_matches('\u{feff}')
            .trim_start()
            .starts_with('{'),
    };
    let mut b = Builder {
        path,
        catalog,
        rows: Vec::new(),
        seen: BTreeMap::new(),
    };
    let layout = if jsonl { b.jsonl(text)? } else { b.csv(text)? };
    if b.rows.is_empty() {
        return Err(DataError::invalid(
            loc(path, None, None),
            "no ratings in the file; expected a header `dialogue_id,rater,item,score` and one row per rating (or JSONL records with those keys)",
        ));
    }
    Ok(RatingsFile {
        path: path.to_path_buf(),
        layout,
        rows: b.rows,
    })
}

fn loc(path: &Path, line: Option<usize>, id: Option<&str>) -> Location {
    Location {
        file: path.into(),
        line,
        id: id.map(str::to_owned),
    }
}

/// A field value before interpretation.
#[derive(Debug, Clone, Copy)]
enum Raw<'a> {
    Text(&'a str),
    Json(&'a Value),
}

impl Raw<'_> {
    fn is_empty(&self) -> bool {
        match self {
            Raw::Text(s) => s.trim().is_empty(),
            Raw::Json(Value::Null) => true,
            Raw::Json(Value::String(s)) => s.trim().is_empty(),
            Raw::Json(_) => false,
        }
    }

    fn describe(&self) -> String {
        match self {
            Raw::Text(s) => format!("`{}`", s.trim()),
            Raw::Json(v) => format!("`{v}`"),
        }
    }
}

/// One record: its line and its (key, value) fields.
struct Record<'a> {
    line: usize,
    fields: Vec<(&'a str, Raw<'a>)>,
}

impl<'a> Record<'a> {
    fn get(&self, key: &str) -> Option<Raw<'a>> {
        self.fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// The value under the one alias of `keys` that is present; both present is an error.
    fn get_any(
        &self,
        keys: &[&str],
        path: &Path,
    ) -> Result<Option<(&'static str, Raw<'a>)>, DataError> {
        let mut found = None;
        for k in keys {
            if let Some(v) = self.get(k) {
                if let Some((first, _)) = found {
                    return Err(DataError::invalid(
                        loc(path, Some(self.line), None),
                        format!("both `{first}` and `{k}` are given; they mean the same, keep one"),
                    ));
                }
                found = Some((static_key(k), v));
            }
        }
        Ok(found)
    }
}

/// The alias tables are `'static`; map a matched key back to its static spelling.
fn static_key(k: &str) -> &'static str {
    DIALOGUE_KEYS
        .iter()
        .chain(&RATER_KEYS)
        .chain(&ITEM_KEYS)
        .chain(&SCORE_KEYS)
        .find(|s| **s == k)
        .copied()
        .unwrap_or("field")
}

struct Builder<'p> {
    path: &'p Path,
    catalog: &'p Catalog,
    rows: Vec<RatingRow>,
    /// (dialogue, rater, item) -> line of its first rating.
    seen: BTreeMap<(String, String, String), usize>,
}

impl Builder<'_> {
    fn csv(&mut self, text: &str) -> Result<Layout, DataError> {
        let records = csv::parse(text, self.path)?;
        let Some((header, body)) = records.split_first() else {
            return Ok(Layout::Long);
        };
        let keys: Vec<String> = header.fields.iter().map(|k| k.trim().to_owned()).collect();
        if let Some((i, _)) = keys.iter().enumerate().find(|(_, k)| k.is_empty()) {
            return Err(DataError::invalid(
                loc(self.path, Some(header.line), None),
                format!("header column {} has no name", i + 1),
            ));
        }
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].contains(k) {
                return Err(DataError::invalid(
                    loc(self.path, Some(header.line), None),
                    format!("header names column `{k}` twice"),
                ));
            }
        }
        let long = ITEM_KEYS
            .iter()
            .chain(&SCORE_KEYS)
            .any(|k| keys.iter().any(|h| h == k));
        let head = Record {
            line: header.line,
            fields: keys.iter().map(|k| (k.as_str(), Raw::Text(""))).collect(),
        };
        self.check_columns(&head, long)?;
        // Every bad row is reported in one pass (up to a cap), not only the first.
        let mut problems = Problems::default();
        for r in body {
            if let Err(e) = self.csv_row(&keys, header.line, r, long) {
                problems.push(e);
            }
        }
        problems.finish()?;
        Ok(if long { Layout::Long } else { Layout::Wide })
    }

    fn csv_row(
        &mut self,
        keys: &[String],
        header_line: usize,
        r: &csv::CsvRecord,
        long: bool,
    ) -> Result<(), DataError> {
        if r.fields.len() != keys.len() {
            return Err(DataError::invalid(
                loc(self.path, Some(r.line), None),
                format!(
                    "expected {} fields as in the header (line {}: {}), found {}",
                    keys.len(),
                    header_line,
                    keys.join(","),
                    r.fields.len()
                ),
            ));
        }
        let rec = Record {
            line: r.line,
            fields: keys
                .iter()
                .zip(&r.fields)
                .map(|(k, v)| (k.as_str(), Raw::Text(v)))
                .collect(),
        };
        if long {
            self.long_record(&rec)?;
        } else {
            self.wide_record(&rec)?;
        }
        Ok(())
    }

    fn jsonl(&mut self, text: &str) -> Result<Layout, DataError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let (mut long, mut wide) = (false, false);
        let mut problems = Problems::default();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match self.jsonl_line(i + 1, line) {
                Ok(true) => long = true,
                Ok(false) => wide = true,
                Err(e) => problems.push(e),
            }
        }
        problems.finish()?;
        Ok(match (long, wide) {
            (true, true) => Layout::Mixed,
            (false, true) => Layout::Wide,
            _ => Layout::Long,
        })
    }

    /// One JSONL record; `Ok(true)` for the long layout, `Ok(false)` for the wide one.
    fn jsonl_line(&mut self, line_no: usize, line: &str) -> Result<bool, DataError> {
        let v: Value = serde_json::from_str(line).map_err(|e| {
            DataError::invalid(
                loc(self.path, Some(line_no), None),
                format!("not a JSON object ({e}); expected one rating object per line"),
            )
        })?;
        let Some(obj) = v.as_object() else {
            return Err(DataError::invalid(
                loc(self.path, Some(line_no), None),
                format!("expected a JSON object per line, found `{v}`"),
            ));
        };
        let rec = Record {
            line: line_no,
            fields: obj
                .iter()
                .map(|(k, v)| (k.as_str(), Raw::Json(v)))
                .collect(),
        };
        let is_long = rec.get_any(&ITEM_KEYS, self.path)?.is_some()
            || rec.get_any(&SCORE_KEYS, self.path)?.is_some();
        self.check_columns(&rec, is_long)?;
        if is_long {
            self.long_record(&rec)?;
        } else {
            self.wide_record(&rec)?;
        }
        Ok(is_long)
    }

    /// Required columns present (and, in the wide layout, every other column an id).
    fn check_columns(&self, rec: &Record<'_>, long: bool) -> Result<(), DataError> {
        let at = loc(self.path, Some(rec.line), None);
        let have: Vec<&str> = rec.fields.iter().map(|(k, _)| *k).collect();
        let mut required: Vec<&[&str]> = vec![&DIALOGUE_KEYS, &RATER_KEYS];
        if long {
            required.extend([&ITEM_KEYS[..], &SCORE_KEYS[..]]);
        }
        for keys in required {
            rec.get_any(keys, self.path)?;
            if !keys.iter().any(|k| have.contains(k)) {
                return Err(DataError::invalid(
                    at,
                    format!(
                        "missing `{}`{}; found: {}. Expected `dialogue_id, rater, item, score` (long layout) or `dialogue_id, rater` plus one column per item id (wide layout)",
                        keys[0],
                        keys.get(1)
                            .map(|a| format!(" (or `{a}`)"))
                            .unwrap_or_default(),
                        have.join(", ")
                    ),
                ));
            }
        }
        if !long {
            for k in &have {
                let reserved = DIALOGUE_KEYS.contains(k)
                    || RATER_KEYS.contains(k)
                    || *k == RATER_KIND_KEY
                    || WIDE_TEXT_KEYS.contains(k);
                if !reserved && self.catalog.dimension(k).is_none() {
                    return Err(DataError::invalid(
                        at,
                        format!(
                            "unknown item `{k}`: without an `item` column each other column must be {}",
                            self.catalog.known_ids()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn text_id(&self, rec: &Record<'_>, keys: &[&str]) -> Result<String, DataError> {
        let at = loc(self.path, Some(rec.line), None);
        let (key, raw) = rec
            .get_any(keys, self.path)?
            .ok_or_else(|| DataError::field(at.clone(), keys[0], "missing"))?;
        let s = match raw {
            Raw::Text(s) => s.trim().to_owned(),
            Raw::Json(Value::String(s)) => s.trim().to_owned(),
            Raw::Json(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
            Raw::Json(v) => {
                return Err(DataError::field(
                    at,
                    key,
                    format!("expected a string id, found `{v}`"),
                ));
            }
        };
        if s.is_empty() {
            return Err(DataError::field(at, key, "empty; every rating needs one"));
        }
        Ok(s)
    }

    fn rater_kind(&self, rec: &Record<'_>, dialogue: &str) -> Result<Option<RaterKind>, DataError> {
        let Some(raw) = rec.get(RATER_KIND_KEY) else {
            return Ok(None);
        };
        if raw.is_empty() {
            return Ok(None);
        }
        let s = match raw {
            Raw::Text(s) => s.trim().to_ascii_lowercase(),
            Raw::Json(Value::String(s)) => s.trim().to_ascii_lowercase(),
            Raw::Json(_) => String::new(),
        };
        match s.as_str() {
            "human" => Ok(Some(RaterKind::Human)),
            "model" => Ok(Some(RaterKind::Model)),
            _ => Err(DataError::field(
                loc(self.path, Some(rec.line), Some(dialogue)),
                RATER_KIND_KEY,
                format!(
                    "{} is not a rater kind; expected `human`, `model` or empty",
                    raw.describe()
                ),
            )),
        }
    }

    fn long_record(&mut self, rec: &Record<'_>) -> Result<(), DataError> {
        let dialogue = self.text_id(rec, &DIALOGUE_KEYS)?;
        let rater = self.text_id(rec, &RATER_KEYS)?;
        let rater_kind = self.rater_kind(rec, &dialogue)?;
        let item = self.text_id(rec, &ITEM_KEYS)?;
        let at = loc(self.path, Some(rec.line), Some(&dialogue));
        let (item_key, _) = rec
            .get_any(&ITEM_KEYS, self.path)?
            .unwrap_or(("item", Raw::Text("")));
        let Some(dimension) = self.catalog.dimension(&item) else {
            return Err(DataError::field(
                at,
                item_key,
                format!(
                    "unknown item `{item}`; expected {}",
                    self.catalog.known_ids()
                ),
            ));
        };
        let (score_key, raw) = rec
            .get_any(&SCORE_KEYS, self.path)?
            .ok_or_else(|| DataError::field(at.clone(), "score", "missing"))?;
        let score = self.score(raw, dimension, &item, score_key, &at)?;
        self.push(
            rec.line, dialogue, rater, rater_kind, item, dimension, score,
        )
    }

    fn wide_record(&mut self, rec: &Record<'_>) -> Result<(), DataError> {
        let dialogue = self.text_id(rec, &DIALOGUE_KEYS)?;
        let rater = self.text_id(rec, &RATER_KEYS)?;
        let rater_kind = self.rater_kind(rec, &dialogue)?;
        let at = loc(self.path, Some(rec.line), Some(&dialogue));
        for (key, raw) in &rec.fields {
            let Some(dimension) = self.catalog.dimension(key) else {
                continue;
            };
            let score = self.score(*raw, dimension, key, key, &at)?;
            self.push(
                rec.line,
                dialogue.clone(),
                rater.clone(),
                rater_kind,
                (*key).to_owned(),
                dimension,
                score,
            )?;
        }
        Ok(())
    }

    fn score(
        &self,
        raw: Raw<'_>,
        dimension: Dimension,
        item: &str,
        field: &str,
        at: &Location,
    ) -> Result<Option<f64>, DataError> {
        if raw.is_empty() {
            return Ok(None);
        }
        let (lo, hi) = (self.catalog.min_score, self.catalog.max_score);
        let expected = match dimension {
            Dimension::Item => format!(
                "expected an integer {lo}–{hi} for CTRS item `{item}`, or empty (null) for unscored"
            ),
            Dimension::Label => format!(
                "expected 0 or 1 for safety label `{item}` (1 = violation), or empty (null) for unscored"
            ),
        };
        let bad = |what: String| DataError::field(at.clone(), field, format!("{what}; {expected}"));
        let number = match raw {
            Raw::Json(Value::Bool(b)) if dimension == Dimension::Label => {
                return Ok(Some(if *b { 1.0 } else { 0.0 }));
            }
            Raw::Json(Value::Number(n)) => n.as_f64(),
            Raw::Text(s) => parse_text(s, dimension),
            Raw::Json(Value::String(s)) => parse_text(s, dimension),
            Raw::Json(_) => None,
        };
        let Some(v) = number else {
            return Err(bad(format!("{} is not a number", raw.describe())));
        };
        if !v.is_finite() || v.fract() != 0.0 {
            return Err(bad(format!("{} is not an integer", raw.describe())));
        }
        let (min, max) = match dimension {
            Dimension::Item => (f64::from(lo), f64::from(hi)),
            Dimension::Label => (0.0, 1.0),
        };
        if v < min || v > max {
            return Err(bad(format!("{} is out of range", raw.describe())));
        }
        Ok(Some(v))
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        line: usize,
        dialogue: String,
        rater: String,
        rater_kind: Option<RaterKind>,
        item: String,
        dimension: Dimension,
        score: Option<f64>,
    ) -> Result<(), DataError> {
        let key = (dialogue.clone(), rater.clone(), item.clone());
        if let Some(first) = self.seen.get(&key) {
            return Err(DataError::invalid(
                loc(self.path, Some(line), Some(&dialogue)),
                format!(
                    "duplicate rating of item `{item}` by rater `{rater}` for dialogue `{dialogue}`: already given on line {first} (each dialogue, rater and item may appear once)"
                ),
            ));
        }
        self.seen.insert(key, line);
        self.rows.push(RatingRow {
            line,
            dialogue,
            rater,
            rater_kind,
            item,
            dimension,
            score,
        });
        Ok(())
    }
}

/// A text score: a number, or for a label also `true`/`false`.
fn parse_text(s: &str, dimension: Dimension) -> Option<f64> {
    let s = s.trim();
    if dimension == Dimension::Label {
        match s.to_ascii_lowercase().as_str() {
            "true" => return Some(1.0),
            "false" => return Some(0.0),
            _ => {}
        }
    }
    s.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::builtin().unwrap()
    }

    fn csv(text: &str) -> Result<RatingsFile, DataError> {
        parse_ratings(text, Path::new("r.csv"), &catalog())
    }

    fn jsonl(text: &str) -> Result<RatingsFile, DataError> {
        parse_ratings(text, Path::new("r.jsonl"), &catalog())
    }

    #[test]
    fn long_csv_with_extra_columns_and_unscored() {
        let f = csv("dialogue_id,rater,rater_kind,item,score,rationale\n\
             d1,alice,human,agenda,4,\"set, ranked\"\n\
             d1,judge,model,agenda,,\"unparsed\"\n\
             d1,alice,human,missed_crisis,1,\n")
        .unwrap();
        assert_eq!(f.layout, Layout::Long);
        assert_eq!(f.rows.len(), 3);
        assert_eq!(f.unscored(), 1);
        assert_eq!(f.rows[0].score, Some(4.0));
        assert_eq!(f.rows[0].line, 2);
        assert_eq!(f.rows[0].rater_kind, Some(RaterKind::Human));
        assert_eq!(f.rows[2].dimension, Dimension::Label);
    }

    #[test]
    fn aliases_wide_and_jsonl() {
        let f = csv("dialogue_id,rater_id,dimension,value\nd1,a,agenda,6\n").unwrap();
        assert_eq!(
            (f.rows[0].rater.as_str(), f.rows[0].score),
            ("a", Some(6.0))
        );
        let f = csv("dialogue_id,rater,agenda,missed_crisis,rationale\nd1,a,3,0,x\nd2,a,,1,\n")
            .unwrap();
        assert_eq!(f.layout, Layout::Wide);
        assert_eq!(f.rows.len(), 4);
        assert_eq!(f.unscored(), 1);
        let f = jsonl(
            "{\"dialogue_id\": 7, \"rater\": \"a\", \"item\": \"agenda\", \"score\": 2}\n\n\
             {\"dialogue_id\": \"d2\", \"rater\": \"a\", \"item\": \"missed_crisis\", \"score\": true}\n\
             {\"dialogue_id\": \"d3\", \"rater\": \"a\", \"item\": \"agenda\", \"score\": null}\n\
             {\"dialogue_id\": \"d4\", \"rater\": \"a\", \"homework\": \"5\"}\n",
        )
        .unwrap();
        assert_eq!(f.layout, Layout::Mixed);
        assert_eq!(f.rows[0].dialogue, "7");
        assert_eq!(f.rows[1].score, Some(1.0));
        assert_eq!(f.rows[1].line, 3);
        assert_eq!(f.rows[2].score, None);
        assert_eq!(f.rows[3].score, Some(5.0));
    }

    fn err(r: Result<RatingsFile, DataError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn every_bad_row_is_reported_in_one_pass() {
        let e = csv("dialogue_id,rater,item,score\nd1,a,agenda,9\nd2,a,nope,3\nd3,a,agenda,4\nd4,a,agenda,x\n")
            .unwrap_err()
            .to_string();
        for want in ["3 problems", "r.csv:2", "r.csv:3", "r.csv:5"] {
            assert!(e.contains(want), "{want} not in {e}");
        }
        assert!(!e.contains("r.csv:4"), "{e}");
        let e = jsonl(
            "{\"dialogue_id\":\"d1\",\"rater\":\"a\",\"item\":\"agenda\",\"score\":9}\nnot json\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("2 problems") && e.contains(":1") && e.contains(":2"),
            "{e}"
        );
    }

    #[test]
    fn malformed_rows_name_file_line_and_expectation() {
        let h = "dialogue_id,rater,item,score\n";
        let cases = [
            (
                format!("{h}d1,a,agenda,7\n"),
                "r.csv:2 (`d1`): field `score`: `7` is out of range; expected an integer 0–6",
            ),
            (format!("{h}d1,a,agenda,2.5\n"), "`2.5` is not an integer"),
            (format!("{h}d1,a,agenda,NA\n"), "`NA` is not a number"),
            (
                format!("{h}d1,a,missed_crisis,2\n"),
                "expected 0 or 1 for safety label `missed_crisis`",
            ),
            (
                format!("{h}d1,a,agendas,2\n"),
                "r.csv:2 (`d1`): field `item`: unknown item `agendas`; expected a CTRS item (agenda,",
            ),
            (
                format!("{h}d1,a,agenda\n"),
                "r.csv:2: expected 4 fields as in the header",
            ),
            (
                format!("{h},a,agenda,1\n"),
                "r.csv:2: field `dialogue_id`: empty",
            ),
            (
                format!("{h}d1,a,agenda,1\nd2,a,agenda,1\nd1,a,agenda,2\n"),
                "r.csv:4 (`d1`): duplicate rating of item `agenda` by rater `a` for dialogue `d1`: already given on line 2",
            ),
            (
                "dialogue_id,rater,score\nd1,a,1\n".to_owned(),
                "r.csv:1: missing `item` (or `dimension`)",
            ),
            (
                "dialogue_id,rater,rater_id,item,score\nd1,a,b,agenda,1\n".to_owned(),
                "both `rater` and `rater_id`",
            ),
            (
                "dialogue_id,rater,agenda,foo\nd1,a,1,2\n".to_owned(),
                "r.csv:1: unknown item `foo`",
            ),
            (
                format!("{h}d1,a,agenda,1\n")
                    .replace("score\n", "score,rater_kind\n")
                    .replace(",1\n", ",1,robot\n"),
                "field `rater_kind`: `robot` is not a rater kind",
            ),
            (
                "dialogue_id,rater,item,score\n".to_owned(),
                "r.csv: no ratings in the file",
            ),
        ];
        for (text, want) in cases {
            let e = err(csv(&text));
            assert!(e.contains(want), "{text:?}\n  got: {e}\n want: {want}");
        }
        let e = err(jsonl(
            "{\"dialogue_id\":\"d1\",\"rater\":\"a\",\"item\":\"agenda\",\"score\":1}\nnot json\n",
        ));
        assert!(e.starts_with("r.jsonl:2: not a JSON object"), "{e}");
        let e = err(jsonl(
            "{\"dialogue_id\":\"d1\",\"rater\":\"a\",\"item\":\"agenda\",\"score\":true}\n",
        ));
        assert!(
            e.contains("`true` is not a number; expected an integer 0–6"),
            "{e}"
        );
        let e = err(jsonl("[1,2]\n"));
        assert!(
            e.contains("r.jsonl:1: expected a JSON object per line"),
            "{e}"
        );
    }

    mod fuzz {
        //! Property tests: arbitrary bytes and mutations of valid CSV (long and wide) and JSONL
        //! ratings are read or rejected with a typed error naming the file, never a panic; rows
        //! that are read hold scores on their scale.
        #![allow(clippy::unwrap_used)]
        use super::*;
        use proptest::prelude::*;
        use therapygym_testkit::fuzz;

        const LONG: &str = "dialogue_id,rater,rater_kind,item,score,rationale\n\
            d1,alice,human,agenda,4,\"set, ranked\"\n\
            d1,judge,model,agenda,,\"unparsed\"\n\
            d2,alice,human,homework,6,\n\
            d1,alice,human,missed_crisis,1,\n";
        const WIDE: &str =
            "dialogue_id,rater,agenda,homework,missed_crisis,rationale\nd1,a,3,5,0,x\nd2,a,,6,1,\n";
        const JSONL: &str = "{\"dialogue_id\": 7, \"rater\": \"a\", \"item\": \"agenda\", \"score\": 2}\n\
            {\"dialogue_id\": \"d2\", \"rater\": \"a\", \"item\": \"missed_crisis\", \"score\": true}\n\
            {\"dialogue_id\": \"d3\", \"rater\": \"a\", \"item\": \"agenda\", \"score\": null}\n\
            {\"dialogue_id\": \"d4\", \"rater\": \"a\", \"homework\": \"5\"}\n";

        fn holds(text: &str, file: &str) -> Result<(), TestCaseError> {
            let c = catalog();
            match parse_ratings(text, Path::new(file), &c) {
                Ok(f) => {
                    for r in &f.rows {
                        let (lo, hi) = match r.dimension {
                            Dimension::Item => (f64::from(c.min_score), f64::from(c.max_score)),
                            Dimension::Label => (0.0, 1.0),
                        };
                        prop_assert!(r.score.is_none_or(|s| (lo..=hi).contains(&s)), "{r:?}");
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    prop_assert!(msg.contains(file), "the error does not name {file}: {msg}");
                }
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(fuzz::config(128))]

            #[test]
            fn arbitrary_bytes(bytes in fuzz::bytes(1024), jsonl in any::<bool>()) {
                let file = if jsonl { "fuzz.jsonl" } else { "fuzz.csv" };
                holds(&String::from_utf8_lossy(&bytes), file)?;
            }

            #[test]
            fn mutated_csv(text in prop_oneof![fuzz::mutated_text(LONG), fuzz::mutated_text(WIDE)]) {
                holds(&text, "fuzz.csv")?;
            }

            #[test]
            fn mutated_jsonl(text in prop_oneof![fuzz::mutated_jsonl(JSONL), fuzz::mutated_text(JSONL)]) {
                holds(&text, "fuzz.jsonl")?;
            }
        }
    }
}
