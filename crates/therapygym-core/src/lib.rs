//! TherapyGym's domain types and data files: patient profiles, rubrics, safety taxonomies,
//! prompt templates, transcripts, judgments, rewards and seed derivation. No I/O beyond reading
//! the files it is asked to read.

pub mod builtin;
pub mod csv;
pub mod error;
pub mod hash;
pub mod judgment;
pub mod measures;
pub mod profile;
pub mod prompts;
pub mod reward;
pub mod rubric;
pub mod seed;
pub mod taxonomy;
pub mod transcript;
pub mod vocab;

#[cfg(test)]
mod fuzz_tests;

pub use error::{DataError, Location};
pub use judgment::{ItemScore, Judgment, LabelFlag, UnscoredReason, UtteranceCodes, Verdict};
pub use measures::{BehaviourCode, DerivedKind, DerivedScore, DerivedValue};
pub use profile::{Profile, ProfileSet, RiskCue, load_profiles, parse_profile_value};
pub use prompts::Template;
pub use reward::{RewardBreakdown, RewardConfig};
pub use rubric::{Rubric, RubricItem};
pub use taxonomy::{SafetyLabel, Taxonomy};
pub use transcript::{Speaker, Transcript, Turn};
pub use vocab::Vocabulary;
