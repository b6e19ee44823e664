//! The trees of a fitted [`Gbdt`](super::Gbdt): plain decision trees on raw
//! `f32` features, with the per-node statistics TreeSHAP and feature
//! importance need.

use serde::{Deserialize, Serialize};

/// One node of a [`GbdtTree`]. Children are indices into
/// [`GbdtTree::nodes`]; node 0 is the root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum TreeNode {
    /// Go to `left` when `row[feature] <= threshold`, else to `right`; a
    /// missing value (NaN) goes left when `missing_left`.
    Split {
        feature: usize,
        threshold: f32,
        missing_left: bool,
        left: usize,
        right: usize,
        /// Decrease of the training loss's second-order approximation
        /// brought by this split (before the learning rate).
        gain: f64,
        /// Training rows (of the tree's bag) reaching this node.
        cover: f64,
    },
    /// A leaf adding `value` to the logit.
    Leaf {
        value: f32,
        /// Training rows (of the tree's bag) reaching this leaf.
        cover: f64,
    },
}

impl TreeNode {
    /// Training rows reaching the node.
    pub fn cover(&self) -> f64 {
        match *self {
            TreeNode::Split { cover, .. } | TreeNode::Leaf { cover, .. } => cover,
        }
    }
}

/// A binary decision tree of the ensemble.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GbdtTree {
    nodes: Vec<TreeNode>,
}

/// The rule every traversal uses, the same as the ONNX runtime's: NaN
/// follows `missing_left`, otherwise `value <= threshold` goes left.
#[inline(always)]
pub(crate) fn goes_left(value: f32, threshold: f32, missing_left: bool) -> bool {
    if value.is_nan() {
        missing_left
    } else {
        value <= threshold
    }
}

impl GbdtTree {
    pub(crate) fn from_nodes(nodes: Vec<TreeNode>) -> Self {
        Self { nodes }
    }

    /// The nodes; node 0 is the root.
    pub fn nodes(&self) -> &[TreeNode] {
        &self.nodes
    }

    /// Index of the leaf node `row` reaches.
    ///
    /// # Panics
    /// If `row` is narrower than a split's feature index.
    #[inline]
    pub fn leaf_index(&self, row: &[f32]) -> usize {
        let mut at = 0;
        loop {
            match self.nodes[at] {
                TreeNode::Leaf { .. } => return at,
                TreeNode::Split {
                    feature,
                    threshold,
                    missing_left,
                    left,
                    right,
                    ..
                } => {
                    at = if goes_left(row[feature], threshold, missing_left) {
                        left
                    } else {
                        right
                    };
                }
            }
        }
    }

    /// The leaf value `row` gets.
    ///
    /// # Panics
    /// If `row` is narrower than a split's feature index.
    #[inline]
    pub fn leaf_value(&self, row: &[f32]) -> f32 {
        match self.nodes[self.leaf_index(row)] {
            TreeNode::Leaf { value, .. } => value,
            TreeNode::Split { .. } => unreachable!("leaf_index returns a leaf"),
        }
    }

    /// Number of leaves.
    pub fn n_leaves(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| matches!(n, TreeNode::Leaf { .. }))
            .count()
    }

    /// Largest number of splits from the root to a leaf.
    pub fn depth(&self) -> usize {
        let mut deepest = 0;
        let mut stack = vec![(0usize, 0usize)];
        while let Some((at, depth)) = stack.pop() {
            deepest = deepest.max(depth);
            if let TreeNode::Split { left, right, .. } = self.nodes[at] {
                stack.push((left, depth + 1));
                stack.push((right, depth + 1));
            }
        }
        deepest
    }

    /// Cover-weighted mean of the leaf values: the tree's expected output
    /// over its training rows, TreeSHAP's base value for this tree.
    pub fn expected_value(&self) -> f64 {
        let root_cover = self.nodes[0].cover();
        self.nodes
            .iter()
            .map(|n| match *n {
                TreeNode::Leaf { value, cover } => f64::from(value) * cover,
                TreeNode::Split { .. } => 0.0,
            })
            .sum::<f64>()
            / root_cover
    }

    /// Checks the tree is well formed: non-empty, every node reached exactly
    /// once from the root, features below `n_features`, finite numbers,
    /// positive covers with each split's cover the sum of its children's.
    pub(crate) fn validate(&self, n_features: usize) -> Result<(), String> {
        if self.nodes.is_empty() {
            return Err("has no nodes".into());
        }
        let mut seen = vec![false; self.nodes.len()];
        let mut stack = vec![0usize];
        while let Some(at) = stack.pop() {
            if std::mem::replace(&mut seen[at], true) {
                return Err(format!("node {at} is reached more than once"));
            }
            let node = &self.nodes[at];
            if !(node.cover() > 0.0 && node.cover().is_finite()) {
                return Err(format!("node {at} has cover {}", node.cover()));
            }
            match *node {
                TreeNode::Leaf { value, .. } => {
                    if !value.is_finite() {
                        return Err(format!("leaf {at} has value {value}"));
                    }
                }
                TreeNode::Split {
                    feature,
                    threshold,
                    left,
                    right,
                    gain,
                    cover,
                    ..
                } => {
                    if feature >= n_features {
                        return Err(format!(
                            "node {at} splits on feature {feature} of {n_features}"
                        ));
                    }
                    if !threshold.is_finite() || !gain.is_finite() {
                        return Err(format!("node {at} has a non-finite threshold or gain"));
                    }
                    for child in [left, right] {
                        if child >= self.nodes.len() {
                            return Err(format!("node {at} has child {child} out of range"));
                        }
                    }
                    let children = self.nodes[left].cover() + self.nodes[right].cover();
                    if (children - cover).abs() > 1e-9 * cover {
                        return Err(format!(
                            "node {at} has cover {cover} but its children {children}"
                        ));
                    }
                    stack.push(left);
                    stack.push(right);
                }
            }
        }
        if let Some(at) = seen.iter().position(|s| !s) {
            return Err(format!("node {at} is not reachable from the root"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn stump() -> GbdtTree {
        GbdtTree::from_nodes(vec![
            TreeNode::Split {
                feature: 1,
                threshold: 0.5,
                missing_left: false,
                left: 1,
                right: 2,
                gain: 1.0,
                cover: 4.0,
            },
            TreeNode::Leaf {
                value: -1.0,
                cover: 3.0,
            },
            TreeNode::Leaf {
                value: 2.0,
                cover: 1.0,
            },
        ])
    }

    #[test]
    fn traversal_follows_threshold_and_missing_rule() {
        let t = stump();
        assert_eq!(t.leaf_value(&[9.0, 0.5]), -1.0);
        assert_eq!(t.leaf_value(&[9.0, 0.500_001]), 2.0);
        assert_eq!(t.leaf_value(&[9.0, f32::NAN]), 2.0);
        assert_eq!(t.depth(), 1);
        assert_eq!(t.n_leaves(), 2);
        assert!((t.expected_value() - (-3.0 + 2.0) / 4.0).abs() < 1e-15);
        assert!(t.validate(2).is_ok());
        assert!(t.validate(1).is_err());
    }

    #[test]
    fn validate_rejects_shared_nodes_and_bad_covers() {
        let mut nodes = stump().nodes;
        if let TreeNode::Split { right, .. } = &mut nodes[0] {
            *right = 1;
        }
        assert!(GbdtTree::from_nodes(nodes).validate(2).is_err());
        let mut nodes = stump().nodes;
        nodes[2] = TreeNode::Leaf {
            value: 2.0,
            cover: 2.0,
        };
        assert!(GbdtTree::from_nodes(nodes).validate(2).is_err());
    }
}
