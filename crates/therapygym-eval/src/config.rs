//! How much of an evaluation runs at once. Not part of the run's hash: it changes speed only.

use serde::{Deserialize, Serialize};

/// Calls in flight: whole sessions, and per role (each role has its own pool).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Concurrency {
    pub sessions: usize,
    pub therapist: usize,
    pub patient: usize,
    pub judge: usize,
}

impl Concurrency {
    pub fn uniform(n: usize) -> Self {
        let n = n.max(1);
        Self {
            sessions: n,
            therapist: n,
            patient: n,
            judge: n,
        }
    }
}
