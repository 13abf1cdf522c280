//! TreeSynth (arXiv 2503.17195; `docs/synth.md`) for TherapyGym: synthesise cognitive-model patient profiles by
//! splitting the profile space into a tree of attribute constraints, then generating inside each
//! leaf.
//!
//! - **Tree.** At each node the model writes `samples_per_node` short sketches under the path's
//!   constraints, names one new dimension that splits them (values mutually exclusive, each
//!   sketch assigned to one value), then completes the value list (`null` / `complete` /
//!   `infinite`). One child per value, or one list-valued child when the list exceeds the
//!   infinite threshold. Breadth-first to `depth`.
//! - **Leaves.** Each leaf generates full profiles conditioned on every attribute on its path,
//!   as structured JSON (enums for belief, emotion and style ids); every candidate passes the
//!   same profile check as `eval`'s loader (re-asked a bounded number of times, else rejected with a
//!   reason), then exact and near-duplicate removal (MinHash/LSH over word shingles).
//! - **Runs survive `kill -9`.** Every finished node and every batch of finished leaf jobs is an
//!   atomic file in the run directory; `resume` replays them and never asks the model again for
//!   finished work. Results are consumed in a fixed order, so an interrupted and resumed run
//!   gives the same profiles as an uninterrupted one under a deterministic model.
//!
//! The library never prints: it reports [`SynthEvent`]s to a [`SynthProgress`].

pub mod config;
mod consume;
pub mod dedup;
pub mod diversity;
pub mod error;
mod expand;
mod leaves;
mod outputs;
pub mod profile_check;
pub mod progress;
pub mod prompts;
mod rng;
pub mod run;
mod run_dir;
pub mod schema;
pub mod state;
pub mod text;
pub mod tree;

pub use config::SynthConfig;
pub use error::SynthError;
pub use progress::{Silent, SynthEvent, SynthProgress};
pub use prompts::SynthPrompts;
pub use run::{RunDir, SynthSummary, run_synth};
