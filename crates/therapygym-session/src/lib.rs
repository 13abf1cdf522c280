//! Simulated therapy sessions. A [`Session`] is the state machine (who speaks next, the
//! transcript, the seeds); the [`SessionRunner`] drives it with a therapist model for `eval` and
//! `train`, while `serve` feeds it therapist turns from an RL engine. One implementation for all.

mod patient;
mod runner;
mod session;
mod text;

pub use patient::{PatientSim, patient_context};
pub use runner::{SessionResult, SessionRunner, render_therapist_prompt};
pub use session::{EndReason, Retries, Session, SessionConfig, SessionError, SessionSeeds};
pub use text::{clean_patient_reply, clean_therapist_reply};
