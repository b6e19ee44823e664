//! Exact path-dependent TreeSHAP for [`Gbdt`], leaf by leaf.
//!
//! The expectation of a tree when a feature is unknown follows both children of its splits,
//! weighted by the training rows (covers) that went each way. A leaf with value `v` whose
//! path tests the distinct features `U` (`d = |U|`) then adds to `E[f | x_S]` the term
//! `v · Π_{j∈S∩U} o_j · Π_{j∈U\S} z_j`, where `z_j` is the product of the cover fractions of
//! feature `j`'s splits on the path and `o_j` is 1 when the row takes every one of them (0
//! otherwise). Its Shapley value for `i ∈ U` is therefore
//!
//! ```text
//! φ_i = v (o_i − z_i) Σ_{S ⊆ U\{i}} |S|! (d−|S|−1)! / d! · Π_{j∈S} o_j · Π_{j∈U\{i}\S} z_j
//! ```
//!
//! Subsets holding a feature with `o_j = 0` vanish, so only the features the row satisfies
//! ("hot", `H`, `h = |H|`) can be in `S`, and the inner sum is a weighted sum of the
//! elementary symmetric polynomials `e_k` of the hot features' `z`, times the product `Z_C`
//! of the cold features' `z`:
//!
//! * a cold feature gets `−v · Z_C · Σ_k w(k, d) e_{h−k}(z_H)`, the same for all of them
//!   (its own `z_i` cancels);
//! * a hot feature gets `v (1 − z_i) Z_C · Σ_k w(k, d) e_{h−1−k}(z_{H\{i}})`, where
//!   `e_n(z_{H\{i}}) = Σ_{j≤n} (−z_i)^{n−j} e_j(z_H)`.
//!
//! The hot features' polynomials are updated as the walk goes down (`O(h)` per node) and
//! restored on the way up; a hot feature's sum is a polynomial in `−z_i` whose coefficients
//! are computed once per leaf. Per leaf that is `O(h²)` instead of the `O(d²)` of the
//! original algorithm (Lundberg, Erion and Lee 2018, algorithm 2), with the same values
//! (tests compare them with Shapley values by enumeration). Explanations read the leaves'
//! shares from precomputed tables where they fit ([`super::shap_table`]); the walk is the
//! reference the tests compare them with. All the working memory is one
//! [`ShapScratch`], reused across rows and trees, so scoring a request allocates nothing
//! once the scratch exists.

use super::Gbdt;
use super::shap_table::{self, ShapTables};
use super::tree::{TreeNode, goes_left};

/// One distinct feature on the current path: the product of its cover fractions and whether
/// the row takes all of its splits.
#[derive(Debug, Clone, Copy)]
struct Slot {
    feature: usize,
    zero: f64,
    one: bool,
}

/// Working memory for [`Gbdt::shap_values_into`]: the path of distinct features, the
/// polynomials of its hot features (kept up to date along the walk), and the Shapley
/// weights, sized for the deepest tree. Create one per thread (e.g. per worker) and reuse
/// it for every row and model.
#[derive(Debug, Clone, Default)]
pub struct ShapScratch {
    path: Vec<Slot>,
    /// `e_0..=e_h` of the hot features' `z` on the current path.
    poly: Vec<f64>,
    /// Saved `poly` prefixes, restored when the walk comes back up.
    saved: Vec<f64>,
    /// `c_m = Σ_{j+k=h−1−m} e_j w(k, d)` at a leaf: the hot features' sums are polynomials
    /// in `−z_i` with these coefficients.
    coefficients: Vec<f64>,
    /// `weights[d][k] = k! (d−k−1)! / d!` for `d` distinct features, `k < d`.
    weights: Vec<Vec<f64>>,
    /// A leaf's hot pattern and shares, for the table pass's leaves without a table.
    leaf_hot: Vec<bool>,
    leaf_shares: Vec<f64>,
}

impl ShapScratch {
    /// A scratch large enough for `model` (it grows itself if later used
    /// with a deeper model).
    pub fn new(model: &Gbdt) -> Self {
        let mut scratch = Self::default();
        scratch.reserve_for_depth(model.max_depth);
        scratch
    }

    pub(crate) fn take_leaf_buffers(&mut self) -> (Vec<bool>, Vec<f64>) {
        (
            std::mem::take(&mut self.leaf_hot),
            std::mem::take(&mut self.leaf_shares),
        )
    }

    pub(crate) fn put_leaf_buffers(&mut self, hot: Vec<bool>, shares: Vec<f64>) {
        self.leaf_hot = hot;
        self.leaf_shares = shares;
    }

    fn reserve_for_depth(&mut self, depth: usize) {
        // A path has at most `depth` splits, so at most `depth` distinct features.
        let d_max = depth + 1;
        if self.weights.len() > d_max {
            return;
        }
        self.path.reserve(d_max);
        self.poly.resize(d_max + 1, 0.0);
        self.coefficients.resize(d_max + 1, 0.0);
        self.saved.reserve((d_max + 1) * (d_max + 2));
        let ln_factorial: Vec<f64> = (0..=d_max)
            .scan(0.0, |acc, n| {
                if n > 0 {
                    *acc += (n as f64).ln();
                }
                Some(*acc)
            })
            .collect();
        self.weights = (0..=d_max)
            .map(|d| {
                (0..d)
                    .map(|k| (ln_factorial[k] + ln_factorial[d - k - 1] - ln_factorial[d]).exp())
                    .collect()
            })
            .collect();
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
        self.shap_values_with(row, scratch, phi, Some(self.shap_tables()))
    }

    /// Builds the precomputed TreeSHAP tables now rather than at the first explanation
    /// (see the `shap_table` module); returns how many numbers they hold.
    pub fn prepare_explanations(&self) -> usize {
        self.shap_tables().entries()
    }

    fn shap_tables(&self) -> &ShapTables {
        self.shap_tables.get_or_init(|| {
            ShapTables::build(
                self,
                shap_table::MAX_TABLE_ENTRIES,
                shap_table::MAX_TABLE_DEPTH,
            )
        })
    }

    /// [`shap_values_into`](Self::shap_values_into) from `tables` (built from this model),
    /// or by walking the trees when `None` (the reference the tests compare with).
    pub(crate) fn shap_values_with(
        &self,
        row: &[f32],
        scratch: &mut ShapScratch,
        phi: &mut [f64],
        tables: Option<&ShapTables>,
    ) -> f64 {
        assert_eq!(row.len(), self.n_features, "row width");
        assert_eq!(phi.len(), self.n_features, "phi width");
        scratch.reserve_for_depth(self.max_depth);
        phi.fill(0.0);
        if let Some(tables) = tables {
            tables.add(row, scratch, phi);
        } else {
            for tree in &self.trees {
                scratch.path.clear();
                scratch.saved.clear();
                scratch.poly[0] = 1.0;
                walk(tree.nodes(), row, 0, scratch, 0, 1.0, phi);
            }
        }
        self.expected_value
    }
}

/// Visits `node` with `scratch.path` holding the distinct features above it, `h` of them
/// hot (their polynomials in `scratch.poly[..=h]`), and `cold` the product of the cold
/// ones' fractions.
fn walk(
    nodes: &[TreeNode],
    row: &[f32],
    node: usize,
    scratch: &mut ShapScratch,
    h: usize,
    cold: f64,
    phi: &mut [f64],
) {
    match nodes[node] {
        TreeNode::Leaf { value, .. } => leaf(f64::from(value), scratch, h, cold, phi),
        TreeNode::Split {
            feature,
            threshold,
            missing_left,
            left,
            right,
            cover,
            ..
        } => {
            let row_goes_left = goes_left(row[feature], threshold, missing_left);
            let seen = scratch.path.iter().position(|s| s.feature == feature);
            for (child, taken) in [(left, row_goes_left), (right, !row_goes_left)] {
                let fraction = nodes[child].cover() / cover;
                match seen {
                    None if taken => {
                        let mark = save(scratch, h);
                        scratch.path.push(Slot {
                            feature,
                            zero: fraction,
                            one: true,
                        });
                        let poly = &mut scratch.poly;
                        poly[h + 1] = 0.0;
                        for m in (1..=h + 1).rev() {
                            poly[m] += fraction * poly[m - 1];
                        }
                        walk(nodes, row, child, scratch, h + 1, cold, phi);
                        scratch.path.pop();
                        restore(scratch, mark, h);
                    }
                    None => {
                        scratch.path.push(Slot {
                            feature,
                            zero: fraction,
                            one: false,
                        });
                        walk(nodes, row, child, scratch, h, cold * fraction, phi);
                        scratch.path.pop();
                    }
                    Some(k) => {
                        // A feature seen before: its slot changes, so the hot polynomials
                        // and the cold product are rebuilt from the path (rare: a feature
                        // split twice on one path).
                        let mark = save(scratch, h);
                        let kept = scratch.path[k];
                        scratch.path[k].zero *= fraction;
                        scratch.path[k].one &= taken;
                        let (h2, cold2) = rebuild(scratch);
                        walk(nodes, row, child, scratch, h2, cold2, phi);
                        scratch.path[k] = kept;
                        restore(scratch, mark, h);
                    }
                }
            }
        }
    }
}

/// Saves `poly[..=h]`; returns where.
fn save(scratch: &mut ShapScratch, h: usize) -> usize {
    let mark = scratch.saved.len();
    let ShapScratch { poly, saved, .. } = scratch;
    saved.extend_from_slice(&poly[..=h]);
    mark
}

/// Restores what [`save`] saved at `mark`.
fn restore(scratch: &mut ShapScratch, mark: usize, h: usize) {
    let ShapScratch { poly, saved, .. } = scratch;
    poly[..=h].copy_from_slice(&saved[mark..mark + h + 1]);
    saved.truncate(mark);
}

/// Recomputes the hot polynomials and the cold product from the path.
fn rebuild(scratch: &mut ShapScratch) -> (usize, f64) {
    let ShapScratch { path, poly, .. } = scratch;
    let mut h = 0;
    let mut cold = 1.0;
    poly[0] = 1.0;
    for slot in path.iter() {
        if slot.one {
            h += 1;
            poly[h] = 0.0;
            for m in (1..=h).rev() {
                poly[m] += slot.zero * poly[m - 1];
            }
        } else {
            cold *= slot.zero;
        }
    }
    (h, cold)
}

/// Adds one leaf's Shapley values (module documentation) to `phi`.
fn leaf(value: f64, scratch: &mut ShapScratch, h: usize, cold: f64, phi: &mut [f64]) {
    leaf_with(value, scratch, h, cold, |feature, share| {
        phi[feature] += share
    });
}

/// One leaf's Shapley values: calls `add(feature, share)` once for each slot of
/// `scratch.path`, `h` of them hot (their polynomials in `scratch.poly`), `cold` the product
/// of the cold ones' fractions.
#[inline]
fn leaf_with(
    value: f64,
    scratch: &mut ShapScratch,
    h: usize,
    cold: f64,
    mut add: impl FnMut(usize, f64),
) {
    let ShapScratch {
        path,
        poly,
        coefficients,
        weights,
        ..
    } = scratch;
    let d = path.len();
    if d == 0 {
        return;
    }
    let weights = &weights[d];
    // Cold features: −v Z_C Σ_k w(k) e_{h−k}(H).
    if h < d {
        let sum: f64 = (0..=h).map(|k| weights[k] * poly[h - k]).sum();
        let share = -value * cold * sum;
        for slot in path.iter().filter(|s| !s.one) {
            add(slot.feature, share);
        }
    }
    if h == 0 {
        return;
    }
    // Hot feature i: Σ_k w(k) e_{h−1−k}(H \ {i}) = Σ_m c_m (−z_i)^m, since
    // e_n(H \ {i}) = Σ_{j≤n} (−z_i)^{n−j} e_j(H).
    for (m, coefficient) in coefficients[..h].iter_mut().enumerate() {
        let n = h - 1 - m;
        *coefficient = (0..=n).map(|j| poly[j] * weights[n - j]).sum();
    }
    let scale = value * cold;
    for slot in path.iter().filter(|s| s.one) {
        let t = -slot.zero;
        let sum = coefficients[..h]
            .iter()
            .rev()
            .fold(0.0, |acc, &c| acc * t + c);
        add(slot.feature, scale * (1.0 - slot.zero) * sum);
    }
}

/// The Shapley shares of a leaf of value `value` whose path's distinct features have cover
/// fraction products `zeros`, for a row that satisfies those marked in `hot`: `out[s]` is
/// slot `s`'s share (overwritten). The walk's own formula, for the precomputed tables
/// ([`super::shap_table`]).
pub(crate) fn leaf_shares(
    scratch: &mut ShapScratch,
    value: f64,
    zeros: &[f64],
    hot: &[bool],
    out: &mut [f64],
) {
    if scratch.weights.len() <= zeros.len() {
        scratch.reserve_for_depth(zeros.len());
    }
    scratch.path.clear();
    scratch.path.extend(
        zeros
            .iter()
            .zip(hot)
            .enumerate()
            .map(|(s, (&zero, &one))| Slot {
                feature: s,
                zero,
                one,
            }),
    );
    let (h, cold) = rebuild(scratch);
    // Every slot gets exactly one share.
    leaf_with(value, scratch, h, cold, |s, share| out[s] = share);
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
                // The walk alone (no tables) gives the same values.
                let mut walked = vec![0.0; m];
                model.shap_values_with(&row, &mut scratch, &mut walked, None);
                for f in 0..m {
                    assert!((walked[f] - brute[f]).abs() < 1e-9, "case {case} walk {f}");
                }
            }
        }
    }

    #[test]
    fn tables_and_walk_agree_whatever_is_tabulated() {
        let (x, y) = super::super::tests::synthetic(2000, 7);
        let params = GbdtParams {
            n_trees: 30,
            ..GbdtParams::default()
        };
        let model = params.fit(&TrainData::new(&x, 4, &y)).expect("fit");
        let full = ShapTables::build(&model, usize::MAX, shap_table::MAX_TABLE_DEPTH);
        let (with, all) = full.tabulated();
        assert_eq!(with, all, "4 features: every leaf has a table");
        // Half the numbers: the first leaves tabulated, the rest computed on the spot.
        let half = ShapTables::build(&model, full.entries() / 2, shap_table::MAX_TABLE_DEPTH);
        let (half_with, _) = half.tabulated();
        assert!(half_with > 0 && half_with < all, "{half_with} of {all}");
        // At most one distinct feature tabulated: most leaves computed on the spot.
        let shallow = ShapTables::build(&model, usize::MAX, 1);
        assert!(shallow.tabulated().0 < all / 2, "{:?}", shallow.tabulated());
        let mut scratch = ShapScratch::new(&model);
        let (mut walked, mut tabled) = (vec![0.0; 4], vec![0.0; 4]);
        for row in x.chunks(4).take(300) {
            model.shap_values_with(row, &mut scratch, &mut walked, None);
            for tables in [&full, &half, &shallow] {
                model.shap_values_with(row, &mut scratch, &mut tabled, Some(tables));
                for f in 0..4 {
                    assert!(
                        (tabled[f] - walked[f]).abs() <= 1e-12 * walked[f].abs().max(1.0),
                        "{tabled:?} vs {walked:?}"
                    );
                }
            }
        }
        assert_eq!(model.prepare_explanations(), full.entries());
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
