//! Session transcripts: who said what, with the generation facts of each message.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Speaker {
    Therapist,
    Patient,
}

impl Speaker {
    pub fn as_str(self) -> &'static str {
        match self {
            Speaker::Therapist => "therapist",
            Speaker::Patient => "patient",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Speaker::Therapist => "Therapist",
            Speaker::Patient => "Patient",
        }
    }

    /// Accepts our names and chat roles (`assistant` = therapist, `user` = patient).
    pub fn parse(s: &str) -> Option<Speaker> {
        match s.trim().to_ascii_lowercase().as_str() {
            "therapist" | "assistant" | "counselor" | "counsellor" => Some(Speaker::Therapist),
            "patient" | "user" | "client" => Some(Speaker::Patient),
            _ => None,
        }
    }

    pub fn other(self) -> Speaker {
        match self {
            Speaker::Therapist => Speaker::Patient,
            Speaker::Patient => Speaker::Therapist,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub speaker: Speaker,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
}

impl Turn {
    pub fn new(speaker: Speaker, text: impl Into<String>) -> Self {
        Self {
            speaker,
            text: text.into(),
            prompt_tokens: None,
            completion_tokens: None,
            latency_ms: None,
            finish_reason: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    pub turns: Vec<Turn>,
}

impl Transcript {
    /// The judge's view: `Therapist:` / `Patient:` lines, whitespace-normalised, no system prompt
    /// and no engine ids, so identical conversations give identical judge requests.
    pub fn canonical(&self) -> String {
        self.turns
            .iter()
            .map(|t| {
                format!(
                    "{}: {}",
                    t.speaker.label(),
                    t.text.split_whitespace().collect::<Vec<_>>().join(" ")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The canonical view with each therapist line numbered among the therapist's lines
    /// (`Therapist [1]: …`), for rubrics whose judge codes every therapist utterance.
    pub fn numbered(&self) -> String {
        let mut k = 0;
        self.turns
            .iter()
            .map(|t| {
                let text = t.text.split_whitespace().collect::<Vec<_>>().join(" ");
                if t.speaker == Speaker::Therapist {
                    k += 1;
                    format!("{} [{k}]: {text}", t.speaker.label())
                } else {
                    format!("{}: {text}", t.speaker.label())
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn therapist_turns(&self) -> usize {
        self.turns
            .iter()
            .filter(|t| t.speaker == Speaker::Therapist)
            .count()
    }

    pub fn hash(&self) -> String {
        crate::hash::text_hash(&self.canonical())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_normalises_whitespace() {
        let t = Transcript {
            turns: vec![
                Turn::new(Speaker::Therapist, "Hello,\n  how are you?"),
                Turn::new(Speaker::Patient, " Tired. "),
            ],
        };
        assert_eq!(
            t.canonical(),
            "Therapist: Hello, how are you?\nPatient: Tired."
        );
        let mut t2 = t.clone();
        t2.turns.push(Turn::new(Speaker::Therapist, "Tired how?"));
        assert_eq!(
            t2.numbered(),
            "Therapist [1]: Hello, how are you?\nPatient: Tired.\nTherapist [2]: Tired how?"
        );
        assert_eq!(Speaker::parse("assistant"), Some(Speaker::Therapist));
        assert_eq!(Speaker::parse("USER"), Some(Speaker::Patient));
        assert_eq!(Speaker::parse("narrator"), None);
    }
}
