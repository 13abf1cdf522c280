//! The session state machine, shared by `eval`, `train` (through the runner) and `serve`
//! (step by step from an RL engine).

use serde::{Deserialize, Serialize};
use therapygym_core::seed::derive;
use therapygym_core::{Profile, Speaker, Template, Transcript, Turn, Vocabulary};
use therapygym_models::{
    ChatMessage, ChatRequest, ChatResponse, FinishReason, Model, ModelError, Sampling,
};

use crate::patient::PatientSim;
use crate::text::{clean_patient_reply, clean_therapist_reply};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionConfig {
    /// Therapist turns (5 = the paper's 10-message sessions with a closing patient reply).
    pub turns: u32,
    /// Who speaks first.
    pub opening: Speaker,
    /// After the therapist's last turn the patient answers once more (judged, not returned to a policy).
    pub closing_patient_reply: bool,
    pub therapist_sampling: Sampling,
    pub patient_sampling: Sampling,
    /// The patient writes this to end the session early.
    pub end_marker: String,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            turns: 5,
            opening: Speaker::Therapist,
            closing_patient_reply: true,
            therapist_sampling: Sampling {
                temperature: 0.7,
                top_p: 0.95,
                max_tokens: 256,
                seed: None,
                stop: Vec::new(),
            },
            patient_sampling: Sampling {
                temperature: 0.7,
                top_p: 0.95,
                max_tokens: 200,
                seed: None,
                stop: Vec::new(),
            },
            end_marker: "[END_SESSION]".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    TurnLimit,
    PatientEnded,
}

/// Seeds used by a session (echoed to engines, stored in the run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSeeds {
    pub session: u64,
    pub patient_open: u64,
    pub judge: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{role} turn {turn} of profile `{profile_id}` failed: {source}")]
    Model {
        role: &'static str,
        turn: u32,
        profile_id: String,
        #[source]
        source: ModelError,
    },
    #[error("patient prompt for profile `{profile_id}`: {source}")]
    Prompt {
        profile_id: String,
        #[source]
        source: Box<therapygym_core::DataError>,
    },
    #[error("the session of profile `{0}` is already finished")]
    Finished(String),
    #[error("it is the {expected}'s turn, not the {got}'s")]
    OutOfTurn {
        expected: &'static str,
        got: &'static str,
    },
}

/// One session between a therapist and the simulated patient of one profile.
#[derive(Debug, Clone)]
pub struct Session {
    pub profile_id: String,
    pub seed: u64,
    pub config: SessionConfig,
    pub therapist_system: String,
    pub patient: PatientSim,
    pub transcript: Transcript,
    pub end: Option<EndReason>,
    /// Transport retries of this session's model calls (attempts beyond the first), failed
    /// calls included: how flaky the endpoints were, recorded with the session.
    pub retries: Retries,
}

/// Model-call retries of one session, per role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Retries {
    pub therapist: u32,
    pub patient: u32,
}

impl Retries {
    pub fn total(&self) -> u32 {
        self.therapist.saturating_add(self.patient)
    }

    /// Counts the attempts beyond the first of one call of `role`'s model.
    pub fn count(&mut self, role: Speaker, attempts: u32) {
        let extra = attempts.saturating_sub(1);
        match role {
            Speaker::Therapist => self.therapist = self.therapist.saturating_add(extra),
            Speaker::Patient => self.patient = self.patient.saturating_add(extra),
        }
    }
}

impl Session {
    pub fn new(
        profile: &Profile,
        seed: u64,
        config: SessionConfig,
        vocab: &Vocabulary,
        patient_template: &Template,
        therapist_system: String,
    ) -> Result<Self, SessionError> {
        let style = profile.style_for(seed).to_string();
        let patient = PatientSim::new(profile, &style, vocab, patient_template, &config.end_marker)
            .map_err(|source| SessionError::Prompt {
                profile_id: profile.id.clone(),
                source: Box::new(source),
            })?;
        Ok(Self {
            profile_id: profile.id.clone(),
            seed,
            config,
            therapist_system,
            patient,
            transcript: Transcript::default(),
            end: None,
            retries: Retries::default(),
        })
    }

    pub fn seeds(&self) -> SessionSeeds {
        SessionSeeds {
            session: self.seed,
            patient_open: derive("patient_open", &self.profile_id, self.seed, None),
            judge: derive("judge", &self.profile_id, self.seed, None),
        }
    }

    pub fn therapist_turns(&self) -> u32 {
        u32::try_from(self.transcript.therapist_turns()).unwrap_or(u32::MAX)
    }

    pub fn is_done(&self) -> bool {
        self.end.is_some()
    }

    /// Who speaks next, or None when the session is over.
    pub fn next_speaker(&self) -> Option<Speaker> {
        if self.end.is_some() {
            return None;
        }
        Some(match self.transcript.turns.last() {
            None => self.config.opening,
            Some(t) => t.speaker.other(),
        })
    }

    /// The therapist's chat so far (therapist = assistant), for a therapist model or a policy.
    pub fn therapist_messages(&self) -> Vec<ChatMessage> {
        let mut m = vec![ChatMessage::system(self.therapist_system.clone())];
        for t in &self.transcript.turns {
            m.push(match t.speaker {
                Speaker::Therapist => ChatMessage::assistant(t.text.clone()),
                Speaker::Patient => ChatMessage::user(t.text.clone()),
            });
        }
        m
    }

    pub fn therapist_request(&self, seed: Option<u64>) -> ChatRequest {
        let mut sampling = self.config.therapist_sampling.clone();
        sampling.seed = seed;
        ChatRequest::new(self.therapist_messages()).with_sampling(sampling)
    }

    /// Records a therapist turn (from a model or an engine) and updates the ending state.
    pub fn push_therapist(
        &mut self,
        text: &str,
        resp: Option<&ChatResponse>,
    ) -> Result<&Turn, SessionError> {
        match self.next_speaker() {
            None => return Err(SessionError::Finished(self.profile_id.clone())),
            Some(Speaker::Patient) => {
                return Err(SessionError::OutOfTurn {
                    expected: "patient",
                    got: "therapist",
                });
            }
            Some(Speaker::Therapist) => {}
        }
        let mut turn = Turn::new(Speaker::Therapist, clean_therapist_reply(text));
        fill(&mut turn, resp);
        self.transcript.turns.push(turn);
        if self.therapist_turns() >= self.config.turns && !self.config.closing_patient_reply {
            self.end = Some(EndReason::TurnLimit);
        }
        self.transcript
            .turns
            .last()
            .ok_or_else(|| SessionError::Finished(self.profile_id.clone()))
    }

    /// Asks the patient model for its next turn and records it; the session ends when the
    /// patient writes the end marker or the turn limit is reached.
    pub async fn patient_turn(&mut self, patient: &Model) -> Result<&Turn, SessionError> {
        match self.next_speaker() {
            None => return Err(SessionError::Finished(self.profile_id.clone())),
            Some(Speaker::Therapist) => {
                return Err(SessionError::OutOfTurn {
                    expected: "therapist",
                    got: "patient",
                });
            }
            Some(Speaker::Patient) => {}
        }
        let turn_no = self.therapist_turns();
        let mut sampling = self.config.patient_sampling.clone();
        sampling.seed = Some(if self.transcript.turns.is_empty() {
            derive("patient_open", &self.profile_id, self.seed, None)
        } else {
            derive("patient", &self.profile_id, self.seed, Some(turn_no))
        });
        let req = self.patient.request(&self.transcript, sampling);
        let resp = patient.chat(&req).await;
        self.retries
            .count(Speaker::Patient, therapygym_models::call_attempts(&resp));
        let resp = resp.map_err(|source| SessionError::Model {
            role: "patient",
            turn: turn_no,
            profile_id: self.profile_id.clone(),
            source,
        })?;
        let (text, ended) =
            clean_patient_reply(&resp.text, &self.patient.name, &self.patient.end_marker);
        let mut turn = Turn::new(Speaker::Patient, text);
        fill(&mut turn, Some(&resp));
        self.transcript.turns.push(turn);
        if ended {
            self.end = Some(EndReason::PatientEnded);
        } else if self.therapist_turns() >= self.config.turns {
            self.end = Some(EndReason::TurnLimit);
        }
        self.transcript
            .turns
            .last()
            .ok_or_else(|| SessionError::Finished(self.profile_id.clone()))
    }

    /// Whether the therapist's last turn hit max_tokens (for a truncation penalty).
    pub fn therapist_truncated(&self) -> bool {
        self.transcript
            .turns
            .iter()
            .rev()
            .find(|t| t.speaker == Speaker::Therapist)
            .is_some_and(|t| t.finish_reason.as_deref() == Some(FinishReason::Length.as_str()))
    }

    /// All therapist text (for text-feature reward terms).
    pub fn therapist_text(&self) -> String {
        therapist_text(&self.transcript)
    }
}

pub(crate) fn therapist_text(t: &Transcript) -> String {
    t.turns
        .iter()
        .filter(|t| t.speaker == Speaker::Therapist)
        .map(|t| t.text.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn fill(turn: &mut Turn, resp: Option<&ChatResponse>) {
    if let Some(r) = resp {
        turn.prompt_tokens = Some(r.prompt_tokens);
        turn.completion_tokens = Some(r.completion_tokens);
        turn.latency_ms = Some(u64::try_from(r.latency.as_millis()).unwrap_or(u64::MAX));
        turn.finish_reason = Some(r.finish_reason.as_str().to_string());
    }
}
