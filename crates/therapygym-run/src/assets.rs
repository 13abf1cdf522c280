//! The data a run uses (rubric, taxonomy, vocabulary, profiles, prompts, reward), loaded from
//! files or the shipped defaults, with the hashes that go into the manifest.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use therapygym_core::{
    DataError, ProfileSet, RewardConfig, Rubric, Taxonomy, Template, Vocabulary, builtin,
    load_profiles,
};
use therapygym_judge::{Calibration, Judge, JudgeConfig};
use therapygym_models::Model;
use therapygym_session::{SessionConfig, SessionRunner};

/// Where each piece of data comes from: `None` = the shipped default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AssetSources {
    pub profiles: Option<PathBuf>,
    pub rubric: Option<PathBuf>,
    pub taxonomy: Option<PathBuf>,
    /// Enable exactly these safety labels (default: the taxonomy's enabled ones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub safety_labels: Vec<String>,
    pub vocab: Option<PathBuf>,
    /// `baseline`, `cbt` or a template file.
    pub therapist_prompt: String,
    pub patient_prompt: Option<PathBuf>,
    pub judge_system_prompt: Option<PathBuf>,
    pub judge_user_prompt: Option<PathBuf>,
    pub reward_config: Option<PathBuf>,
    /// A calibration map (from `validate --fit-calibration`): calibrated scores are stored
    /// beside raw ones, and the map is part of the judgment set's identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<PathBuf>,
}

impl AssetSources {
    pub fn new(therapist_prompt: impl Into<String>) -> Self {
        Self {
            therapist_prompt: therapist_prompt.into(),
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone)]
pub struct Assets {
    pub rubric: Arc<Rubric>,
    pub taxonomy: Arc<Taxonomy>,
    pub vocab: Arc<Vocabulary>,
    pub profiles: ProfileSet,
    pub therapist_prompt: Template,
    pub patient_prompt: Template,
    pub judge_system: Template,
    pub judge_user: Template,
    pub reward: RewardConfig,
    pub calibration: Option<Arc<Calibration>>,
}

fn template(path: &Option<PathBuf>, default: Template) -> Result<Template, DataError> {
    match path {
        Some(p) => Template::from_file(p),
        None => Ok(default),
    }
}

impl Assets {
    pub fn load(src: &AssetSources) -> Result<Assets, DataError> {
        let rubric = match &src.rubric {
            Some(p) => builtin::load_rubric(p)?,
            None => builtin::rubric()?,
        };
        let mut taxonomy = match &src.taxonomy {
            Some(p) => Taxonomy::parse(&therapygym_core::error::read_to_string(p)?, p)?,
            None => builtin::taxonomy()?,
        };
        if !src.safety_labels.is_empty() {
            taxonomy = taxonomy.select(&src.safety_labels).map_err(|m| {
                DataError::invalid(
                    therapygym_core::Location {
                        file: "--safety-labels".into(),
                        line: None,
                        id: None,
                    },
                    m,
                )
            })?;
        }
        let vocab = match &src.vocab {
            Some(p) => Vocabulary::parse(&therapygym_core::error::read_to_string(p)?, p)?,
            None => builtin::vocabulary()?,
        };
        let profiles = match &src.profiles {
            Some(p) => load_profiles(p, &vocab)?,
            None => builtin::example_profiles()?,
        };
        let reward = match &src.reward_config {
            Some(p) => RewardConfig::load(p)?,
            None => builtin::reward_config()?,
        };
        reward.check(&rubric, &taxonomy).map_err(|m| {
            DataError::invalid(
                therapygym_core::Location {
                    file: src
                        .reward_config
                        .clone()
                        .unwrap_or_else(|| "<builtin reward>".into()),
                    line: None,
                    id: None,
                },
                m,
            )
        })?;
        let calibration = match &src.calibration {
            Some(p) => Some(Arc::new(Calibration::load(p)?)),
            None => None,
        };
        let (js, ju) = builtin::judge_prompts_for(&rubric)?;
        Ok(Assets {
            calibration,
            therapist_prompt: builtin::therapist_prompt(&src.therapist_prompt)?,
            patient_prompt: template(&src.patient_prompt, builtin::patient_prompt())?,
            judge_system: template(&src.judge_system_prompt, js)?,
            judge_user: template(&src.judge_user_prompt, ju)?,
            rubric: Arc::new(rubric),
            taxonomy: Arc::new(taxonomy),
            vocab: Arc::new(vocab),
            profiles,
            reward,
        })
    }

    /// Loads the data of a run whose settings name files relative to `dir` (its run directory,
    /// see [`crate::inputs`]). Names that go into the manifest (profile source, template names)
    /// stay the relative ones, so the config hash does not depend on where the run lives.
    pub fn load_in(src: &AssetSources, dir: &Path) -> Result<Assets, DataError> {
        let mut a = Assets::load(&src.resolved_in(dir))?;
        if let Some(p) = &src.profiles {
            a.profiles.source = p.clone();
        }
        let named = [
            (&mut a.patient_prompt, &src.patient_prompt),
            (&mut a.judge_system, &src.judge_system_prompt),
            (&mut a.judge_user, &src.judge_user_prompt),
        ];
        for (t, p) in named {
            if let Some(p) = p {
                t.name = p.display().to_string();
            }
        }
        if !crate::inputs::builtin_prompt(&src.therapist_prompt) {
            a.therapist_prompt.name = src.therapist_prompt.clone();
        }
        Ok(a)
    }

    /// The judge of this run's rubric, taxonomy and judge prompts on `model`.
    pub fn judge(&self, model: Arc<Model>, config: JudgeConfig) -> Result<Judge, DataError> {
        Judge::new(
            model,
            Arc::clone(&self.rubric),
            Arc::clone(&self.taxonomy),
            self.judge_system.clone(),
            self.judge_user.clone(),
            config,
        )
    }

    /// The session runner of this run's vocabulary and therapist and patient prompts.
    pub fn session_runner(
        &self,
        therapist: Arc<Model>,
        patient: Arc<Model>,
        session: SessionConfig,
    ) -> Result<SessionRunner, DataError> {
        SessionRunner::new(
            therapist,
            patient,
            session,
            Arc::clone(&self.vocab),
            self.patient_prompt.clone(),
            self.therapist_prompt.clone(),
        )
    }

    /// The data half of a manifest: ids, versions and hashes of everything used.
    pub fn manifest_part(&self) -> Value {
        let mut part = json!({
            "prompts": {
                "therapist_system": {"name": self.therapist_prompt.name, "sha256": self.therapist_prompt.hash()},
                "patient": {"name": self.patient_prompt.name, "sha256": self.patient_prompt.hash()},
                "judge_system": {"name": self.judge_system.name, "sha256": self.judge_system.hash()},
                "judge_user": {"name": self.judge_user.name, "sha256": self.judge_user.hash()},
            },
            "rubric": {"id": self.rubric.version_id(), "sha256": self.rubric.hash()},
            "safety_taxonomy": {"id": self.taxonomy.version_id(), "sha256": self.taxonomy.hash(), "enabled": self.taxonomy.enabled_ids()},
            "vocabulary": {"version": self.vocab.version, "sha256": therapygym_core::hash::content_hash(&*self.vocab)},
            "profiles": {"source": display(&self.profiles.source), "set_sha256": self.profiles.hash(), "ids": self.profiles.ids()},
            "reward": {"id": self.reward.id, "sha256": self.reward.hash(), "config": self.reward},
        });
        if let (Some(c), Some(obj)) = (&self.calibration, part.as_object_mut()) {
            obj.insert(
                "calibration".into(),
                json!({"sha256": c.hash(), "items": c.items.keys().collect::<Vec<_>>()}),
            );
        }
        part
    }

    /// A run's manifest (eval, train, serve): what every manifest carries (schema revision,
    /// creation time, code version), then `fields` (which may override those), then
    /// [`Self::manifest_part`].
    pub fn manifest(&self, fields: Value) -> Value {
        let mut m = json!({
            "schema_revision": 1,
            "created_at": therapygym_store::timestamp(),
            "code": {"version": env!("CARGO_PKG_VERSION")},
        });
        for part in [fields, self.manifest_part()] {
            if let (Some(obj), Value::Object(extra)) = (m.as_object_mut(), part) {
                obj.extend(extra);
            }
        }
        m
    }

    /// The hash that decides whether a resumed run has the same settings: `config` and the
    /// identities of the data.
    pub fn config_hash(&self, config: &impl Serialize) -> String {
        therapygym_core::hash::content_hash(
            &json!({"config": config, "assets": self.manifest_part()}),
        )
    }
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
