//! `therapygym validate --run DIR --known-groups LABEL=HIGH>LOW`: known-groups validity of a
//! judgment set on an imported labelled corpus (`import-transcripts --format csv --label-col`).
//!
//! For every rubric item, behaviour-code count and derived score of the set, the scored
//! dialogues labelled HIGH are compared with those labelled LOW: AUC with a bootstrap interval,
//! Cliff's δ and the one-sided Mann–Whitney p (`therapygym_stats::known_groups`). When the
//! import kept per-utterance annotations and the rubric has behaviour codes, the judge's count
//! of each code per dialogue is also set against the annotated count (totals, Spearman and
//! ICC(2,1) with bootstrap intervals over dialogues). Annotation values map to code ids with
//! `--annotation-map COLUMN:VALUE=CODE[+CODE]`; a column without a map counts values equal to a
//! code id.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;
use therapygym_core::{Rubric, Verdict};
use therapygym_stats::{
    BootstrapConfig, Estimate, GroupComparison, Stat, estimate_with_ci, icc2_1, known_groups,
    spearman,
};
use therapygym_store::RunStore;

use crate::error::{ValidateError, stats_err};

/// `LABEL=HIGH>LOW`, e.g. `quality=high>low`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupSpec {
    pub label: String,
    pub high: String,
    pub low: String,
}

impl std::str::FromStr for GroupSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad =
            || format!("`{s}`: expected LABEL=HIGH>LOW, e.g. `--known-groups quality=high>low`");
        let (label, groups) = s.split_once('=').ok_or_else(bad)?;
        let (high, low) = groups.split_once('>').ok_or_else(bad)?;
        let (label, high, low) = (label.trim(), high.trim(), low.trim());
        if label.is_empty() || high.is_empty() || low.is_empty() {
            return Err(bad());
        }
        if high == low {
            return Err(format!("`{s}`: HIGH and LOW are the same value"));
        }
        Ok(Self {
            label: label.into(),
            high: high.into(),
            low: low.into(),
        })
    }
}

/// `--annotation-map COLUMN:VALUE=CODE[+CODE]` entries: (column, value) → code ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnnotationMap {
    pub entries: BTreeMap<(String, String), Vec<String>>,
}

impl AnnotationMap {
    /// Parses the repeated flag values.
    pub fn parse(values: &[String]) -> Result<Self, String> {
        let mut entries = BTreeMap::new();
        for v in values {
            let bad = || {
                format!(
                    "--annotation-map `{v}`: expected COLUMN:VALUE=CODE[+CODE], e.g. `code:SR=simple_reflection`"
                )
            };
            let (col, rest) = v.split_once(':').ok_or_else(bad)?;
            let (value, codes) = rest.rsplit_once('=').ok_or_else(bad)?;
            let codes: Vec<String> = codes
                .split('+')
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect();
            if col.trim().is_empty() || value.trim().is_empty() || codes.is_empty() {
                return Err(bad());
            }
            entries.insert((col.trim().into(), value.trim().into()), codes);
        }
        Ok(Self { entries })
    }

    fn columns(&self) -> BTreeSet<&str> {
        self.entries.keys().map(|(c, _)| c.as_str()).collect()
    }
}

/// One score's comparison of the groups.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupRow {
    /// The item, code or derived-score id.
    pub id: String,
    /// `item`, `code` (the judge's count per dialogue), `annotated_code` (the corpus's own
    /// count, as a reference) or `derived`.
    pub kind: &'static str,
    #[serde(flatten)]
    pub comparison: GroupComparison,
}

/// Judge count against annotated count for one behaviour code.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CodeAgreement {
    pub code: String,
    /// Dialogues with a scored judgment and annotations.
    pub n_dialogues: usize,
    pub judge_count: u64,
    pub annotated_count: u64,
    pub spearman: Estimate,
    /// ICC(2,1), absolute agreement of the per-dialogue counts.
    pub icc2_1: Estimate,
}

/// The `known_groups` section of `validate --json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KnownGroupsReport {
    pub run: PathBuf,
    pub judge_hash: String,
    pub rubric: String,
    pub label: String,
    pub high: String,
    pub low: String,
    /// Dialogues labelled HIGH / LOW (scored or not).
    pub n_high: usize,
    pub n_low: usize,
    /// Dialogues of either group without a scored judgment (left out of every figure).
    pub n_unscored: usize,
    pub bootstrap: BootstrapInfo,
    pub rows: Vec<GroupRow>,
    /// The per-utterance annotation columns the import kept (sorted).
    pub annotation_columns: Vec<String>,
    /// One entry per behaviour code the annotations speak of (named by `--annotation-map`, or
    /// given at least once); empty without annotations or codes.
    pub behaviour: Vec<CodeAgreement>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BootstrapInfo {
    pub resamples: usize,
    pub seed: u64,
    pub level: f64,
}

fn run_err(dir: &Path, message: String) -> ValidateError {
    ValidateError::Run {
        dir: dir.to_path_buf(),
        message,
    }
}

/// One dialogue of either group.
struct Member<'a> {
    high: bool,
    verdict: Option<&'a Verdict>,
    annotations: Option<&'a serde_json::Map<String, Value>>,
}

/// The known-groups report of a run's judgment set (`judge_hash`: full or unique prefix, else
/// the most recent set). `fallback` is the rubric for sets stored without their definitions.
pub fn known_groups_report(
    dir: &Path,
    judge_hash: Option<&str>,
    spec: &GroupSpec,
    map: &AnnotationMap,
    fallback: &Rubric,
    config: &BootstrapConfig,
) -> Result<KnownGroupsReport, ValidateError> {
    let store = RunStore::open(dir)?;
    let set = store.find_judge_set(judge_hash)?;
    let rubric = set.rubric().unwrap_or_else(|| fallback.clone());
    let judgments = store.judgments(&set.hash)?;
    let sessions = store.sessions()?;

    // Which labels and values exist, for the errors below.
    let mut values: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for s in &sessions {
        if let Some(labels) = s.meta.get("labels").and_then(Value::as_object) {
            for (k, v) in labels {
                values
                    .entry(k.as_str())
                    .or_default()
                    .insert(v.as_str().unwrap_or(""));
            }
        }
    }
    let Some(seen) = values.get(spec.label.as_str()) else {
        let known: Vec<&str> = values.keys().copied().collect();
        return Err(run_err(
            dir,
            if known.is_empty() {
                format!(
                    "no dialogue has labels, so there is no `{}`; import a labelled corpus with `therapygym import-transcripts FILE.csv --format csv ... --label-col {}`",
                    spec.label, spec.label
                )
            } else {
                format!(
                    "no dialogue label `{}`; the run's labels: {}",
                    spec.label,
                    known.join(", ")
                )
            },
        ));
    };
    for v in [&spec.high, &spec.low] {
        if !seen.contains(v.as_str()) {
            return Err(run_err(
                dir,
                format!(
                    "label `{}` never has the value `{v}`; its values: {}",
                    spec.label,
                    seen.iter().copied().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }

    let members: Vec<Member<'_>> = sessions
        .iter()
        .filter_map(|s| {
            let v = s.meta.get("labels")?.get(&spec.label)?.as_str()?;
            let high = if v == spec.high {
                true
            } else if v == spec.low {
                false
            } else {
                return None;
            };
            Some(Member {
                high,
                verdict: judgments.get(&s.id).map(|j| &j.verdict),
                annotations: s.meta.get("annotations").and_then(Value::as_object),
            })
        })
        .collect();
    let scored: Vec<(&Member<'_>, &therapygym_core::Judgment)> = members
        .iter()
        .filter_map(|m| Some((m, m.verdict?.judgment()?)))
        .collect();

    check_map(dir, map, &rubric, &members)?;

    let mut rows = Vec::new();
    let mut push = |id: &str,
                    kind: &'static str,
                    values: Vec<(bool, Option<f64>)>|
     -> Result<(), ValidateError> {
        let high: Vec<f64> = values
            .iter()
            .filter_map(|(h, v)| v.filter(|_| *h))
            .collect();
        let low: Vec<f64> = values
            .iter()
            .filter_map(|(h, v)| v.filter(|_| !*h))
            .collect();
        let comparison = known_groups(&high, &low, config)
            .map_err(stats_err(format!("known groups of `{id}`")))?;
        rows.push(GroupRow {
            id: id.to_string(),
            kind,
            comparison,
        });
        Ok(())
    };
    for item in &rubric.items {
        let v = scored
            .iter()
            .map(|(m, j)| (m.high, j.ctrs.get(&item.id).map(|s| f64::from(s.score))))
            .collect();
        push(&item.id, "item", v)?;
    }
    let annotated: Vec<Option<BTreeMap<String, u64>>> = scored
        .iter()
        .map(|(m, _)| m.annotations.map(|a| annotated_counts(a, map, &rubric)))
        .collect();
    // Codes the annotation scheme speaks of: those the map names and those it gave. A code
    // no annotation can produce would only show a column of zeros.
    let covered: BTreeSet<&str> = map
        .entries
        .values()
        .flatten()
        .map(String::as_str)
        .chain(
            annotated
                .iter()
                .flatten()
                .flat_map(|a| a.iter().filter(|(_, n)| **n > 0).map(|(c, _)| c.as_str())),
        )
        .collect();
    for code in &rubric.codes {
        let judge = scored
            .iter()
            .map(|(m, j)| {
                let n = rubric.code_counts(j).get(&code.id).copied().unwrap_or(0);
                (m.high, Some(f64::from(n)))
            })
            .collect();
        push(&code.id, "code", judge)?;
        if covered.contains(code.id.as_str()) {
            let corpus = scored
                .iter()
                .zip(&annotated)
                .map(|((m, _), a)| {
                    let n = a.as_ref().map(|a| a.get(&code.id).copied().unwrap_or(0));
                    (m.high, n.map(|n| n as f64))
                })
                .collect();
            push(&code.id, "annotated_code", corpus)?;
        }
    }
    for (k, d) in rubric.derived.iter().enumerate() {
        let v = scored
            .iter()
            .map(|(m, j)| (m.high, rubric.derive(j).get(k).and_then(|(_, v)| v.value)))
            .collect();
        push(&d.id, "derived", v)?;
    }

    let mut behaviour = Vec::new();
    for code in rubric
        .codes
        .iter()
        .filter(|c| covered.contains(c.id.as_str()))
    {
        let pairs: Vec<(f64, f64)> = scored
            .iter()
            .zip(&annotated)
            .filter_map(|((_, j), a)| {
                let a = a.as_ref()?;
                let judge = rubric.code_counts(j).get(&code.id).copied().unwrap_or(0);
                Some((
                    f64::from(judge),
                    a.get(&code.id).copied().unwrap_or(0) as f64,
                ))
            })
            .collect();
        behaviour.push(code_agreement(&code.id, &pairs, config)?);
    }

    Ok(KnownGroupsReport {
        run: dir.to_path_buf(),
        judge_hash: set.hash.clone(),
        rubric: format!("{}/{}", rubric.id, rubric.version),
        label: spec.label.clone(),
        high: spec.high.clone(),
        low: spec.low.clone(),
        n_high: members.iter().filter(|m| m.high).count(),
        n_low: members.iter().filter(|m| !m.high).count(),
        n_unscored: members.len() - scored.len(),
        bootstrap: BootstrapInfo {
            resamples: config.resamples,
            seed: config.seed,
            level: config.level,
        },
        rows,
        annotation_columns: members
            .iter()
            .filter_map(|m| m.annotations)
            .flat_map(|a| a.keys().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        behaviour,
    })
}

/// `--annotation-map` names codes of the rubric and columns the import kept.
fn check_map(
    dir: &Path,
    map: &AnnotationMap,
    rubric: &Rubric,
    members: &[Member<'_>],
) -> Result<(), ValidateError> {
    if map.entries.is_empty() {
        return Ok(());
    }
    let ids: BTreeSet<&str> = rubric.codes.iter().map(|c| c.id.as_str()).collect();
    if ids.is_empty() {
        return Err(run_err(
            dir,
            format!(
                "--annotation-map needs a rubric with behaviour codes; `{}` has none (judge the run with `--rubric mi`)",
                rubric.id
            ),
        ));
    }
    for ((col, value), codes) in &map.entries {
        if let Some(c) = codes.iter().find(|c| !ids.contains(c.as_str())) {
            return Err(run_err(
                dir,
                format!(
                    "--annotation-map `{col}:{value}`: `{c}` is not a code of `{}`; its codes: {}",
                    rubric.id,
                    ids.iter().copied().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    let kept: BTreeSet<&str> = members
        .iter()
        .filter_map(|m| m.annotations)
        .flat_map(|a| a.keys().map(String::as_str))
        .collect();
    if let Some(col) = map.columns().into_iter().find(|c| !kept.contains(c)) {
        return Err(run_err(
            dir,
            format!(
                "--annotation-map names the column `{col}`, but the import kept {}",
                if kept.is_empty() {
                    "no annotations (import with `--annotation-col COL`)".to_string()
                } else {
                    format!(
                        "annotations of {}",
                        kept.into_iter().collect::<Vec<_>>().join(", ")
                    )
                }
            ),
        ));
    }
    Ok(())
}

/// Code id → how often the dialogue's annotations give it.
fn annotated_counts(
    annotations: &serde_json::Map<String, Value>,
    map: &AnnotationMap,
    rubric: &Rubric,
) -> BTreeMap<String, u64> {
    let mapped = map.columns();
    let ids: BTreeSet<&str> = rubric.codes.iter().map(|c| c.id.as_str()).collect();
    let mut counts = BTreeMap::new();
    for (col, values) in annotations {
        for v in values
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            let codes: Vec<&str> = if mapped.contains(col.as_str()) {
                map.entries
                    .get(&(col.clone(), v.to_string()))
                    .map(|c| c.iter().map(String::as_str).collect())
                    .unwrap_or_default()
            } else if ids.contains(v) {
                vec![v]
            } else {
                Vec::new()
            };
            for c in codes {
                *counts.entry(c.to_string()).or_insert(0) += 1;
            }
        }
    }
    counts
}

fn code_agreement(
    code: &str,
    pairs: &[(f64, f64)],
    config: &BootstrapConfig,
) -> Result<CodeAgreement, ValidateError> {
    let n = pairs.len();
    let at = |idx: &[usize]| -> (Vec<f64>, Vec<f64>) { idx.iter().map(|&i| pairs[i]).unzip() };
    let rho = estimate_with_ci(n, config, |idx| {
        let (x, y) = at(idx);
        spearman(&x, &y).unwrap_or_else(|e| Stat::undefined(e.to_string()))
    })
    .map_err(stats_err(format!("Spearman of code `{code}`")))?;
    let icc = estimate_with_ci(n, config, |idx| {
        let m: Vec<Vec<f64>> = idx.iter().map(|&i| vec![pairs[i].0, pairs[i].1]).collect();
        icc2_1(&m).unwrap_or_else(|e| Stat::undefined(e.to_string()))
    })
    .map_err(stats_err(format!("ICC of code `{code}`")))?;
    Ok(CodeAgreement {
        code: code.to_string(),
        n_dialogues: n,
        judge_count: pairs.iter().map(|p| p.0 as u64).sum(),
        annotated_count: pairs.iter().map(|p| p.1 as u64).sum(),
        spearman: rho,
        icc2_1: icc,
    })
}

fn fmt_stat(s: &Stat, digits: usize) -> String {
    s.value()
        .map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "–".into())
}

fn fmt_ci(low: &Stat, high: &Stat) -> String {
    match (low.value(), high.value()) {
        (Some(l), Some(h)) => format!("[{l:.2}, {h:.2}]"),
        _ => "–".into(),
    }
}

/// The report as text tables.
pub fn render_known_groups(r: &KnownGroupsReport) -> String {
    let text = render_padded(r);
    let mut out: String = text
        .lines()
        .map(|l| format!("{}\n", l.trim_end()))
        .collect();
    if !text.ends_with('\n') {
        out.pop();
    }
    out
}

fn render_padded(r: &KnownGroupsReport) -> String {
    let mut out = format!(
        "Known groups: {label}={high} ({n_high} dialogues) > {label}={low} ({n_low}); judgment set {hash}, rubric {rubric}\n",
        label = r.label,
        high = r.high,
        low = r.low,
        n_high = r.n_high,
        n_low = r.n_low,
        hash = r.judge_hash.chars().take(19).collect::<String>(),
        rubric = r.rubric,
    );
    if r.n_unscored > 0 {
        out.push_str(&format!(
            "{} dialogue(s) without a scored judgment left out\n",
            r.n_unscored
        ));
    }
    out.push_str(&format!(
        "AUC = P(a {} dialogue scores higher than a {} one), ties half; {:.0}% bootstrap CI ({} resamples); δ = Cliff's delta; p = one-sided Mann-Whitney\n\n",
        r.high,
        r.low,
        r.bootstrap.level * 100.0,
        r.bootstrap.resamples
    ));
    let width = r.rows.iter().map(|x| x.id.len()).max().unwrap_or(4).max(4);
    out.push_str(&format!(
        "{:<width$}  {:<14}  {:>4} {:>4}  {:>5}  {:<14}  {:>6}  {:>8}\n",
        "id", "kind", "nH", "nL", "AUC", "CI", "δ", "p"
    ));
    for row in &r.rows {
        let c = &row.comparison;
        out.push_str(&format!(
            "{:<width$}  {:<14}  {:>4} {:>4}  {:>5}  {:<14}  {:>6}  {:>8}\n",
            row.id,
            row.kind,
            c.n_high,
            c.n_low,
            fmt_stat(&c.auc, 2),
            fmt_ci(&c.auc_ci.low, &c.auc_ci.high),
            fmt_stat(&c.cliffs_delta, 2),
            c.mann_whitney
                .p_greater
                .value()
                .map(|p| format!("{p:.4}"))
                .unwrap_or_else(|| "–".into()),
        ));
    }
    let has_codes = r.rows.iter().any(|x| x.kind == "code");
    if has_codes && r.behaviour.is_empty() && !r.annotation_columns.is_empty() {
        out.push_str(&format!(
            "\nThe import kept annotations ({}), but none of their values is a behaviour code of {}: map them with --annotation-map COLUMN:VALUE=CODE\n",
            r.annotation_columns.join(", "),
            r.rubric
        ));
    }
    if !r.behaviour.is_empty() {
        out.push_str("\nBehaviour counts, judge vs annotated (per dialogue)\n");
        let width = r
            .behaviour
            .iter()
            .map(|x| x.code.len())
            .max()
            .unwrap_or(4)
            .max(4);
        out.push_str(&format!(
            "{:<width$}  {:>4}  {:>6} {:>6}  {:>6}  {:<14}  {:>6}  {:<14}\n",
            "code", "n", "judge", "annot", "rho", "CI", "ICC", "CI"
        ));
        for b in &r.behaviour {
            out.push_str(&format!(
                "{:<width$}  {:>4}  {:>6} {:>6}  {:>6}  {:<14}  {:>6}  {:<14}\n",
                b.code,
                b.n_dialogues,
                b.judge_count,
                b.annotated_count,
                fmt_stat(&b.spearman.value, 2),
                fmt_ci(&b.spearman.ci.low, &b.spearman.ci.high),
                fmt_stat(&b.icc2_1.value, 2),
                fmt_ci(&b.icc2_1.ci.low, &b.icc2_1.ci.high),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_say_the_form() {
        let g: GroupSpec = "quality=high>low".parse().unwrap();
        assert_eq!(
            (g.label.as_str(), g.high.as_str(), g.low.as_str()),
            ("quality", "high", "low")
        );
        for bad in ["quality", "quality=high", "=a>b", "q=a>a"] {
            assert!(bad.parse::<GroupSpec>().is_err(), "{bad}");
        }
        let m = AnnotationMap::parse(&[
            "code:SR=simple_reflection".into(),
            "code:RES=simple_reflection+complex_reflection".into(),
        ])
        .unwrap();
        assert_eq!(
            m.entries[&("code".to_string(), "RES".to_string())],
            ["simple_reflection", "complex_reflection"]
        );
        assert!(AnnotationMap::parse(&["SR=simple_reflection".into()]).is_err());
        assert!(AnnotationMap::parse(&["code:SR=".into()]).is_err());
    }
}
