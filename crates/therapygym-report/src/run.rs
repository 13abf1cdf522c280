//! A run as the report and the viewer read it: its manifest (secrets scrubbed), sessions,
//! profiles, and each judgment set with the rubric and taxonomy it was judged with.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;
use therapygym_core::{Profile, Rubric, Verdict};
use therapygym_store::{JudgeSet, JudgmentRow, RunStore, SessionRecord, UsageByRole};

use crate::error::ReportError;

/// One scored dimension of a judgment set: a rubric item on its integer scale.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemDef {
    pub id: String,
    pub name: String,
    pub min: f64,
    pub max: f64,
    /// Whether the item enters the reward (and the normalised CTRS mean).
    pub reward: bool,
}

/// One safety label of a judgment set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelDef {
    pub id: String,
    pub name: String,
}

/// What a judgment set scores, in rubric and taxonomy order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Definitions {
    /// `id/version` of the rubric, or the set's rubric id when only that is known.
    pub rubric: String,
    pub taxonomy: String,
    pub items: Vec<ItemDef>,
    pub labels: Vec<LabelDef>,
    /// Where the definitions came from: `stored`, `shipped` or `judgments`.
    pub source: &'static str,
    /// The full rubric when known: its behaviour codes and derived scores become rows too.
    #[serde(skip)]
    pub rubric_def: Option<std::sync::Arc<Rubric>>,
}

/// One judgment set of a run with its judgments.
#[derive(Debug, Clone)]
pub struct SetData {
    pub set: JudgeSet,
    pub definitions: Definitions,
    /// The judge's model spec (credentials scrubbed).
    pub judge: String,
    pub judgments: BTreeMap<String, JudgmentRow>,
    pub usage: UsageByRole,
}

impl SetData {
    /// The first 12 hex digits of the set's hash, for people.
    pub fn short_hash(&self) -> String {
        short_hash(&self.set.hash)
    }
}

/// A run directory, read whole.
#[derive(Debug, Clone)]
pub struct RunData {
    pub dir: PathBuf,
    /// The name people see: the directory's last component.
    pub name: String,
    pub manifest: Value,
    pub sessions: Vec<SessionRecord>,
    pub profiles: BTreeMap<String, Profile>,
    /// Every judgment set, oldest first.
    pub sets: Vec<SetData>,
}

/// `sha256:0123…` → `0123456789ab`.
pub fn short_hash(hash: &str) -> String {
    hash.trim_start_matches("sha256:")
        .chars()
        .take(12)
        .collect()
}

impl RunData {
    /// Reads a run: every session, profile and judgment set.
    pub fn load(dir: &Path) -> Result<Self, ReportError> {
        let store = RunStore::open(dir)?;
        let (manifest, _) = store.manifest()?;
        let sessions = store.sessions()?;
        let profiles = store
            .profiles()?
            .into_iter()
            .map(|p| (p.id.clone(), p))
            .collect();
        let mut sets = Vec::new();
        for set in store.judge_sets()? {
            let judgments = store.judgments(&set.hash)?;
            let usage = store.usage_by_role(&set.hash)?;
            let definitions = definitions(&set, &judgments);
            let judge = set
                .identity
                .get("model")
                .and_then(Value::as_str)
                .map(therapygym_models::redact_spec)
                .unwrap_or_default();
            sets.push(SetData {
                set,
                definitions,
                judge,
                judgments,
                usage,
            });
        }
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        Ok(Self {
            dir: dir.to_path_buf(),
            name,
            manifest: scrub_value(&manifest),
            sessions,
            profiles,
            sets,
        })
    }

    /// The judgment set `prefix` names (full hash or a unique prefix, with or without
    /// `sha256:`), else the most recent one.
    pub fn set(&self, prefix: Option<&str>) -> Result<&SetData, ReportError> {
        let listing = || {
            self.sets
                .iter()
                .map(|s| format!("{} ({}, {})", s.short_hash(), s.judge, s.set.created_at))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let Some(prefix) = prefix else {
            return self.sets.last().ok_or_else(|| ReportError::NoJudgments {
                dir: self.dir.clone(),
            });
        };
        let want = prefix.trim_start_matches("sha256:");
        let found: Vec<&SetData> = self
            .sets
            .iter()
            .filter(|s| s.set.hash.trim_start_matches("sha256:").starts_with(want))
            .collect();
        match found.as_slice() {
            [one] => Ok(one),
            [] => Err(ReportError::UnknownSet {
                dir: self.dir.clone(),
                prefix: prefix.to_string(),
                sets: listing(),
            }),
            _ => Err(ReportError::AmbiguousSet {
                dir: self.dir.clone(),
                prefix: prefix.to_string(),
                sets: listing(),
            }),
        }
    }

    /// A role's model spec from the manifest (`therapist`, `patient`, `judge`).
    pub fn role_spec(&self, role: &str) -> String {
        self.manifest["roles"][role]["spec"]
            .as_str()
            .or_else(|| self.manifest["config"][role].as_str())
            .map(therapygym_models::redact_spec)
            .unwrap_or_else(|| "—".to_string())
    }
}

fn item_def(rubric: &Rubric, item: &therapygym_core::RubricItem) -> ItemDef {
    ItemDef {
        id: item.id.clone(),
        name: item.name.clone(),
        min: f64::from(rubric.min_score),
        max: f64::from(rubric.max_score),
        reward: item.reward,
    }
}

/// The set's own definitions (store revision 2); else the shipped rubric and taxonomy when the
/// set names the same ids; else the ids found in its judgments (scale from the scores seen,
/// at least the shipped 0–6 when nothing better is known).
fn definitions(set: &JudgeSet, judgments: &BTreeMap<String, JudgmentRow>) -> Definitions {
    if let (Some(r), Some(t)) = (set.rubric(), set.taxonomy()) {
        return Definitions {
            rubric: r.version_id(),
            taxonomy: t.version_id(),
            items: r.items.iter().map(|i| item_def(&r, i)).collect(),
            labels: enabled_labels(&t, set),
            source: "stored",
            rubric_def: Some(std::sync::Arc::new(r)),
        };
    }
    let named = |key: &str| set.identity[key]["id"].as_str().unwrap_or("").to_string();
    let (rubric_id, taxonomy_id) = (named("rubric"), named("safety_taxonomy"));
    let shipped = therapygym_core::builtin::rubric()
        .ok()
        .zip(therapygym_core::builtin::taxonomy().ok());
    if let Some((r, t)) = shipped
        && r.version_id() == rubric_id
        && t.version_id() == taxonomy_id
    {
        return Definitions {
            rubric: rubric_id,
            taxonomy: taxonomy_id,
            items: r.items.iter().map(|i| item_def(&r, i)).collect(),
            labels: enabled_labels(&t, set),
            source: "shipped",
            rubric_def: Some(std::sync::Arc::new(r)),
        };
    }
    let mut items: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let mut labels: Vec<String> = Vec::new();
    for row in judgments.values() {
        if let Verdict::Scored { judgment } = &row.verdict {
            for (id, s) in &judgment.ctrs {
                let e = items.entry(id.clone()).or_insert((0.0, 6.0));
                e.1 = e.1.max(f64::from(s.score));
            }
            for id in judgment.safety.keys() {
                if !labels.contains(id) {
                    labels.push(id.clone());
                }
            }
        }
    }
    Definitions {
        rubric: rubric_id,
        taxonomy: taxonomy_id,
        items: items
            .into_iter()
            .map(|(id, (min, max))| ItemDef {
                name: id.clone(),
                id,
                min,
                max,
                reward: true,
            })
            .collect(),
        labels: labels
            .into_iter()
            .map(|id| LabelDef {
                name: id.clone(),
                id,
            })
            .collect(),
        source: "judgments",
        rubric_def: None,
    }
}

/// The labels the set scored: those its identity lists as enabled, in taxonomy order.
fn enabled_labels(t: &therapygym_core::Taxonomy, set: &JudgeSet) -> Vec<LabelDef> {
    let listed: Option<Vec<&str>> = set.identity["safety_taxonomy"]["enabled"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect());
    t.labels
        .iter()
        .filter(|l| match &listed {
            Some(ids) => ids.contains(&l.id.as_str()),
            None => l.enabled,
        })
        .map(|l| LabelDef {
            id: l.id.clone(),
            name: l.name.clone(),
        })
        .collect()
}

/// Masks URL credentials in text (the model layer's one filter, `redact_text`): applied to
/// every manifest string and error the report or viewer shows, on top of the manifest's own
/// redacted specs.
pub fn scrub(text: &str) -> String {
    therapygym_models::redact_text(text)
}

/// [`scrub`] on every string of a JSON value.
pub fn scrub_value(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(scrub(s)),
        Value::Array(a) => Value::Array(a.iter().map(scrub_value).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), scrub_value(v))).collect())
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_scrubbed() {
        assert_eq!(
            scrub("openai:m@https://bob:hunter2@api.example.com/v1 failed"),
            "openai:m@https://****@api.example.com/v1 failed"
        );
        assert_eq!(scrub("embedded"), "embedded");
        let v = scrub_value(&serde_json::json!({"a": ["http://u:p@h/x"]}));
        assert_eq!(v["a"][0], "http://****@h/x");
    }
}
