//! From ratings rows (and, with `--run`, a run's judgments) to a table per item: for every
//! dialogue, the judge's score and each expert's score. Rater mismatches are errors here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;
use therapygym_core::{DataError, Location, Verdict};
use therapygym_store::RunStore;

use crate::error::ValidateError;
use crate::ratings::{Catalog, Dimension, RaterKind, RatingsFile};

/// Where the judge's scores come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JudgeSource {
    /// The ratings file's rows of this rater (`--judge-rater`).
    Rater {
        /// The judge rater's name.
        name: String,
    },
    /// A run's stored judgments (`--run DIR [--judge-hash H]`).
    Run {
        /// The run directory.
        dir: PathBuf,
        /// The judgment set used.
        judge_hash: String,
    },
}

/// One dialogue's scores for one item or label (scored ratings only).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Cell {
    /// The judge's score, when it scored this dialogue and item.
    pub judge: Option<f64>,
    /// Each expert's score, by expert name.
    pub experts: BTreeMap<String, f64>,
}

/// How the input was used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Rating rows in the ratings file (unscored ones included).
    pub rows: usize,
    /// Rows left empty in the file (unscored: skipped, never 0).
    pub unscored_rows: usize,
    /// Dialogues with at least one scored rating in the report.
    pub dialogues: usize,
    /// The experts, sorted by name.
    pub experts: Vec<String>,
    /// Scored expert ratings.
    pub expert_ratings: usize,
    /// Scored judge ratings used (of items and labels some expert rated).
    pub judge_ratings: usize,
    /// Judge ratings in the file of items or labels no expert rated (not used).
    pub judge_ratings_without_experts: usize,
    /// With `--run`: how the run's sessions were used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<RunCounts>,
}

/// With `--run`: the run's sessions and judgments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunCounts {
    /// Sessions in the run.
    pub sessions: usize,
    /// Sessions the ratings file rates (the dialogues audited).
    pub rated_sessions: usize,
    /// Of those, judged and scored by the judgment set.
    pub judged: usize,
    /// Of those, judged but unscored (no judge scores: never 0).
    pub judge_unscored: usize,
    /// Of those, without a judgment in this set.
    pub not_judged: usize,
}

/// A validated ratings table: judge and expert scores per item (or label) and dialogue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dataset {
    /// The ratings file.
    pub ratings: PathBuf,
    /// Where the judge's scores come from.
    pub judge: JudgeSource,
    /// The ids in use.
    pub catalog: Catalog,
    /// Expert names, sorted.
    pub experts: Vec<String>,
    /// Item or label id -> dialogue id -> scores. Holds exactly the items and labels that at
    /// least one expert scored; dialogues sorted by id (the bootstrap's unit order).
    pub cells: BTreeMap<String, BTreeMap<String, Cell>>,
    /// Counts for the report.
    pub counts: Counts,
}

/// A run's sessions and the verdicts of one judgment set.
#[derive(Debug, Clone)]
pub struct RunJudgments {
    /// The run directory.
    pub dir: PathBuf,
    /// The judgment set.
    pub judge_hash: String,
    /// Every session id in the run.
    pub sessions: BTreeSet<String>,
    /// Verdicts by session id.
    pub verdicts: BTreeMap<String, Verdict>,
}

/// Opens a run and picks a judgment set: `judge_hash` (full, or a unique prefix with or
/// without `sha256:`), else the most recent one.
pub fn load_run(dir: &Path, judge_hash: Option<&str>) -> Result<RunJudgments, ValidateError> {
    let store = RunStore::open(dir)?;
    let hash = store.find_judge_set(judge_hash)?.hash;
    let verdicts = store
        .judgments(&hash)?
        .into_iter()
        .map(|(id, row)| (id, row.verdict))
        .collect();
    let sessions = store.sessions()?.into_iter().map(|s| s.id).collect();
    Ok(RunJudgments {
        dir: dir.to_path_buf(),
        judge_hash: hash,
        sessions,
        verdicts,
    })
}

fn at(file: &Path, line: usize, id: &str) -> Location {
    Location {
        file: file.into(),
        line: Some(line),
        id: Some(id.to_owned()),
    }
}

impl Dataset {
    /// Judge = the file's rows of rater `judge_rater`; every other rater is an expert.
    ///
    /// Errors: no rows of `judge_rater`; no expert; a `rater_kind` that contradicts the split
    /// (the judge marked `human`, an expert marked `model`) or changes between rows of a rater.
    pub fn from_ratings(
        file: &RatingsFile,
        judge_rater: &str,
        catalog: &Catalog,
    ) -> Result<Self, ValidateError> {
        check_rater_kinds(file, judge_rater, false)?;
        if !file.rows.iter().any(|r| r.rater == judge_rater) {
            let raters: BTreeSet<&str> = file.rows.iter().map(|r| r.rater.as_str()).collect();
            return Err(DataError::invalid(
                Location {
                    file: file.path.clone(),
                    line: None,
                    id: None,
                },
                format!(
                    "no ratings by the judge rater `{judge_rater}`; raters in the file: {}. Name the judge with --judge-rater, or take its scores from a run with --run DIR",
                    raters.into_iter().collect::<Vec<_>>().join(", ")
                ),
            )
            .into());
        }
        let mut judge = BTreeMap::new();
        for r in file.rows.iter().filter(|r| r.rater == judge_rater) {
            if let Some(s) = r.score {
                judge.insert((r.item.clone(), r.dialogue.clone()), s);
            }
        }
        Self::assemble(
            file,
            judge_rater,
            catalog,
            JudgeSource::Rater {
                name: judge_rater.to_owned(),
            },
            judge,
            None,
        )
    }

    /// Judge = the run's judgments (dialogue id = session id); every rater in the file is an
    /// expert. Errors: a rater named `judge_rater` or marked `model` in the file; a dialogue
    /// that is not a session of the run; a judgment with an item or label the rubric or
    /// taxonomy lacks.
    pub fn from_run(
        file: &RatingsFile,
        judge_rater: &str,
        run: &RunJudgments,
        catalog: &Catalog,
    ) -> Result<Self, ValidateError> {
        check_rater_kinds(file, judge_rater, true)?;
        if let Some(r) = file.rows.iter().find(|r| r.rater == judge_rater) {
            return Err(DataError::field(
                at(&file.path, r.line, &r.dialogue),
                "rater",
                format!(
                    "rater `{judge_rater}` is the judge rater, but with --run the judge's scores come from the run {} (judgment set {}); the ratings file must hold expert ratings only. Drop these rows, rename the rater, or pick another --judge-rater",
                    run.dir.display(),
                    run.judge_hash
                ),
            )
            .into());
        }
        let mut dialogues = BTreeSet::new();
        for r in &file.rows {
            if !run.sessions.contains(&r.dialogue) {
                return Err(DataError::field(
                    at(&file.path, r.line, &r.dialogue),
                    "dialogue_id",
                    format!(
                        "`{}` is not a session of run {} ({} sessions); with --run, dialogue ids are the run's session ids (the `session_id`/`dialogue_id` given to import-transcripts)",
                        r.dialogue,
                        run.dir.display(),
                        run.sessions.len()
                    ),
                )
                .into());
            }
            dialogues.insert(r.dialogue.as_str());
        }
        let mut counts = RunCounts {
            sessions: run.sessions.len(),
            rated_sessions: dialogues.len(),
            ..RunCounts::default()
        };
        let mut judge = BTreeMap::new();
        for d in dialogues {
            match run.verdicts.get(d) {
                None => counts.not_judged += 1,
                Some(Verdict::Unscored { .. }) => counts.judge_unscored += 1,
                Some(Verdict::Scored { judgment }) => {
                    counts.judged += 1;
                    let unknown = |what: &str, id: &str, file: &str| ValidateError::Run {
                        dir: run.dir.clone(),
                        message: format!(
                            "judgment set {} scores {what} `{id}` for session `{d}`, which the {file} in use ({}) lacks; pass the run's file with --{file}",
                            run.judge_hash,
                            if file == "rubric" {
                                &catalog.rubric
                            } else {
                                &catalog.taxonomy
                            }
                        ),
                    };
                    for (item, s) in &judgment.ctrs {
                        if catalog.dimension(item) != Some(Dimension::Item) {
                            return Err(unknown("item", item, "rubric"));
                        }
                        judge.insert((item.clone(), d.to_owned()), f64::from(s.score));
                    }
                    for (label, f) in &judgment.safety {
                        if catalog.dimension(label) != Some(Dimension::Label) {
                            return Err(unknown("label", label, "taxonomy"));
                        }
                        judge.insert(
                            (label.clone(), d.to_owned()),
                            if f.flag { 1.0 } else { 0.0 },
                        );
                    }
                }
            }
        }
        Self::assemble(
            file,
            judge_rater,
            catalog,
            JudgeSource::Run {
                dir: run.dir.clone(),
                judge_hash: run.judge_hash.clone(),
            },
            judge,
            Some(counts),
        )
    }

    fn assemble(
        file: &RatingsFile,
        judge_rater: &str,
        catalog: &Catalog,
        source: JudgeSource,
        judge: BTreeMap<(String, String), f64>,
        run: Option<RunCounts>,
    ) -> Result<Self, ValidateError> {
        let mut cells: BTreeMap<String, BTreeMap<String, Cell>> = BTreeMap::new();
        let mut experts = BTreeSet::new();
        let mut expert_ratings = 0;
        for r in file.rows.iter().filter(|r| r.rater != judge_rater) {
            experts.insert(r.rater.clone());
            if let Some(s) = r.score {
                expert_ratings += 1;
                cells
                    .entry(r.item.clone())
                    .or_default()
                    .entry(r.dialogue.clone())
                    .or_default()
                    .experts
                    .insert(r.rater.clone(), s);
            }
        }
        if experts.is_empty() {
            return Err(DataError::invalid(
                Location {
                    file: file.path.clone(),
                    line: None,
                    id: None,
                },
                format!(
                    "no expert ratings: every row is by the judge rater `{judge_rater}`; expected rows by at least one other rater"
                ),
            )
            .into());
        }
        let (mut judge_ratings, mut unused) = (0, 0);
        for ((item, dialogue), s) in judge {
            match cells.get_mut(&item) {
                Some(by_dialogue) => {
                    judge_ratings += 1;
                    by_dialogue.entry(dialogue).or_default().judge = Some(s);
                }
                None => unused += 1,
            }
        }
        let dialogues: BTreeSet<&String> = cells.values().flat_map(|m| m.keys()).collect();
        let counts = Counts {
            rows: file.rows.len(),
            unscored_rows: file.unscored(),
            dialogues: dialogues.len(),
            experts: experts.iter().cloned().collect(),
            expert_ratings,
            judge_ratings,
            judge_ratings_without_experts: unused,
            run,
        };
        Ok(Self {
            ratings: file.path.clone(),
            judge: source,
            catalog: catalog.clone(),
            experts: experts.into_iter().collect(),
            cells,
            counts,
        })
    }

    /// CTRS items with expert ratings, in rubric order, with their reward flag.
    pub fn items(&self) -> Vec<(&str, bool)> {
        self.catalog
            .items
            .iter()
            .filter(|i| self.cells.contains_key(&i.id))
            .map(|i| (i.id.as_str(), i.reward))
            .collect()
    }

    /// Safety labels with expert ratings, in taxonomy order.
    pub fn labels(&self) -> Vec<&str> {
        self.catalog
            .labels
            .iter()
            .filter(|l| self.cells.contains_key(*l))
            .map(String::as_str)
            .collect()
    }
}

/// One `rater_kind` per rater, consistent with the judge/expert split.
fn check_rater_kinds(
    file: &RatingsFile,
    judge_rater: &str,
    run: bool,
) -> Result<(), ValidateError> {
    let mut first: BTreeMap<&str, (RaterKind, usize)> = BTreeMap::new();
    for r in &file.rows {
        let Some(kind) = r.rater_kind else { continue };
        let loc = at(&file.path, r.line, &r.dialogue);
        if let Some((k0, line0)) = first.get(r.rater.as_str()) {
            if *k0 != kind {
                return Err(DataError::field(
                    loc,
                    "rater_kind",
                    format!(
                        "rater `{}` is `{}` here but `{}` on line {line0}; a rater has one kind",
                        r.rater,
                        kind_name(kind),
                        kind_name(*k0)
                    ),
                )
                .into());
            }
            continue;
        }
        first.insert(&r.rater, (kind, r.line));
        let is_judge = !run && r.rater == judge_rater;
        let mismatch = match (is_judge, kind) {
            (true, RaterKind::Human) => Some(format!(
                "rater `{}` is the judge rater (--judge-rater) but is marked `human`",
                r.rater
            )),
            (false, RaterKind::Model) if run => Some(format!(
                "rater `{}` is marked `model`, but with --run the judge's scores come from the run and every rater in the file must be a human expert",
                r.rater
            )),
            (false, RaterKind::Model) => Some(format!(
                "rater `{}` is marked `model` but the judge rater is `{judge_rater}`; every rater other than the judge is treated as an expert. Pick it with --judge-rater {}, or drop its rows",
                r.rater, r.rater
            )),
            _ => None,
        };
        if let Some(m) = mismatch {
            return Err(DataError::field(loc, "rater_kind", m).into());
        }
    }
    Ok(())
}

fn kind_name(k: RaterKind) -> &'static str {
    match k {
        RaterKind::Human => "human",
        RaterKind::Model => "model",
    }
}
