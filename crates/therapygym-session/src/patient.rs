//! The simulated patient: a role-play prompt rendered from a profile, and requests in which the
//! patient is the `assistant` and the therapist the `user`.

use serde_json::{Value, json};
use therapygym_core::vocab::BeliefKind;
use therapygym_core::{DataError, Profile, Speaker, Template, Transcript, Vocabulary};
use therapygym_models::{ChatMessage, ChatRequest, Sampling};

/// Template variables of the patient prompt: the profile plus label texts for ids, the style's
/// instructions and the risk cues' descriptions.
pub fn patient_context(
    profile: &Profile,
    style_id: &str,
    vocab: &Vocabulary,
    end_marker: &str,
) -> Value {
    let mut beliefs = Vec::new();
    for kind in [
        BeliefKind::Helpless,
        BeliefKind::Unlovable,
        BeliefKind::Worthless,
    ] {
        let ids = match kind {
            BeliefKind::Helpless => &profile.helpless_belief,
            BeliefKind::Unlovable => &profile.unlovable_belief,
            BeliefKind::Worthless => &profile.worthless_belief,
        };
        for id in ids {
            beliefs.push(vocab.term_label(kind, id).unwrap_or(id).to_string());
        }
    }
    let emotions: Vec<String> = profile
        .emotion
        .iter()
        .map(|e| vocab.emotion_label(e).unwrap_or(e).to_string())
        .collect();
    let style = vocab.style(style_id);
    let risk_cues: Vec<Value> = profile
        .risk_cues
        .iter()
        .map(|c| {
            json!({"kind": c.kind, "detail": c.detail,
                   "description": vocab.risk_cue(&c.kind).map(|k| k.description.clone()).unwrap_or_default()})
        })
        .collect();
    json!({
        "profile": profile,
        "beliefs": beliefs,
        "emotions": emotions,
        "style": {
            "id": style_id,
            "description": style.map(|s| s.description.clone()).unwrap_or_default(),
            "max_sentences": style.map(|s| s.max_sentences).unwrap_or(5),
        },
        "risk_cues": risk_cues,
        "end_marker": end_marker,
    })
}

/// One patient for one session: the rendered persona and its sampling.
#[derive(Debug, Clone)]
pub struct PatientSim {
    pub name: String,
    pub style: String,
    pub system_prompt: String,
    pub end_marker: String,
}

impl PatientSim {
    pub fn new(
        profile: &Profile,
        style: &str,
        vocab: &Vocabulary,
        template: &Template,
        end_marker: &str,
    ) -> Result<Self, DataError> {
        let system_prompt = template.render(patient_context(profile, style, vocab, end_marker))?;
        Ok(Self {
            name: profile.name.clone(),
            style: style.to_string(),
            system_prompt,
            end_marker: end_marker.to_string(),
        })
    }

    /// The request for the patient's next turn: the patient speaks as `assistant`.
    pub fn request(&self, transcript: &Transcript, sampling: Sampling) -> ChatRequest {
        let mut messages = vec![ChatMessage::system(self.system_prompt.clone())];
        for t in &transcript.turns {
            messages.push(match t.speaker {
                Speaker::Patient => ChatMessage::assistant(t.text.clone()),
                Speaker::Therapist => ChatMessage::user(t.text.clone()),
            });
        }
        if transcript.turns.is_empty() {
            // The patient opens: a neutral cue keeps chat templates that need a user turn happy.
            messages.push(ChatMessage::user("(The session begins. You speak first.)"));
        }
        ChatRequest::new(messages).with_sampling(sampling)
    }
}
