//! Rubrics as data (`data/rubrics/*.toml`): CTRS today; MITI, DBT or ACT rubrics need only a file.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Location};

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
    pub items: Vec<RubricItem>,
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
        if !r.items.iter().any(|i| i.reward) {
            return Err(DataError::invalid(
                at,
                "no item has `reward = true`; the reward would be undefined",
            ));
        }
        Ok(r)
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
