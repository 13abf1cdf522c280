//! Rubrics as data (`data/rubrics/*.toml`): CTRS (global items only) and MITI 4.2 (global
//! items, per-utterance behaviour codes and derived summary scores); a DBT or ACT rubric needs
//! only a file.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Location};
use crate::judgment::Judgment;
use crate::measures::{self, BehaviourCode, DerivedKind, DerivedScore, DerivedValue};

/// Most behaviour codes the judge may give one therapist utterance.
pub const MAX_CODES_PER_UTTERANCE: u32 = 6;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RubricItem {
    pub id: String,
    pub name: String,
    /// CTRS part ("I" general skills, "II" conceptualisation/strategy/technique).
    #[serde(default)]
    pub part: String,
    /// Whether the item enters the reward (all items are always scored).
    pub reward: bool,
    pub measures: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// Behavioural anchors keyed by score ("0", "2", ...).
    pub anchors: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rubric {
    pub id: String,
    pub version: u32,
    pub name: String,
    #[serde(default)]
    pub source: String,
    pub min_score: u8,
    pub max_score: u8,
    #[serde(default)]
    pub scale_labels: Vec<String>,
    #[serde(default)]
    pub instructions: String,
    /// The built-in judge prompt pair this rubric is asked with (`ctrs`, `mi`); the CTRS pair
    /// when left out. Judge prompt files named in a run's settings still win.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge_prompts: Option<String>,
    /// The key of the judge reply's item section (`ctrs` when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items_key: Option<String>,
    pub items: Vec<RubricItem>,
    /// Behaviour codes: the judge codes every therapist utterance with zero or more of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<BehaviourCode>,
    /// Derived scores over items and code counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub derived: Vec<DerivedScore>,
}

impl Rubric {
    pub fn parse(text: &str, path: &Path) -> Result<Self, DataError> {
        let at = Location {
            file: path.into(),
            line: None,
            id: None,
        };
        let r: Rubric = toml::from_str(text)
            .map_err(|e| DataError::invalid(at.clone(), format!("not a valid rubric file: {e}")))?;
        if r.items.is_empty() {
            return Err(DataError::invalid(
                at,
                "a rubric needs at least one [[items]] entry",
            ));
        }
        if r.min_score >= r.max_score {
            return Err(DataError::invalid(
                at,
                "`min_score` must be below `max_score`",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for item in &r.items {
            let at = Location {
                id: Some(item.id.clone()),
                ..at.clone()
            };
            if !seen.insert(item.id.as_str()) {
                return Err(DataError::field(at, "id", "duplicate item id"));
            }
            if !crate::profile::valid_id(&item.id) {
                return Err(DataError::field(
                    at,
                    "id",
                    "use letters, digits, `_`, `-`, `.` or `:`",
                ));
            }
            for k in item.anchors.keys() {
                match k.parse::<u8>() {
                    Ok(s) if (r.min_score..=r.max_score).contains(&s) => {}
                    _ => {
                        return Err(DataError::field(
                            at,
                            "anchors",
                            format!(
                                "anchor key \"{k}\" is not a score in {}..={}",
                                r.min_score, r.max_score
                            ),
                        ));
                    }
                }
            }
        }
        r.check_measures(&at)?;
        if !r.items.iter().any(|i| i.reward) {
            return Err(DataError::invalid(
                at,
                "no item has `reward = true`; the reward would be undefined",
            ));
        }
        Ok(r)
    }

    /// Codes and derived scores: ids unique across items, codes and derived scores; each formula
    /// of its kind's shape and over known items and codes.
    fn check_measures(&self, at: &Location) -> Result<(), DataError> {
        let mut seen: std::collections::HashSet<&str> =
            self.items.iter().map(|i| i.id.as_str()).collect();
        let ids = self
            .codes
            .iter()
            .map(|c| c.id.as_str())
            .chain(self.derived.iter().map(|d| d.id.as_str()));
        for id in ids {
            let at = Location {
                id: Some(id.to_string()),
                ..at.clone()
            };
            if !seen.insert(id) {
                return Err(DataError::field(
                    at,
                    "id",
                    "ids must be unique across items, codes and derived scores",
                ));
            }
            if !crate::profile::valid_id(id) {
                return Err(DataError::field(
                    at,
                    "id",
                    "use letters, digits, `_`, `-`, `.` or `:`",
                ));
            }
        }
        for d in &self.derived {
            let at = Location {
                id: Some(d.id.clone()),
                ..at.clone()
            };
            let shape_ok = match d.kind {
                DerivedKind::Mean | DerivedKind::Sum => {
                    !d.of.is_empty() && d.num.is_empty() && d.den.is_empty()
                }
                DerivedKind::Ratio | DerivedKind::Percent => {
                    d.of.is_empty() && !d.num.is_empty() && !d.den.is_empty()
                }
            };
            if !shape_ok {
                let want = match d.kind {
                    DerivedKind::Mean | DerivedKind::Sum => "a non-empty `of` and no `num`/`den`",
                    DerivedKind::Ratio | DerivedKind::Percent => {
                        "non-empty `num` and `den` and no `of`"
                    }
                };
                return Err(DataError::field(
                    at,
                    "kind",
                    format!("`kind = \"{}\"` needs {want}", d.kind.as_str()),
                ));
            }
            if let Some(t) = d
                .terms()
                .find(|t| self.item(t).is_none() && self.code(t).is_none())
            {
                return Err(DataError::field(
                    at,
                    "of/num/den",
                    format!(
                        "`{t}` is neither an item nor a code of this rubric (derived scores may use items and codes only)"
                    ),
                ));
            }
            if let Some([lo, hi]) = d.range
                && !(lo.is_finite() && hi.is_finite() && lo < hi)
            {
                return Err(DataError::field(
                    at,
                    "range",
                    "`range = [lo, hi]` needs finite numbers with lo < hi",
                ));
            }
        }
        Ok(())
    }

    /// The key of the judge reply's item section.
    pub fn items_key(&self) -> &str {
        self.items_key.as_deref().unwrap_or("ctrs")
    }

    pub fn code(&self, id: &str) -> Option<&BehaviourCode> {
        self.codes.iter().find(|c| c.id == id)
    }

    pub fn derived_score(&self, id: &str) -> Option<&DerivedScore> {
        self.derived.iter().find(|d| d.id == id)
    }

    /// How many times each code was given in `judgment` (all codes, 0 when never given).
    pub fn code_counts(&self, judgment: &Judgment) -> BTreeMap<String, u32> {
        measures::code_counts(&self.codes, judgment)
    }

    /// Every derived score of `judgment`, in file order.
    pub fn derive(&self, judgment: &Judgment) -> Vec<(String, DerivedValue)> {
        let counts = self.code_counts(judgment);
        self.derived
            .iter()
            .map(|d| (d.id.clone(), measures::evaluate(d, judgment, &counts)))
            .collect()
    }

    /// The range a derived score is normalised over in a reward: its `range`, else the rubric
    /// scale for a mean of items, [0, 100] for a percentage; None when it cannot be known.
    pub fn derived_range(&self, d: &DerivedScore) -> Option<[f64; 2]> {
        if d.range.is_some() {
            return d.range;
        }
        match d.kind {
            DerivedKind::Mean if d.of.iter().all(|t| self.item(t).is_some()) => {
                Some([f64::from(self.min_score), f64::from(self.max_score)])
            }
            DerivedKind::Percent => Some([0.0, 100.0]),
            _ => None,
        }
    }

    /// `id/version`, e.g. `ctrs-11/1`.
    pub fn version_id(&self) -> String {
        format!("{}/{}", self.id, self.version)
    }

    pub fn item(&self, id: &str) -> Option<&RubricItem> {
        self.items.iter().find(|i| i.id == id)
    }

    pub fn item_ids(&self) -> Vec<&str> {
        self.items.iter().map(|i| i.id.as_str()).collect()
    }

    pub fn reward_items(&self) -> impl Iterator<Item = &RubricItem> {
        self.items.iter().filter(|i| i.reward)
    }

    pub fn hash(&self) -> String {
        crate::hash::content_hash(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_ctrs_has_the_eleven_items_in_order() {
        let r = crate::builtin::rubric().unwrap();
        assert_eq!(
            r.item_ids(),
            vec![
                "agenda",
                "feedback",
                "understanding",
                "interpersonal_effectiveness",
                "collaboration",
                "pacing",
                "guided_discovery",
                "focus_on_key_cognitions",
                "strategy_for_change",
                "application_of_cbt_techniques",
                "homework"
            ]
        );
        let off: Vec<&str> = r
            .items
            .iter()
            .filter(|i| !i.reward)
            .map(|i| i.id.as_str())
            .collect();
        assert_eq!(
            off,
            vec!["guided_discovery", "application_of_cbt_techniques"]
        );
        assert!(r.items.iter().all(|i| i.anchors.len() == 4));
        assert_eq!((r.min_score, r.max_score), (0, 6));
    }

    #[test]
    fn the_ctrs_hash_is_unchanged_by_the_format_extension() {
        // The content hash of the shipped CTRS before codes and derived scores existed: old
        // runs, manifests and judgment sets keep their identity.
        let r = crate::builtin::rubric().unwrap();
        assert!(r.codes.is_empty() && r.derived.is_empty());
        assert_eq!(r.hash(), CTRS_HASH);
    }

    #[test]
    fn shipped_mi_has_the_miti_structure() {
        let r = crate::builtin::load_rubric(Path::new("mi")).unwrap();
        assert_eq!((r.min_score, r.max_score), (1, 5));
        assert_eq!(
            r.item_ids(),
            [
                "cultivating_change_talk",
                "softening_sustain_talk",
                "partnership",
                "empathy"
            ]
        );
        let codes: Vec<&str> = r.codes.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(codes.len(), 10);
        let derived: Vec<&str> = r.derived.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(
            derived,
            [
                "technical_global",
                "relational_global",
                "percent_complex_reflections",
                "reflection_to_question_ratio",
                "mi_adherent",
                "mi_non_adherent"
            ]
        );
        let score = |s: u8| crate::judgment::ItemScore {
            score: s,
            rationale: String::new(),
        };
        let utter = |k: u32, c: &[&str]| crate::judgment::UtteranceCodes {
            utterance: k,
            codes: c.iter().map(|s| s.to_string()).collect(),
        };
        let j = Judgment {
            ctrs: [
                ("cultivating_change_talk".to_string(), score(4)),
                ("softening_sustain_talk".to_string(), score(3)),
                ("partnership".to_string(), score(5)),
                ("empathy".to_string(), score(4)),
            ]
            .into(),
            codes: vec![
                utter(1, &["question", "affirm"]),
                utter(2, &["simple_reflection", "question"]),
                utter(3, &["complex_reflection", "persuade"]),
                utter(
                    4,
                    &["complex_reflection", "emphasizing_autonomy", "confront"],
                ),
            ],
            ..Judgment::default()
        };
        let d: BTreeMap<String, Option<f64>> = r
            .derive(&j)
            .into_iter()
            .map(|(k, v)| (k, v.value))
            .collect();
        assert_eq!(d["technical_global"], Some(3.5));
        assert_eq!(d["relational_global"], Some(4.5));
        assert!((d["percent_complex_reflections"].unwrap() - 200.0 / 3.0).abs() < 1e-9);
        assert_eq!(d["reflection_to_question_ratio"], Some(1.5));
        assert_eq!(d["mi_adherent"], Some(2.0));
        assert_eq!(d["mi_non_adherent"], Some(2.0));
        // No reflections and no questions: both ratios have no value, with the reason.
        let j = Judgment {
            codes: vec![utter(1, &["giving_information"])],
            ..j
        };
        let d = r.derive(&j);
        assert_eq!(d[2].1.value, None);
        assert_eq!(
            d[2].1.reason.as_deref(),
            Some("denominator is 0 (no simple_reflection or complex_reflection in the session)")
        );
        assert_eq!(d[3].1.value, None);
        assert_eq!(d[4].1.value, Some(0.0), "a count of nothing is a real 0");
    }

    const CTRS_HASH: &str =
        "sha256:99f09211fa18f9a43b1a2ad81a8803dec15d6c25a67b037262f926b34e732b9d";

    #[test]
    fn codes_and_derived_scores_are_checked() {
        let p = Path::new("r.toml");
        let base = "id='x'\nversion=1\nname='n'\nmin_score=1\nmax_score=5\n[[items]]\nid='a'\nname='A'\nreward=true\nmeasures='m'\n[items.anchors]\n\"1\"='x'\n[[items]]\nid='b'\nname='B'\nreward=true\nmeasures='m'\n[items.anchors]\n\"5\"='x'\n[[codes]]\nid='q'\nname='Q'\ndefinition='d'\n[[codes]]\nid='r'\nname='R'\ndefinition='d'\n";
        let ok = format!(
            "{base}[[derived]]\nid='m'\nname='M'\nkind='mean'\nof=['a','b']\n[[derived]]\nid='rq'\nname='RQ'\nkind='ratio'\nnum=['r']\nden=['q']\n[[derived]]\nid='pc'\nname='PC'\nkind='percent'\nnum=['r']\nden=['q','r']\n"
        );
        let r = Rubric::parse(&ok, p).unwrap();
        assert_eq!(
            r.derived_range(r.derived_score("m").unwrap()),
            Some([1.0, 5.0])
        );
        assert_eq!(r.derived_range(r.derived_score("rq").unwrap()), None);
        assert_eq!(
            r.derived_range(r.derived_score("pc").unwrap()),
            Some([0.0, 100.0])
        );
        let err = |extra: &str| {
            Rubric::parse(&format!("{base}{extra}"), p)
                .unwrap_err()
                .to_string()
        };
        let e = err("[[derived]]\nid='m'\nname='M'\nkind='ratio'\nof=['a']\n");
        assert!(
            e.contains("`kind = \"ratio\"` needs non-empty `num` and `den`"),
            "{e}"
        );
        let e = err("[[derived]]\nid='m'\nname='M'\nkind='mean'\nof=['a','zz']\n");
        assert!(
            e.contains("(`m`)") && e.contains("`zz` is neither an item nor a code"),
            "{e}"
        );
        let e = err("[[codes]]\nid='a'\nname='A'\ndefinition='d'\n");
        assert!(e.contains("unique across items, codes and derived"), "{e}");
        let e = err("[[derived]]\nid='m'\nname='M'\nkind='median'\nof=['a']\n");
        assert!(e.contains("unknown variant `median`"), "{e}");
        let e = err("[[derived]]\nid='m'\nname='M'\nkind='sum'\nof=['q']\nrange=[2.0, 1.0]\n");
        assert!(e.contains("lo < hi"), "{e}");
    }

    #[test]
    fn bad_rubrics_are_rejected() {
        let p = Path::new("r.toml");
        let base = "id='x'\nversion=1\nname='n'\nmin_score=0\nmax_score=6\n";
        let e = Rubric::parse(base, p).unwrap_err().to_string();
        assert!(e.contains("r.toml"), "{e}");
        let item =
            "[[items]]\nid='a'\nname='A'\nreward=true\nmeasures='m'\n[items.anchors]\n\"9\"='x'\n";
        let e = Rubric::parse(&format!("{base}{item}"), p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("anchor key \"9\""), "{e}");
    }
}
