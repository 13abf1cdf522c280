//! A finished session as the policy saw it, ready to become a training sequence.

use therapygym_core::{Speaker, Transcript};
use therapygym_grpo::ChatMessage;

use crate::backend::SampledIds;

/// The therapist-side chat of a session (system prompt, patient = user, therapist = assistant)
/// up to the therapist's last turn. A closing patient reply is dropped: it follows the last
/// trained token and would only cost compute.
pub fn policy_chat(system: &str, transcript: &Transcript, ids: &SampledIds) -> Vec<ChatMessage> {
    let last_therapist = transcript
        .turns
        .iter()
        .rposition(|t| t.speaker == Speaker::Therapist);
    let mut out = vec![ChatMessage::system(system.to_string())];
    let Some(last) = last_therapist else {
        return out;
    };
    for t in &transcript.turns[..=last] {
        out.push(match t.speaker {
            Speaker::Patient => ChatMessage::user(t.text.clone()),
            Speaker::Therapist => ChatMessage {
                token_ids: ids.get(&t.text),
                ..ChatMessage::assistant(t.text.clone())
            },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use therapygym_core::Turn;
    use therapygym_grpo::Role;

    #[test]
    fn the_closing_patient_reply_is_dropped_and_roles_map() {
        let t = Transcript {
            turns: vec![
                Turn::new(Speaker::Patient, "I can't sleep."),
                Turn::new(Speaker::Therapist, "Tell me more."),
                Turn::new(Speaker::Patient, "Work worries me."),
                Turn::new(Speaker::Therapist, "What goes through your mind?"),
                Turn::new(Speaker::Patient, "That I will fail."),
            ],
        };
        let chat = policy_chat("sys", &t, &SampledIds::default());
        let roles: Vec<Role> = chat.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [
                Role::System,
                Role::User,
                Role::Assistant,
                Role::User,
                Role::Assistant
            ]
        );
        assert_eq!(chat[4].content, "What goes through your mind?");
        assert!(chat.iter().all(|m| m.token_ids.is_none()));
    }

    #[test]
    fn a_session_without_therapist_turns_has_nothing_to_train() {
        let t = Transcript {
            turns: vec![Turn::new(Speaker::Patient, "Hello?")],
        };
        assert_eq!(policy_chat("sys", &t, &SampledIds::default()).len(), 1);
    }
}
