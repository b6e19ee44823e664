//! Exact path-dependent TreeSHAP (Lundberg, Erion and Lee 2018, algorithm
//! 2) for [`Gbdt`].
//!
//! The expectation of a tree when a feature is unknown follows both
//! children of its splits, weighted by the training rows (covers) that went
//! each way. Per tree the cost is `O(leaves · depth²)`; all the working
//! memory is one [`ShapScratch`], reused across rows and trees, so scoring a
//! request allocates nothing once the scratch exists.

use super::Gbdt;
use super::tree::{TreeNode, goes_left};

/// One element of the feature path: which feature, the fraction of the
/// paths' cover kept when it is unknown (`zero`) or known (`one`, 0 or 1),
/// and the permutation weight.
#[derive(Debug, Clone, Copy, Default)]
struct PathElement {
    feature: usize,
    zero_fraction: f64,
    one_fraction: f64,
    weight: f64,
}

/// Sentinel feature of the path's first element (no feature).
const NO_FEATURE: usize = usize::MAX;

/// Working memory for [`Gbdt::shap_values_into`]: the path stack of the
/// recursion, sized for the deepest tree. Create one per thread (e.g. per
/// worker) and reuse it for every row and model.
#[derive(Debug, Clone, Default)]
pub struct ShapScratch {
    paths: Vec<PathElement>,
    /// `reciprocals[k] = 1 / k`: the recursion multiplies instead of
    /// dividing in its inner loops.
    reciprocals: Vec<f64>,
}

impl ShapScratch {
    /// A scratch large enough for `model` (it grows itself if later used
    /// with a deeper model).
    pub fn new(model: &Gbdt) -> Self {
        let mut scratch = Self::default();
        scratch.reserve_for_depth(model.max_depth);
        scratch
    }

    fn reserve_for_depth(&mut self, depth: usize) {
        // A node at depth d keeps a path of at most d + 1 elements, one
        // segment per level: Σ_{d=0}^{D+1} (d + 1) elements.
        let needed = (depth + 2) * (depth + 3) / 2;
        if self.paths.len() < needed {
            self.paths.resize(needed, PathElement::default());
        }
        if self.reciprocals.len() < depth + 3 {
            self.reciprocals = (0..depth + 3).map(|k| 1.0 / k as f64).collect();
        }
    }
}

impl Gbdt {
    /// TreeSHAP values of `row`: returns the expected value (the model's
    /// mean logit over the training rows) and one contribution per feature,
    /// with `expected + Σ phi == raw_score(row)`. Allocates; see
    /// [`shap_values_into`](Self::shap_values_into) for the serving path.
    ///
    /// # Panics
    /// If `row.len() != n_features`.
    pub fn shap_values(&self, row: &[f32]) -> (f64, Vec<f64>) {
        let mut scratch = ShapScratch::new(self);
        let mut phi = vec![0.0; self.n_features];
        let expected = self.shap_values_into(row, &mut scratch, &mut phi);
        (expected, phi)
    }

    /// [`shap_values`](Self::shap_values) writing the contributions into
    /// `phi` (overwritten) and working in `scratch`; returns the expected
    /// value. Allocation-free when `scratch` came from
    /// [`ShapScratch::new`] for this model.
    ///
    /// # Panics
    /// If `row.len()` or `phi.len()` differ from `n_features`.
    pub fn shap_values_into(&self, row: &[f32], scratch: &mut ShapScratch, phi: &mut [f64]) -> f64 {
        assert_eq!(row.len(), self.n_features, "row width");
        assert_eq!(phi.len(), self.n_features, "phi width");
        scratch.reserve_for_depth(self.max_depth);
        phi.fill(0.0);
        for tree in &self.trees {
            let walk = Walk {
                nodes: tree.nodes(),
                row,
                reciprocals: &scratch.reciprocals,
            };
            walk.recurse(0, &mut scratch.paths, 0, 1.0, 1.0, NO_FEATURE, phi);
        }
        self.expected_value
    }
}

/// One tree's TreeSHAP recursion for one row.
struct Walk<'a> {
    nodes: &'a [TreeNode],
    row: &'a [f32],
    reciprocals: &'a [f64],
}

impl Walk<'_> {
    /// Visits `node` with `path[..depth]` holding the parent's path; the
    /// rest of `path` is free space for the descendants.
    #[allow(
        clippy::too_many_arguments,
        reason = "the recursion state of the paper's algorithm"
    )]
    fn recurse(
        &self,
        node: usize,
        path: &mut [PathElement],
        mut depth: usize,
        zero_fraction: f64,
        one_fraction: f64,
        feature: usize,
        phi: &mut [f64],
    ) {
        let recip = self.reciprocals;
        extend(path, depth, zero_fraction, one_fraction, feature, recip);
        match self.nodes[node] {
            TreeNode::Leaf { value, .. } => {
                let value = f64::from(value);
                for i in 1..=depth {
                    let weight = unwound_sum(path, depth, i, recip);
                    let element = path[i];
                    phi[element.feature] +=
                        weight * (element.one_fraction - element.zero_fraction) * value;
                }
            }
            TreeNode::Split {
                feature: split_feature,
                threshold,
                missing_left,
                left,
                right,
                cover,
                ..
            } => {
                let (hot, cold) = if goes_left(self.row[split_feature], threshold, missing_left) {
                    (left, right)
                } else {
                    (right, left)
                };
                let hot_zero = self.nodes[hot].cover() / cover;
                let cold_zero = self.nodes[cold].cover() / cover;
                let mut incoming_zero = 1.0;
                let mut incoming_one = 1.0;
                // A feature seen before on the path is merged, not repeated.
                if let Some(k) = (1..=depth).find(|&k| path[k].feature == split_feature) {
                    incoming_zero = path[k].zero_fraction;
                    incoming_one = path[k].one_fraction;
                    unwind(path, depth, k, recip);
                    depth -= 1;
                }
                let (own, rest) = path.split_at_mut(depth + 1);
                for (child, child_zero, child_one) in [
                    (hot, hot_zero * incoming_zero, incoming_one),
                    (cold, cold_zero * incoming_zero, 0.0),
                ] {
                    rest[..=depth].copy_from_slice(own);
                    self.recurse(
                        child,
                        rest,
                        depth + 1,
                        child_zero,
                        child_one,
                        split_feature,
                        phi,
                    );
                }
            }
        }
    }
}

/// Appends a feature to the path (elements `0..depth` become `0..=depth`)
/// and updates the permutation weights.
fn extend(
    path: &mut [PathElement],
    depth: usize,
    zero_fraction: f64,
    one_fraction: f64,
    feature: usize,
    recip: &[f64],
) {
    path[depth] = PathElement {
        feature,
        zero_fraction,
        one_fraction,
        weight: if depth == 0 { 1.0 } else { 0.0 },
    };
    let inv_n = recip[depth + 1];
    for i in (0..depth).rev() {
        path[i + 1].weight += one_fraction * path[i].weight * (i + 1) as f64 * inv_n;
        path[i].weight = zero_fraction * path[i].weight * (depth - i) as f64 * inv_n;
    }
}

/// Removes element `index` from the path `0..=depth`, undoing its
/// [`extend`].
fn unwind(path: &mut [PathElement], depth: usize, index: usize, recip: &[f64]) {
    let one = path[index].one_fraction;
    let zero = path[index].zero_fraction;
    let n = (depth + 1) as f64;
    let inv_n = recip[depth + 1];
    let mut next_one_portion = path[depth].weight;
    if one != 0.0 {
        let inv_one = 1.0 / one;
        for i in (0..depth).rev() {
            let kept = path[i].weight;
            path[i].weight = next_one_portion * n * recip[i + 1] * inv_one;
            next_one_portion = kept - path[i].weight * zero * (depth - i) as f64 * inv_n;
        }
    } else {
        let inv_zero = 1.0 / zero;
        for i in (0..depth).rev() {
            path[i].weight *= n * inv_zero * recip[depth - i];
        }
    }
    for i in index..depth {
        path[i].feature = path[i + 1].feature;
        path[i].zero_fraction = path[i + 1].zero_fraction;
        path[i].one_fraction = path[i + 1].one_fraction;
    }
}

/// Total permutation weight of the path with element `index` removed,
/// without modifying it.
fn unwound_sum(path: &[PathElement], depth: usize, index: usize, recip: &[f64]) -> f64 {
    let one = path[index].one_fraction;
    let zero = path[index].zero_fraction;
    let n = (depth + 1) as f64;
    let inv_n = recip[depth + 1];
    let mut total = 0.0;
    if one != 0.0 {
        let inv_one = 1.0 / one;
        let mut next_one_portion = path[depth].weight;
        for i in (0..depth).rev() {
            let part = next_one_portion * n * recip[i + 1] * inv_one;
            total += part;
            next_one_portion = path[i].weight - part * zero * (depth - i) as f64 * inv_n;
        }
    } else {
        let inv_zero = 1.0 / zero;
        for i in (0..depth).rev() {
            total += path[i].weight * recip[depth - i];
        }
        total *= n * inv_zero;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::super::rng::SplitMix64;
    use super::super::tree::GbdtTree;
    use super::super::{GbdtParams, TrainData};
    use super::*;

    /// A random tree over `n_features` with consistent integer covers;
    /// features may repeat along a path.
    fn random_tree(rng: &mut SplitMix64, n_features: usize, max_depth: usize) -> GbdtTree {
        fn grow(
            rng: &mut SplitMix64,
            nodes: &mut Vec<TreeNode>,
            at: usize,
            cover: usize,
            depth: usize,
            n_features: usize,
            max_depth: usize,
        ) {
            if depth == max_depth || cover < 2 || rng.below(5) == 0 {
                nodes[at] = TreeNode::Leaf {
                    value: (rng.next_f64() * 2.0 - 1.0) as f32,
                    cover: cover as f64,
                };
                return;
            }
            let left_cover = 1 + rng.below(cover - 1);
            let left = nodes.len();
            nodes.push(TreeNode::Leaf {
                value: 0.0,
                cover: 0.0,
            });
            nodes.push(TreeNode::Leaf {
                value: 0.0,
                cover: 0.0,
            });
            nodes[at] = TreeNode::Split {
                feature: rng.below(n_features),
                threshold: (rng.next_f64() * 10.0).round() as f32 / 10.0,
                missing_left: rng.below(2) == 0,
                left,
                right: left + 1,
                gain: 1.0,
                cover: cover as f64,
            };
            grow(
                rng,
                nodes,
                left,
                left_cover,
                depth + 1,
                n_features,
                max_depth,
            );
            grow(
                rng,
                nodes,
                left + 1,
                cover - left_cover,
                depth + 1,
                n_features,
                max_depth,
            );
        }
        let mut nodes = vec![TreeNode::Leaf {
            value: 0.0,
            cover: 0.0,
        }];
        let cover = 50 + rng.below(1000);
        grow(rng, &mut nodes, 0, cover, 0, n_features, max_depth);
        GbdtTree::from_nodes(nodes)
    }

    /// Path-dependent `E[tree | x_S]`: known features follow `row`,
    /// unknown ones average the children by cover.
    fn conditional_expectation(tree: &GbdtTree, at: usize, row: &[f32], known: u32) -> f64 {
        match tree.nodes()[at] {
            TreeNode::Leaf { value, .. } => f64::from(value),
            TreeNode::Split {
                feature,
                threshold,
                missing_left,
                left,
                right,
                cover,
                ..
            } => {
                if known & (1 << feature) != 0 {
                    let next = if goes_left(row[feature], threshold, missing_left) {
                        left
                    } else {
                        right
                    };
                    conditional_expectation(tree, next, row, known)
                } else {
                    let l = tree.nodes()[left].cover();
                    let r = tree.nodes()[right].cover();
                    (l * conditional_expectation(tree, left, row, known)
                        + r * conditional_expectation(tree, right, row, known))
                        / cover
                }
            }
        }
    }

    /// Exact Shapley values by enumerating every feature subset.
    fn brute_force_shap(model: &Gbdt, row: &[f32]) -> (f64, Vec<f64>) {
        let m = model.n_features();
        let value = |known: u32| {
            f64::from(model.base_score())
                + model
                    .trees()
                    .iter()
                    .map(|t| conditional_expectation(t, 0, row, known))
                    .sum::<f64>()
        };
        let factorial = |n: usize| (1..=n).map(|k| k as f64).product::<f64>();
        let mut phi = vec![0.0; m];
        for (i, phi_i) in phi.iter_mut().enumerate() {
            for subset in 0u32..(1 << m) {
                if subset & (1 << i) != 0 {
                    continue;
                }
                let s = subset.count_ones() as usize;
                let weight = factorial(s) * factorial(m - s - 1) / factorial(m);
                *phi_i += weight * (value(subset | (1 << i)) - value(subset));
            }
        }
        (value(0), phi)
    }

    fn random_row(rng: &mut SplitMix64, m: usize) -> Vec<f32> {
        (0..m)
            .map(|_| {
                if rng.below(8) == 0 {
                    f32::NAN
                } else {
                    (rng.next_f64() * 10.0).round() as f32 / 10.0
                }
            })
            .collect()
    }

    #[test]
    fn matches_brute_force_on_random_ensembles() {
        let mut rng = SplitMix64::new(21);
        let mut scratch = ShapScratch::default();
        let mut phi = Vec::new();
        for case in 0..40 {
            let m = 1 + rng.below(8);
            let n_trees = 1 + rng.below(4);
            let trees = (0..n_trees)
                .map(|_| {
                    let depth = 1 + rng.below(7);
                    random_tree(&mut rng, m, depth)
                })
                .collect();
            let model = Gbdt::new(m, 0.25, trees, None).expect("valid random model");
            phi.resize(m, 0.0);
            for _ in 0..5 {
                let row = random_row(&mut rng, m);
                let (expected, brute) = brute_force_shap(&model, &row);
                // The same scratch serves models of every depth.
                let fast_expected = model.shap_values_into(&row, &mut scratch, &mut phi);
                assert!((fast_expected - expected).abs() < 1e-9, "case {case}");
                for f in 0..m {
                    assert!(
                        (phi[f] - brute[f]).abs() < 1e-9,
                        "case {case} feature {f}: {} vs {}",
                        phi[f],
                        brute[f]
                    );
                }
                let total = expected + phi.iter().sum::<f64>();
                assert!((total - model.raw_score(&row)).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn trained_model_is_additive_and_exact() {
        let (x, y) = super::super::tests::synthetic(2000, 31);
        let params = GbdtParams {
            n_trees: 20,
            ..GbdtParams::default()
        };
        let model = params.fit(&TrainData::new(&x, 4, &y)).expect("fit");
        let mut scratch = ShapScratch::new(&model);
        let mut phi = vec![0.0; 4];
        for row in x.chunks(4).take(200) {
            let expected = model.shap_values_into(row, &mut scratch, &mut phi);
            let raw = model.raw_score(row);
            let total = expected + phi.iter().sum::<f64>();
            assert!(
                (total - raw).abs() <= 1e-9 * raw.abs().max(1.0),
                "{total} vs {raw}"
            );
            assert_eq!(phi[3], 0.0, "the constant feature explains nothing");
        }
        for row in x.chunks(4).take(10) {
            let (expected, phi) = model.shap_values(row);
            let (brute_expected, brute) = brute_force_shap(&model, row);
            assert!((expected - brute_expected).abs() < 1e-9);
            for f in 0..4 {
                assert!((phi[f] - brute[f]).abs() < 1e-9, "{phi:?} vs {brute:?}");
            }
        }
        // The expected value is the cover-weighted mean logit of the
        // training rows (full batch: every tree saw them all).
        let mean = x.chunks(4).map(|r| model.raw_score(r)).sum::<f64>() / 2000.0;
        let (expected, _) = model.shap_values(&x[..4]);
        assert!((expected - mean).abs() < 1e-9, "{expected} vs {mean}");
    }
}
