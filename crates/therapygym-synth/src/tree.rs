//! The TreeSynth tree: nodes with their path constraints, sketches, chosen dimension and
//! values, children and counts. Node results (`NodeResult`) are what the run directory stores
//! per finished node; the tree is rebuilt from them deterministically (child ids and
//! constraints follow from the parent's result), so `tree.json` is a view, never the only copy.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// One attribute on a root-to-node path. One value, or (for a dimension whose value list
/// exceeded the infinite threshold) a list from which each prompt draws one at random.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraint {
    pub dimension: String,
    pub values: Vec<String>,
}

impl Constraint {
    pub fn is_list(&self) -> bool {
        self.values.len() > 1
    }
}

/// Why a node is a leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeafReason {
    /// It is at `depth`.
    MaxDepth,
    /// A target is set and the frontier already plans enough profiles (see `oversample`).
    TargetBudget,
    /// No usable sketches after the bounded re-asks.
    NoSamples,
    /// No valid new dimension in `dimension_attempts` attempts (the spec's fallback).
    NoDimension,
}

impl LeafReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LeafReason::MaxDepth => "max_depth",
            LeafReason::TargetBudget => "target_budget",
            LeafReason::NoSamples => "no_samples",
            LeafReason::NoDimension => "no_dimension",
        }
    }
}

/// How the value list was completed (step 4).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expansion {
    /// Values proposed with the dimension.
    pub proposed: usize,
    /// Each expansion reply's status (`null`, `complete`, `infinite`) or `error:<kind>`.
    pub statuses: Vec<String>,
    /// The model declared the dimension infinite.
    pub infinite: bool,
}

/// A node's dimension, values and how its sketches fell into them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    pub dimension: String,
    pub values: Vec<String>,
    /// For each sketch, the index of its value.
    pub assignments: Vec<usize>,
    pub expansion: Expansion,
    /// The list exceeded `infinite_threshold`: one child carries the whole list.
    pub list_child: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    Split(Split),
    Leaf { reason: LeafReason },
}

/// The stored result of expanding one node (`nodes/<id>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeResult {
    pub schema_revision: u32,
    pub node: String,
    /// The process attempt (1 = first run, 2 = first resume, ...) that expanded it.
    pub attempt: u32,
    /// Model calls the expansion made.
    pub calls: u32,
    pub samples: Vec<String>,
    pub outcome: Outcome,
    /// Why failed attempts failed (re-asked sketches, rejected dimensions, bad expansions).
    pub failures: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Expanded,
    Leaf,
}

/// Per-leaf profile counts (filled during the leaf phase).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafCounts {
    /// `samples_per_node × infinite_path_samples^k`.
    pub planned: u64,
    pub candidates: u64,
    pub kept: u64,
    pub rejected: u64,
    pub duplicates: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    pub depth: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Every attribute on the path from the root.
    pub constraints: Vec<Constraint>,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leaf_reason: Option<LeafReason>,
    /// This node's own sketches.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<String>,
    /// The parent's sketches that were assigned to this node's value.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inherited: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split: Option<Split>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<String>,
    /// Model calls spent expanding this node.
    pub calls: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<LeafCounts>,
    /// Profiles kept in this node's subtree.
    pub kept: u64,
}

impl Node {
    fn new(id: String, depth: u32, parent: Option<String>, constraints: Vec<Constraint>) -> Self {
        Self {
            id,
            depth,
            parent,
            constraints,
            status: Status::Pending,
            leaf_reason: None,
            samples: Vec::new(),
            inherited: Vec::new(),
            split: None,
            children: Vec::new(),
            calls: 0,
            failures: Vec::new(),
            counts: None,
            kept: 0,
        }
    }

    /// List-valued constraints on the path (the `k` of `infinite_path_samples^k`).
    pub fn list_valued(&self) -> u32 {
        u32::try_from(self.constraints.iter().filter(|c| c.is_list()).count()).unwrap_or(u32::MAX)
    }

    pub fn used_dimensions(&self) -> Vec<String> {
        self.constraints
            .iter()
            .map(|c| c.dimension.clone())
            .collect()
    }
}

#[derive(Debug, Clone, Default)]
pub struct Tree {
    pub nodes: Vec<Node>,
    index: HashMap<String, usize>,
}

pub const ROOT: &str = "n0";

impl Tree {
    pub fn new() -> Self {
        let mut t = Self::default();
        t.push(Node::new(ROOT.into(), 0, None, Vec::new()));
        t
    }

    fn push(&mut self, n: Node) -> usize {
        let i = self.nodes.len();
        self.index.insert(n.id.clone(), i);
        self.nodes.push(n);
        i
    }

    pub fn get(&self, id: &str) -> Option<&Node> {
        self.index.get(id).map(|&i| &self.nodes[i])
    }

    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Pending nodes at `depth`, in creation (breadth-first) order.
    pub fn pending_at(&self, depth: u32) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].depth == depth && self.nodes[i].status == Status::Pending)
            .collect()
    }

    /// Marks a node as a leaf without expanding it.
    pub fn make_leaf(&mut self, i: usize, reason: LeafReason) {
        let n = &mut self.nodes[i];
        n.status = Status::Leaf;
        n.leaf_reason = Some(reason);
    }

    /// Applies a node's result: records it and creates its children.
    pub fn apply(&mut self, r: &NodeResult) -> Result<(), String> {
        let i = self
            .index_of(&r.node)
            .ok_or_else(|| format!("node `{}` is not in the tree", r.node))?;
        let (depth, constraints) = {
            let n = &mut self.nodes[i];
            if n.status != Status::Pending {
                return Err(format!("node `{}` was already expanded", r.node));
            }
            n.samples = r.samples.clone();
            n.calls = r.calls;
            n.failures = r.failures.clone();
            (n.depth, n.constraints.clone())
        };
        match &r.outcome {
            Outcome::Leaf { reason } => self.make_leaf(i, *reason),
            Outcome::Split(s) => {
                let mut children = Vec::new();
                let groups: Vec<(Vec<String>, Vec<String>)> = if s.list_child {
                    vec![(s.values.clone(), r.samples.clone())]
                } else {
                    s.values
                        .iter()
                        .enumerate()
                        .map(|(vi, v)| {
                            let inherited = s
                                .assignments
                                .iter()
                                .zip(&r.samples)
                                .filter(|(a, _)| **a == vi)
                                .map(|(_, t)| t.clone())
                                .collect();
                            (vec![v.clone()], inherited)
                        })
                        .collect()
                };
                for (ci, (values, inherited)) in groups.into_iter().enumerate() {
                    let id = format!("{}.{ci}", r.node);
                    let mut c = constraints.clone();
                    c.push(Constraint {
                        dimension: s.dimension.clone(),
                        values,
                    });
                    let mut child = Node::new(id.clone(), depth + 1, Some(r.node.clone()), c);
                    child.inherited = inherited;
                    self.push(child);
                    children.push(id);
                }
                let n = &mut self.nodes[i];
                n.status = Status::Expanded;
                n.split = Some(s.clone());
                n.children = children;
            }
        }
        Ok(())
    }

    /// Leaves in breadth-first order.
    pub fn leaves(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].status == Status::Leaf)
            .collect()
    }

    /// Dimension names and how many nodes split on each.
    pub fn dimensions(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for n in &self.nodes {
            if let Some(s) = &n.split {
                *m.entry(s.dimension.clone()).or_insert(0) += 1;
            }
        }
        m
    }

    /// Adds each leaf's kept count to its ancestors' `kept`.
    pub fn roll_up_kept(&mut self) {
        for n in &mut self.nodes {
            n.kept = n.counts.as_ref().map(|c| c.kept).unwrap_or(0);
        }
        for i in (0..self.nodes.len()).rev() {
            let (kept, parent) = (self.nodes[i].kept, self.nodes[i].parent.clone());
            if let Some(p) = parent.and_then(|p| self.index_of(&p)) {
                self.nodes[p].kept += kept;
            }
        }
    }

    pub fn view<'a>(&'a self, task: &'a str) -> TreeView<'a> {
        let mut leaf_reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut per_depth: BTreeMap<u32, usize> = BTreeMap::new();
        for n in &self.nodes {
            *per_depth.entry(n.depth).or_insert(0) += 1;
            if let Some(r) = n.leaf_reason {
                *leaf_reasons.entry(r.as_str().to_string()).or_insert(0) += 1;
            }
        }
        TreeView {
            schema_revision: 1,
            task,
            nodes_total: self.nodes.len(),
            leaves: self.leaves().len(),
            nodes_per_depth: per_depth,
            leaf_reasons,
            dimensions: self.dimensions(),
            nodes: &self.nodes,
        }
    }
}

/// `tree.json`: the whole tree with summary counts.
#[derive(Debug, Serialize)]
pub struct TreeView<'a> {
    pub schema_revision: u32,
    /// The root's task description.
    pub task: &'a str,
    pub nodes_total: usize,
    pub leaves: usize,
    pub nodes_per_depth: BTreeMap<u32, usize>,
    pub leaf_reasons: BTreeMap<String, usize>,
    pub dimensions: BTreeMap<String, usize>,
    pub nodes: &'a [Node],
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(values: &[&str], assignments: Vec<usize>, list_child: bool) -> Outcome {
        Outcome::Split(Split {
            dimension: "setting".into(),
            values: values.iter().map(|v| v.to_string()).collect(),
            assignments,
            expansion: Expansion::default(),
            list_child,
        })
    }

    fn result(node: &str, outcome: Outcome) -> NodeResult {
        NodeResult {
            schema_revision: 1,
            node: node.into(),
            attempt: 1,
            calls: 3,
            samples: vec!["a".into(), "b".into(), "c".into()],
            outcome,
            failures: vec![],
        }
    }

    #[test]
    fn children_follow_from_results() {
        let mut t = Tree::new();
        t.apply(&result(
            ROOT,
            split(&["city", "village"], vec![0, 1, 0], false),
        ))
        .unwrap();
        let c0 = t.get("n0.0").unwrap();
        assert_eq!(c0.depth, 1);
        assert_eq!(c0.inherited, vec!["a", "c"]);
        assert_eq!(c0.constraints[0].values, vec!["city"]);
        assert_eq!(t.pending_at(1).len(), 2);
        t.apply(&result(
            "n0.1",
            split(&["x", "y", "z"], vec![0, 1, 2], true),
        ))
        .unwrap();
        let l = t.get("n0.1.0").unwrap();
        assert_eq!(l.list_valued(), 1);
        assert_eq!(l.inherited.len(), 3);
        assert!(
            t.apply(&result("n0.1", split(&["x"], vec![0, 0, 0], false)))
                .is_err()
        );
        t.make_leaf(t.index_of("n0.0").unwrap(), LeafReason::MaxDepth);
        t.make_leaf(t.index_of("n0.1.0").unwrap(), LeafReason::MaxDepth);
        assert_eq!(t.leaves().len(), 2);
        let leaf = t.index_of("n0.1.0").unwrap();
        t.nodes[leaf].counts = Some(LeafCounts {
            kept: 5,
            ..Default::default()
        });
        t.roll_up_kept();
        assert_eq!(t.get(ROOT).unwrap().kept, 5);
        assert_eq!(t.dimensions()["setting"], 2);
    }
}
