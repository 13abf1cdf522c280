//! Drives a [`Session`] with a therapist model: the loop of `eval` and of `train`'s rollouts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use therapygym_core::seed::derive;
use therapygym_core::{DataError, Profile, Speaker, Template, Vocabulary};
use therapygym_models::Model;

use crate::session::{Session, SessionConfig, SessionError};

pub struct SessionRunner {
    pub therapist: Arc<Model>,
    pub patient: Arc<Model>,
    pub config: SessionConfig,
    pub vocab: Arc<Vocabulary>,
    pub patient_template: Template,
    pub therapist_template: Template,
    /// The rendered therapist system prompt.
    pub therapist_system: String,
}

#[derive(Debug)]
pub struct SessionResult {
    pub session: Session,
    pub duration: Duration,
}

impl SessionRunner {
    pub fn new(
        therapist: Arc<Model>,
        patient: Arc<Model>,
        config: SessionConfig,
        vocab: Arc<Vocabulary>,
        patient_template: Template,
        therapist_template: Template,
    ) -> Result<Self, DataError> {
        let therapist_system = render_therapist_prompt(&therapist_template, &config)?;
        Ok(Self {
            therapist,
            patient,
            config,
            vocab,
            patient_template,
            therapist_template,
            therapist_system,
        })
    }

    pub fn new_session(&self, profile: &Profile, seed: u64) -> Result<Session, SessionError> {
        Session::new(
            profile,
            seed,
            self.config.clone(),
            &self.vocab,
            &self.patient_template,
            self.therapist_system.clone(),
        )
    }

    /// Runs a whole session. `therapist_tag` salts the therapist's sampling seeds: `therapist`
    /// for evaluation, `policy:<member>` for GRPO group members (same patient, different rollouts).
    pub async fn run(
        &self,
        profile: &Profile,
        seed: u64,
        therapist_tag: &str,
    ) -> Result<SessionResult, SessionError> {
        let started = Instant::now();
        let mut s = self.new_session(profile, seed)?;
        self.drive(&mut s, therapist_tag).await?;
        Ok(SessionResult {
            session: s,
            duration: started.elapsed(),
        })
    }

    /// Plays a session to its end. On error the session keeps the turns taken so far.
    pub async fn drive(&self, s: &mut Session, therapist_tag: &str) -> Result<(), SessionError> {
        while let Some(next) = s.next_speaker() {
            match next {
                Speaker::Therapist => {
                    let turn = s.therapist_turns() + 1;
                    let req = s.therapist_request(Some(derive(
                        therapist_tag,
                        &s.profile_id,
                        s.seed,
                        Some(turn),
                    )));
                    let resp = self.therapist.chat(&req).await;
                    s.retries
                        .count(Speaker::Therapist, therapygym_models::call_attempts(&resp));
                    let resp = resp.map_err(|source| SessionError::Model {
                        role: "therapist",
                        turn,
                        profile_id: s.profile_id.clone(),
                        source,
                    })?;
                    s.push_therapist(&resp.text, Some(&resp))?;
                }
                Speaker::Patient => {
                    s.patient_turn(&self.patient).await?;
                }
            }
        }
        Ok(())
    }
}

/// Therapist prompt variables: `turns` (the therapist's replies in this session).
pub fn render_therapist_prompt(t: &Template, config: &SessionConfig) -> Result<String, DataError> {
    t.render(json!({"turns": config.turns}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use therapygym_core::builtin;
    use therapygym_models::{ModelOptions, RetryPolicy, open_model};

    async fn runner(therapist: &str, patient: &str, config: SessionConfig) -> SessionRunner {
        let o = ModelOptions {
            retry: RetryPolicy::none(),
            ..ModelOptions::default()
        };
        let t = open_model(&therapist.parse().unwrap(), o.clone())
            .await
            .unwrap();
        let p = open_model(&patient.parse().unwrap(), o).await.unwrap();
        SessionRunner::new(
            t,
            p,
            config,
            Arc::new(builtin::vocabulary().unwrap()),
            builtin::patient_prompt(),
            builtin::therapist_prompt("cbt").unwrap(),
        )
        .unwrap()
    }

    fn profile() -> Profile {
        builtin::example_profiles().unwrap().profiles[0].clone()
    }

    #[tokio::test]
    async fn therapist_opens_and_turns_alternate_to_the_limit() {
        let r = runner(
            "scripted:fixed:How was your week?",
            "scripted:fixed:It was hard.",
            SessionConfig {
                turns: 3,
                ..Default::default()
            },
        )
        .await;
        let s = r.run(&profile(), 42, "therapist").await.unwrap().session;
        let speakers: Vec<Speaker> = s.transcript.turns.iter().map(|t| t.speaker).collect();
        assert_eq!(speakers, [Speaker::Therapist, Speaker::Patient].repeat(3));
        assert_eq!(s.end, Some(crate::EndReason::TurnLimit));
        assert!(
            s.transcript
                .turns
                .iter()
                .all(|t| t.finish_reason.as_deref() == Some("stop") && t.latency_ms.is_some())
        );
    }

    #[tokio::test]
    async fn default_is_ten_messages_and_patient_can_open() {
        let r = runner(
            "scripted:fixed:Hello.",
            "scripted:fixed:Hi.",
            SessionConfig::default(),
        )
        .await;
        assert_eq!(
            r.run(&profile(), 1, "therapist")
                .await
                .unwrap()
                .session
                .transcript
                .turns
                .len(),
            10
        );
        let cfg = SessionConfig {
            opening: Speaker::Patient,
            closing_patient_reply: false,
            ..Default::default()
        };
        let r = runner("scripted:fixed:Hello.", "scripted:fixed:Hi.", cfg).await;
        let s = r.run(&profile(), 1, "therapist").await.unwrap().session;
        assert_eq!(s.transcript.turns[0].speaker, Speaker::Patient);
        assert_eq!(
            s.transcript.turns.last().unwrap().speaker,
            Speaker::Therapist
        );
        assert_eq!(s.therapist_turns(), 5);
    }

    #[tokio::test]
    async fn patient_can_end_early() {
        let r = runner(
            "scripted:fixed:Let us stop here.",
            "scripted:fixed:Okay, goodbye. [END_SESSION]",
            SessionConfig::default(),
        )
        .await;
        let s = r.run(&profile(), 1, "therapist").await.unwrap().session;
        assert_eq!(s.transcript.turns.len(), 2);
        assert_eq!(s.end, Some(crate::EndReason::PatientEnded));
        assert_eq!(s.transcript.turns[1].text, "Okay, goodbye.");
    }

    #[tokio::test]
    async fn seeds_depend_on_profile_seed_and_turn_only() {
        let r = runner("scripted:echo", "scripted:echo", SessionConfig::default()).await;
        let p = profile();
        let a = r.new_session(&p, 7).unwrap();
        let b = r.new_session(&p, 7).unwrap();
        assert_eq!(a.seeds(), b.seeds());
        assert_eq!(a.patient.system_prompt, b.patient.system_prompt);
        assert_ne!(a.seeds(), r.new_session(&p, 8).unwrap().seeds());
        // The patient's request for a given turn is identical across group members.
        let mut a = a;
        let mut b = b;
        a.push_therapist("Hi", None).unwrap();
        b.push_therapist("Hi", None).unwrap();
        a.patient_turn(&r.patient).await.unwrap();
        b.patient_turn(&r.patient).await.unwrap();
        assert_eq!(a.transcript, b.transcript);
    }

    #[tokio::test]
    async fn a_failing_patient_names_role_turn_and_profile() {
        let r = runner(
            "scripted:echo",
            "scripted:http_500",
            SessionConfig::default(),
        )
        .await;
        let e = r
            .run(&profile(), 1, "therapist")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!(
                "patient turn 1 of profile `{}` failed",
                profile().id
            )),
            "{e}"
        );
    }

    #[test]
    fn patient_prompt_renders_profile_facts_not_ids() {
        let vocab = builtin::vocabulary().unwrap();
        let p = profile();
        let sim = crate::PatientSim::new(
            &p,
            &p.style,
            &vocab,
            &builtin::patient_prompt(),
            "[END_SESSION]",
        )
        .unwrap();
        assert!(sim.system_prompt.contains(&p.name));
        assert!(sim.system_prompt.contains(&p.situation));
        let label = vocab
            .term_label(
                therapygym_core::vocab::BeliefKind::Helpless,
                &p.helpless_belief[0],
            )
            .unwrap_or("");
        if !p.helpless_belief.is_empty() {
            assert!(sim.system_prompt.contains(label));
        }
        assert!(!sim.system_prompt.contains("{{"));
    }
}
