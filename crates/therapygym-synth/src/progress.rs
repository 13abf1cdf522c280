//! Progress events of a synthesis run; the CLI renders them (libraries never print).

/// Running totals of the leaf phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Candidates consumed (kept + rejected + duplicates).
    pub candidates: u64,
    pub kept: u64,
    pub rejected: u64,
    pub duplicates: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SynthEvent {
    /// The run starts (`attempt` 1) or resumes (`attempt` > 1).
    Started { attempt: u32, target: Option<usize> },
    /// A tree level starts: `to_expand` nodes need the model, `resumed` were finished before.
    Level {
        depth: u32,
        to_expand: usize,
        resumed: usize,
    },
    /// A node finished expanding (or was replayed from the run directory).
    Node {
        id: String,
        depth: u32,
        children: usize,
        leaf: Option<&'static str>,
        resumed: bool,
    },
    /// The tree is final: the leaf phase plans this many profiles over this many leaves.
    LeavesPlanned {
        leaves: usize,
        internal_nodes: usize,
        planned: u64,
    },
    /// A leaf job (one chunk of a leaf's sample sets) was consumed.
    Leaf { totals: Totals, resumed: bool },
    /// Something the user should know (clamped holdout, stalled top-up, ...).
    Warning(String),
    /// Outputs are written.
    Finished { totals: Totals },
}

pub trait SynthProgress: Send + Sync {
    fn event(&self, _e: &SynthEvent) {}
}

/// Progress that goes nowhere (tests, embedding).
pub struct Silent;

impl SynthProgress for Silent {}
