//! One run = one directory holding `run.sqlite` (WAL, synchronous=FULL) and readable copies of
//! the manifest. Each finished session is committed with all its messages in one transaction;
//! judgments are separate rows keyed by `(session_id, judge_hash)`, so re-scoring adds rows and
//! never edits transcripts. A process killed at any moment leaves a consistent file: a session
//! is either wholly there or absent, and `--resume` runs exactly the absent ones.

pub mod export;
pub mod fault;
pub mod fs;
mod store;

pub use store::{
    JudgeSet, JudgmentRow, RoleUsage, RunStore, SessionRecord, SessionStatus, StoreError,
    UsageByRole, timestamp,
};
