//! TreeSHAP leaf by leaf from a flat copy of each tree, with precomputed tables after Fast
//! TreeSHAP v2 (Yang 2021): a leaf's Shapley values depend on the row only through which of
//! its path's distinct features the row satisfies.
//!
//! For a leaf whose path tests `d` distinct features, the product of each feature's cover
//! fractions `z_j` is fixed by the tree; the row decides only the "hot" pattern: for each
//! feature, whether the row takes every one of its splits on the path (a value inside the
//! path's interval for it, or missing where all its splits send missing values this way).
//! [`ShapTables`] keeps, per leaf, those `d` conditions and fractions, so explaining a row is
//! one flat pass over the leaves: `d` interval tests give the pattern, then
//!
//! * a leaf with at most [`MAX_TABLE_DEPTH`] distinct features reads its `d` shares from its
//!   table of `2^d` patterns, computed once with the [`shap`](super::shap) module's formula
//!   (so the values are the same), while the model's tables stay within
//!   [`MAX_TABLE_ENTRIES`] numbers;
//! * a deeper leaf computes its shares with that formula on the spot (`O(d·h)`).
//!
//! Tables are built the first time the model explains a row (or by
//! [`Gbdt::prepare_explanations`](super::Gbdt::prepare_explanations)).

use super::Gbdt;
use super::shap::{ShapScratch, leaf_shares};
use super::tree::TreeNode;

/// Most distinct features on a tabulated leaf's path: `2^10 · 10` numbers, 80 KB. (On a
/// 40-tree model of 1,240 leaves of up to 17 distinct features: 89 % of the leaves, 15.5 MB;
/// all of them would take 274 MB.)
pub(crate) const MAX_TABLE_DEPTH: usize = 10;

/// Most table numbers of one model (`f64`: 32 MB).
pub(crate) const MAX_TABLE_ENTRIES: usize = 4 << 20;

/// What a row must satisfy on one distinct feature of a leaf's path: `lower < x <= upper`
/// for a present value (the comparisons [`goes_left`](super::tree::goes_left) makes), or
/// `missing_ok` for NaN.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Condition {
    feature: usize,
    lower: f32,
    upper: f32,
    missing_ok: bool,
}

impl Condition {
    #[inline]
    fn holds(&self, x: f32) -> bool {
        if x.is_nan() {
            self.missing_ok
        } else {
            // A present value goes right of a split when `!(x <= threshold)`, i.e. `x >
            // threshold`.
            x > self.lower && x <= self.upper
        }
    }
}

/// One leaf, flat.
#[derive(Debug, Clone, PartialEq)]
struct FlatLeaf {
    value: f64,
    /// Its conditions and fractions are `conditions[start..start + d]`, `zeros[..]` alike.
    start: usize,
    d: usize,
    /// Where its table of `2^d` rows of `d` shares starts in `values` (row `p` for the
    /// pattern whose bit `s` says the row satisfies condition `s`), if it has one.
    table: Option<usize>,
}

/// The leaves of a model's trees, flat, and their tables.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ShapTables {
    leaves: Vec<FlatLeaf>,
    conditions: Vec<Condition>,
    zeros: Vec<f64>,
    values: Vec<f64>,
}

/// A leaf while the tree is read: its value and each distinct feature's condition and
/// cover-fraction product.
struct LeafPath {
    value: f64,
    conditions: Vec<Condition>,
    zeros: Vec<f64>,
}

impl ShapTables {
    /// The flat leaves of `model`, with tables for those of at most `max_depth` distinct
    /// features while the tables stay within `max_entries` numbers (leaves taken in order).
    pub(crate) fn build(model: &Gbdt, max_entries: usize, max_depth: usize) -> Self {
        let mut tables = ShapTables {
            leaves: Vec::new(),
            conditions: Vec::new(),
            zeros: Vec::new(),
            values: Vec::new(),
        };
        let mut scratch = ShapScratch::default();
        let mut hot = Vec::new();
        let mut paths = Vec::new();
        for tree in model.trees() {
            paths.clear();
            collect_leaves(tree.nodes(), 0, &mut Vec::new(), &mut paths);
            for leaf in &paths {
                let d = leaf.conditions.len();
                let size = (1usize << d.min(usize::BITS as usize - 1)) * d;
                let table =
                    (d <= max_depth && tables.values.len() + size <= max_entries).then(|| {
                        let start = tables.values.len();
                        for pattern in 0..(1usize << d) {
                            hot.clear();
                            hot.extend((0..d).map(|s| pattern >> s & 1 == 1));
                            let row = tables.values.len();
                            tables.values.resize(row + d, 0.0);
                            leaf_shares(
                                &mut scratch,
                                leaf.value,
                                &leaf.zeros,
                                &hot,
                                &mut tables.values[row..],
                            );
                        }
                        start
                    });
                tables.leaves.push(FlatLeaf {
                    value: leaf.value,
                    start: tables.conditions.len(),
                    d,
                    table,
                });
                tables.conditions.extend_from_slice(&leaf.conditions);
                tables.zeros.extend_from_slice(&leaf.zeros);
            }
        }
        tables
    }

    /// Adds every tree's Shapley values of `row` to `phi`, working in `scratch` for the
    /// leaves without a table.
    pub(crate) fn add(&self, row: &[f32], scratch: &mut ShapScratch, phi: &mut [f64]) {
        // Taken out of the scratch for the loop, put back after: no allocation once grown.
        let (mut hot, mut shares) = scratch.take_leaf_buffers();
        for leaf in &self.leaves {
            let conditions = &self.conditions[leaf.start..leaf.start + leaf.d];
            let mut pattern = 0usize;
            for (s, condition) in conditions.iter().enumerate() {
                pattern |= usize::from(condition.holds(row[condition.feature])) << s;
            }
            let leaf_shares_now: &[f64] = match leaf.table {
                Some(table) => {
                    let start = table + pattern * leaf.d;
                    &self.values[start..start + leaf.d]
                }
                None => {
                    hot.clear();
                    hot.extend((0..leaf.d).map(|s| pattern >> s & 1 == 1));
                    shares.resize(leaf.d, 0.0);
                    leaf_shares(
                        scratch,
                        leaf.value,
                        &self.zeros[leaf.start..leaf.start + leaf.d],
                        &hot,
                        &mut shares,
                    );
                    &shares
                }
            };
            for (condition, share) in conditions.iter().zip(leaf_shares_now) {
                phi[condition.feature] += share;
            }
        }
        scratch.put_leaf_buffers(hot, shares);
    }

    /// Table numbers held.
    pub(crate) fn entries(&self) -> usize {
        self.values.len()
    }

    /// Leaves with a table, of all leaves.
    #[cfg(test)]
    pub(crate) fn tabulated(&self) -> (usize, usize) {
        let with = self.leaves.iter().filter(|l| l.table.is_some()).count();
        (with, self.leaves.len())
    }
}

/// Every leaf under `node`, with `path` the distinct features' conditions and cover
/// fractions above it.
fn collect_leaves(
    nodes: &[TreeNode],
    node: usize,
    path: &mut Vec<(Condition, f64)>,
    leaves: &mut Vec<LeafPath>,
) {
    match nodes[node] {
        TreeNode::Leaf { value, .. } => leaves.push(LeafPath {
            value: f64::from(value),
            conditions: path.iter().map(|(c, _)| *c).collect(),
            zeros: path.iter().map(|(_, z)| *z).collect(),
        }),
        TreeNode::Split {
            feature,
            threshold,
            missing_left,
            left,
            right,
            cover,
            ..
        } => {
            for (child, goes_left) in [(left, true), (right, false)] {
                let fraction = nodes[child].cover() / cover;
                let seen = path.iter().position(|(c, _)| c.feature == feature);
                let kept = seen.map(|k| path[k]);
                let (condition, zero) = match seen {
                    Some(k) => &mut path[k],
                    None => {
                        path.push((
                            Condition {
                                feature,
                                lower: f32::NEG_INFINITY,
                                upper: f32::INFINITY,
                                missing_ok: true,
                            },
                            1.0,
                        ));
                        path.last_mut().expect("just pushed")
                    }
                };
                if goes_left {
                    condition.upper = condition.upper.min(threshold);
                    condition.missing_ok &= missing_left;
                } else {
                    condition.lower = condition.lower.max(threshold);
                    condition.missing_ok &= !missing_left;
                }
                *zero *= fraction;
                collect_leaves(nodes, child, path, leaves);
                match (seen, kept) {
                    (Some(k), Some(before)) => path[k] = before,
                    _ => {
                        path.pop();
                    }
                }
            }
        }
    }
}
