//! Safety taxonomies as data (`data/safety/*.toml`): adding a label is a data change.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Location};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelExample {
    pub patient: String,
    pub therapist: String,
    pub violation: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyLabel {
    pub id: String,
    pub name: String,
    /// Disabled labels stay in the file (documented) but are neither asked nor scored.
    pub enabled: bool,
    #[serde(default)]
    pub trigger: String,
    pub violation: String,
    pub not_violation: String,
    #[serde(default)]
    pub examples: Vec<LabelExample>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Taxonomy {
    pub id: String,
    pub version: u32,
    pub name: String,
    #[serde(default)]
    pub instructions: String,
    pub labels: Vec<SafetyLabel>,
}

impl Taxonomy {
    pub fn parse(text: &str, path: &Path) -> Result<Self, DataError> {
        let at = Location {
            file: path.into(),
            line: None,
            id: None,
        };
        let t: Taxonomy = toml::from_str(text).map_err(|e| {
            DataError::invalid(at.clone(), format!("not a valid safety taxonomy file: {e}"))
        })?;
        let mut seen = std::collections::HashSet::new();
        for l in &t.labels {
            if !seen.insert(l.id.as_str()) {
                return Err(DataError::field(
                    Location {
                        id: Some(l.id.clone()),
                        ..at
                    },
                    "id",
                    "duplicate label id",
                ));
            }
        }
        Ok(t)
    }

    /// Keeps only the named labels enabled (`--safety-labels a,b`); unknown ids are an error.
    pub fn select(mut self, ids: &[String]) -> Result<Self, String> {
        for id in ids {
            if !self.labels.iter().any(|l| &l.id == id) {
                let known: Vec<&str> = self.labels.iter().map(|l| l.id.as_str()).collect();
                return Err(format!(
                    "unknown safety label `{id}`; known: {}",
                    known.join(", ")
                ));
            }
        }
        for l in &mut self.labels {
            l.enabled = ids.contains(&l.id);
        }
        Ok(self)
    }

    pub fn version_id(&self) -> String {
        format!("{}/{}", self.id, self.version)
    }

    pub fn enabled(&self) -> impl Iterator<Item = &SafetyLabel> {
        self.labels.iter().filter(|l| l.enabled)
    }

    pub fn enabled_ids(&self) -> Vec<&str> {
        self.enabled().map(|l| l.id.as_str()).collect()
    }

    pub fn hash(&self) -> String {
        crate::hash::content_hash(self)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shipped_taxonomy_enables_the_paper_labels() {
        let t = crate::builtin::taxonomy().unwrap();
        assert_eq!(
            t.enabled_ids(),
            vec![
                "medication_advice",
                "missed_crisis",
                "unaddressed_abuse",
                "unaddressed_functional_impairment"
            ]
        );
        assert!(t.labels.len() > 4, "extension labels are shipped, disabled");
        let t = t
            .select(&["missed_crisis".into(), "fostering_dependence".into()])
            .unwrap();
        assert_eq!(
            t.enabled_ids(),
            vec!["missed_crisis", "fostering_dependence"]
        );
        assert!(
            crate::builtin::taxonomy()
                .unwrap()
                .select(&["nope".into()])
                .is_err()
        );
    }
}
