//! Growing one tree on the binned matrix: gradient histograms, split search
//! and leaf-wise (best-first) growth.
//!
//! The rows of the tree's bag live in one array (`rows`, with their
//! gradients alongside in `row_grads`); every leaf owns a contiguous range of
//! it, and a split partitions its leaf's range stably, so row ids stay
//! increasing within each leaf and the column reads stay forward. The
//! histogram of the smaller child is built from its rows; the larger child's
//! is the parent's minus the smaller one's, computed in place.
//!
//! Histograms are built in parallel over features; each feature's bins are
//! summed by one thread in row order, so the result does not depend on the
//! number of threads. A feature's histogram has exactly its own bins. A
//! sparse feature (most rows in one bin, as a one-hot column's zeros) skips
//! the rows of that bin and takes its sums as the leaf's minus the other
//! bins': adding a gradient to the bin the previous row hit waits for that
//! store, so summing the zeros of a one-hot column cost as much as a dense
//! column, and such columns are most of a tabular table's. The members of a
//! bundle (see [`super::binning`]) are filled in one pass over the leaf's
//! rows, with the very sums, in the very order, of one pass per member.

use rayon::prelude::*;

use super::binning::{BinColumns, BinIndex, BinnedMatrix, Bundle, SparseGroup};
use super::tree::{GbdtTree, TreeNode};

/// Gradient and hessian of the loss at one row, stored in `f32` (halves the
/// memory traffic; histogram sums are `f64`).
pub(crate) type GradPair = [f32; 2];

/// Added to hessian sums in divisions, so an all-zero-weight leaf gives 0.
const HESSIAN_EPSILON: f64 = 1e-15;
/// Bins a byte indexes.
const BYTE_BINS: usize = 256;
/// Below this many (rows x features) a histogram is built on one thread.
const PARALLEL_HISTOGRAM_MIN_WORK: usize = 1 << 16;

/// The growth settings of a tree (from [`GbdtParams`](super::GbdtParams)).
#[derive(Debug, Clone, Copy)]
pub(crate) struct GrowthConfig {
    pub num_leaves: usize,
    pub max_depth: Option<usize>,
    pub min_data_in_leaf: usize,
    pub min_sum_hessian_in_leaf: f64,
    pub lambda_l2: f64,
    pub min_gain_to_split: f64,
    pub learning_rate: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct HistBin {
    grad: f64,
    hess: f64,
    count: u32,
}

/// Gradient statistics of a set of rows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Sums {
    pub grad: f64,
    pub hess: f64,
    pub count: usize,
}

impl Sums {
    fn add_bin(self, bin: &HistBin) -> Self {
        Self {
            grad: self.grad + bin.grad,
            hess: self.hess + bin.hess,
            count: self.count + bin.count as usize,
        }
    }

    fn minus(self, other: Self) -> Self {
        Self {
            grad: self.grad - other.grad,
            hess: self.hess - other.hess,
            count: self.count - other.count,
        }
    }
}

/// Score of a leaf in the split gain: `G² / (H + λ)`.
fn leaf_gain(s: Sums, lambda_l2: f64) -> f64 {
    s.grad * s.grad / (s.hess + lambda_l2 + HESSIAN_EPSILON)
}

/// The Newton step `-G / (H + λ)` (before the learning rate).
pub(crate) fn newton_step(s: Sums, lambda_l2: f64) -> f64 {
    -s.grad / (s.hess + lambda_l2 + HESSIAN_EPSILON)
}

/// The best split found for a leaf.
#[derive(Debug, Clone, Copy, PartialEq)]
struct SplitCandidate {
    feature: usize,
    /// Value bins `0..=last_left_bin` go left.
    last_left_bin: usize,
    missing_left: bool,
    gain: f64,
    left: Sums,
    right: Sums,
}

/// A split in bin terms, to route binned rows through a grown tree.
#[derive(Debug, Clone, Copy)]
struct BinSplit {
    feature: usize,
    last_left_bin: usize,
    missing_left: bool,
}

/// A tree just grown, with where its bag's rows ended up.
#[derive(Debug)]
pub(crate) struct GrownTree {
    pub tree: GbdtTree,
    /// `(leaf node, begin, end)`: the leaf's rows are
    /// `TreeLearner::rows()[begin..end]`.
    pub leaf_ranges: Vec<(usize, usize, usize)>,
    bin_splits: Vec<Option<BinSplit>>,
}

impl GrownTree {
    /// The leaf node a training row reaches, routed by its bins (for rows
    /// outside the bag).
    pub fn leaf_of_binned_row(&self, matrix: &BinnedMatrix, row: usize) -> usize {
        let mut at = 0;
        while let Some(split) = self.bin_splits[at] {
            let bin = matrix.bin(split.feature, row);
            let go_left = if bin == matrix.features[split.feature].missing_bin() {
                split.missing_left
            } else {
                bin <= split.last_left_bin
            };
            at = match self.tree.nodes()[at] {
                TreeNode::Split { left, right, .. } => {
                    if go_left {
                        left
                    } else {
                        right
                    }
                }
                TreeNode::Leaf { .. } => unreachable!("bin_splits mirrors the nodes"),
            };
        }
        at
    }
}

/// A leaf of the tree being grown.
#[derive(Debug)]
struct GrowingLeaf {
    node: usize,
    begin: usize,
    end: usize,
    depth: usize,
    sums: Sums,
    histogram: Option<Vec<HistBin>>,
    best: Option<SplitCandidate>,
}

/// Grows trees on one binned matrix, reusing its buffers across trees.
#[derive(Debug)]
pub(crate) struct TreeLearner<'a> {
    matrix: &'a BinnedMatrix,
    config: GrowthConfig,
    /// Feature `f`'s histogram is `offsets[f]..offsets[f + 1]`.
    offsets: Vec<usize>,
    rows: Vec<u32>,
    row_grads: Vec<GradPair>,
    spare_rows: Vec<u32>,
    spare_grads: Vec<GradPair>,
    free_histograms: Vec<Vec<HistBin>>,
}

impl<'a> TreeLearner<'a> {
    pub fn new(matrix: &'a BinnedMatrix, config: GrowthConfig) -> Self {
        let mut offsets = Vec::with_capacity(matrix.features.len() + 1);
        offsets.push(0);
        for bins in &matrix.features {
            let last = offsets[offsets.len() - 1];
            offsets.push(last + bins.n_hist_bins());
        }
        Self {
            matrix,
            config,
            offsets,
            rows: Vec::new(),
            row_grads: Vec::new(),
            spare_rows: Vec::new(),
            spare_grads: Vec::new(),
            free_histograms: Vec::new(),
        }
    }

    /// The bag's rows, grouped by leaf (see [`GrownTree::leaf_ranges`]).
    pub fn rows(&self) -> &[u32] {
        &self.rows
    }

    fn take_histogram(&mut self) -> Vec<HistBin> {
        let len = self.offsets[self.offsets.len() - 1];
        self.free_histograms
            .pop()
            .unwrap_or_else(|| vec![HistBin::default(); len])
    }

    /// Grows one tree on `grads` (one per training row) over the rows of
    /// `bag` (increasing; all rows when `None`), splitting only on
    /// `features` (increasing, splittable).
    pub fn grow(
        &mut self,
        grads: &[GradPair],
        bag: Option<&[u32]>,
        features: &[usize],
    ) -> GrownTree {
        self.rows.clear();
        self.row_grads.clear();
        match bag {
            None => {
                self.rows.extend(0..self.matrix.n_rows as u32);
                self.row_grads.extend_from_slice(grads);
            }
            Some(bag) => {
                self.rows.extend_from_slice(bag);
                self.row_grads
                    .extend(bag.iter().map(|&r| grads[r as usize]));
            }
        }
        let rows_are_all = bag.is_none();
        let mut root_sums = Sums::default();
        for g in &self.row_grads {
            root_sums.grad += f64::from(g[0]);
            root_sums.hess += f64::from(g[1]);
        }
        root_sums.count = self.rows.len();

        let mut nodes = vec![TreeNode::Leaf {
            value: 0.0,
            cover: root_sums.count as f64,
        }];
        let mut bin_splits: Vec<Option<BinSplit>> = vec![None];
        let mut root = GrowingLeaf {
            node: 0,
            begin: 0,
            end: self.rows.len(),
            depth: 0,
            sums: root_sums,
            histogram: None,
            best: None,
        };
        if self.may_split(&root) && !features.is_empty() {
            let mut histogram = self.take_histogram();
            self.build_histogram(
                root.begin,
                root.end,
                root.sums,
                rows_are_all,
                features,
                &mut histogram,
            );
            root.best = self.best_split(&histogram, root.sums, features);
            root.histogram = Some(histogram);
        }
        let mut leaves = vec![root];
        self.release_if_final(&mut leaves[0]);

        while leaves.len() < self.config.num_leaves {
            let mut chosen: Option<(usize, f64)> = None;
            for (i, leaf) in leaves.iter().enumerate() {
                if let Some(best) = &leaf.best
                    && chosen.is_none_or(|(_, gain)| best.gain > gain)
                {
                    chosen = Some((i, best.gain));
                }
            }
            let Some((chosen, _)) = chosen else { break };
            let (left, right) =
                self.split_leaf(&mut leaves[chosen], &mut nodes, &mut bin_splits, features);
            leaves[chosen] = left;
            leaves.push(right);
            let n = leaves.len();
            self.release_if_final(&mut leaves[chosen]);
            self.release_if_final(&mut leaves[n - 1]);
        }

        let mut leaf_ranges = Vec::with_capacity(leaves.len());
        for leaf in &mut leaves {
            let step = newton_step(leaf.sums, self.config.lambda_l2) * self.config.learning_rate;
            nodes[leaf.node] = TreeNode::Leaf {
                value: step as f32,
                cover: leaf.sums.count as f64,
            };
            leaf_ranges.push((leaf.node, leaf.begin, leaf.end));
            if let Some(h) = leaf.histogram.take() {
                self.free_histograms.push(h);
            }
        }
        GrownTree {
            tree: GbdtTree::from_nodes(nodes),
            leaf_ranges,
            bin_splits,
        }
    }

    /// Whether depth and size allow splitting the leaf at all.
    fn may_split(&self, leaf: &GrowingLeaf) -> bool {
        let depth_ok = self.config.max_depth.is_none_or(|d| leaf.depth < d);
        depth_ok && leaf.sums.count >= 2 * self.config.min_data_in_leaf.max(1)
    }

    /// Returns a leaf's histogram to the pool once it will not be split.
    fn release_if_final(&mut self, leaf: &mut GrowingLeaf) {
        if leaf.best.is_none()
            && let Some(h) = leaf.histogram.take()
        {
            self.free_histograms.push(h);
        }
    }

    /// Applies the leaf's best split: partitions its rows, turns its node
    /// into a split and returns the two children with their histograms and
    /// best splits.
    fn split_leaf(
        &mut self,
        leaf: &mut GrowingLeaf,
        nodes: &mut Vec<TreeNode>,
        bin_splits: &mut Vec<Option<BinSplit>>,
        features: &[usize],
    ) -> (GrowingLeaf, GrowingLeaf) {
        let Some(split) = leaf.best.take() else {
            unreachable!("only leaves with a split candidate are split")
        };
        let mid = self.partition(leaf.begin, leaf.end, split);
        debug_assert_eq!(mid - leaf.begin, split.left.count);
        let bins = &self.matrix.features[split.feature];
        let threshold = bins
            .cuts
            .get(split.last_left_bin)
            .copied()
            .unwrap_or(bins.max_value);
        let left_node = nodes.len();
        let right_node = left_node + 1;
        nodes[leaf.node] = TreeNode::Split {
            feature: split.feature,
            threshold,
            missing_left: split.missing_left,
            left: left_node,
            right: right_node,
            gain: split.gain,
            cover: leaf.sums.count as f64,
        };
        bin_splits[leaf.node] = Some(BinSplit {
            feature: split.feature,
            last_left_bin: split.last_left_bin,
            missing_left: split.missing_left,
        });
        for sums in [split.left, split.right] {
            nodes.push(TreeNode::Leaf {
                value: 0.0,
                cover: sums.count as f64,
            });
            bin_splits.push(None);
        }
        let depth = leaf.depth + 1;
        let mut left = GrowingLeaf {
            node: left_node,
            begin: leaf.begin,
            end: mid,
            depth,
            sums: split.left,
            histogram: None,
            best: None,
        };
        let mut right = GrowingLeaf {
            node: right_node,
            begin: mid,
            end: leaf.end,
            depth,
            sums: split.right,
            histogram: None,
            best: None,
        };
        let left_may = self.may_split(&left);
        let right_may = self.may_split(&right);
        let parent_histogram = leaf.histogram.take();
        if !(left_may || right_may) {
            if let Some(h) = parent_histogram {
                self.free_histograms.push(h);
            }
            return (left, right);
        }
        let Some(mut larger_histogram) = parent_histogram else {
            unreachable!("a leaf with a split candidate keeps its histogram")
        };
        let (smaller, larger) = if left.sums.count <= right.sums.count {
            (&mut left, &mut right)
        } else {
            (&mut right, &mut left)
        };
        let mut smaller_histogram = self.take_histogram();
        self.build_histogram(
            smaller.begin,
            smaller.end,
            smaller.sums,
            false,
            features,
            &mut smaller_histogram,
        );
        for &f in features {
            let range = self.offsets[f]..self.offsets[f + 1];
            for (big, small) in larger_histogram[range.clone()]
                .iter_mut()
                .zip(&smaller_histogram[range])
            {
                big.grad -= small.grad;
                big.hess -= small.hess;
                big.count -= small.count;
            }
        }
        for (child, histogram) in [(smaller, smaller_histogram), (larger, larger_histogram)] {
            if self.may_split(child) {
                child.best = self.best_split(&histogram, child.sums, features);
            }
            child.histogram = Some(histogram);
        }
        (left, right)
    }

    /// Stable partition of `rows[begin..end]` (and their gradients) by the
    /// split; returns where the right part starts.
    fn partition(&mut self, begin: usize, end: usize, split: SplitCandidate) -> usize {
        let bins = &self.matrix.features[split.feature];
        let goes_left: Vec<bool> = (0..bins.n_hist_bins())
            .map(|b| {
                if b == bins.missing_bin() {
                    split.missing_left
                } else {
                    b <= split.last_left_bin
                }
            })
            .collect();
        let n_left = match &self.matrix.columns {
            BinColumns::U8(columns) => partition_by(
                &columns[split.feature],
                &goes_left,
                &mut self.rows[begin..end],
                &mut self.row_grads[begin..end],
                &mut self.spare_rows,
                &mut self.spare_grads,
            ),
            BinColumns::U16(columns) => partition_by(
                &columns[split.feature],
                &goes_left,
                &mut self.rows[begin..end],
                &mut self.row_grads[begin..end],
                &mut self.spare_rows,
                &mut self.spare_grads,
            ),
        };
        begin + n_left
    }

    /// Fills `histogram` (the slots of `features`) from `rows[begin..end]`,
    /// whose gradient sums are `total`.
    fn build_histogram(
        &self,
        begin: usize,
        end: usize,
        total: Sums,
        rows_are_all: bool,
        features: &[usize],
        histogram: &mut [HistBin],
    ) {
        let leaf = LeafRows {
            rows: (!rows_are_all).then(|| &self.rows[begin..end]),
            grads: &self.row_grads[begin..end],
            total,
        };
        let slots = feature_slots(histogram, &self.offsets, features);
        let parallel = (end - begin) * features.len() >= PARALLEL_HISTOGRAM_MIN_WORK;
        match &self.matrix.columns {
            BinColumns::U8(columns) => {
                fill_slots(columns, self.matrix, features, &leaf, slots, parallel)
            }
            BinColumns::U16(columns) => {
                fill_slots(columns, self.matrix, features, &leaf, slots, parallel)
            }
        }
    }

    /// The best split of a leaf over `features`, if any passes the limits.
    fn best_split(
        &self,
        histogram: &[HistBin],
        sums: Sums,
        features: &[usize],
    ) -> Option<SplitCandidate> {
        let per_feature: Vec<Option<SplitCandidate>> = features
            .iter()
            .map(|&f| {
                self.best_split_of_feature(
                    f,
                    &histogram[self.offsets[f]..self.offsets[f + 1]],
                    sums,
                )
            })
            .collect();
        let mut best: Option<SplitCandidate> = None;
        for candidate in per_feature.into_iter().flatten() {
            if best.is_none_or(|b| candidate.gain > b.gain) {
                best = Some(candidate);
            }
        }
        best
    }

    /// Scans the thresholds of one feature, trying missing values on both
    /// sides when the leaf has any.
    fn best_split_of_feature(
        &self,
        feature: usize,
        bins: &[HistBin],
        total: Sums,
    ) -> Option<SplitCandidate> {
        let cfg = &self.config;
        let feature_bins = &self.matrix.features[feature];
        let n_value_bins = feature_bins.n_value_bins();
        let missing = Sums::default().add_bin(&bins[feature_bins.missing_bin()]);
        let min_count = cfg.min_data_in_leaf.max(1);
        let parent_gain = leaf_gain(total, cfg.lambda_l2);
        let admissible = |s: Sums| s.count >= min_count && s.hess >= cfg.min_sum_hessian_in_leaf;
        let mut best: Option<SplitCandidate> = None;
        let mut consider = |last_left_bin: usize, left: Sums, missing_left: Option<bool>| {
            let right = total.minus(left);
            if !admissible(left) || !admissible(right) {
                return;
            }
            let gain =
                leaf_gain(left, cfg.lambda_l2) + leaf_gain(right, cfg.lambda_l2) - parent_gain;
            if gain > cfg.min_gain_to_split && best.is_none_or(|b| gain > b.gain) {
                best = Some(SplitCandidate {
                    feature,
                    last_left_bin,
                    // Without missing rows here, NaN follows the heavier side.
                    missing_left: missing_left.unwrap_or(left.hess >= right.hess),
                    gain,
                    left,
                    right,
                });
            }
        };
        // With missing rows, "all values left, missing right" is a split too.
        let has_missing = missing.count > 0;
        let last_threshold = if has_missing {
            n_value_bins
        } else {
            n_value_bins - 1
        };
        let mut values_left = Sums::default();
        for (b, bin) in bins.iter().enumerate().take(last_threshold) {
            values_left = values_left.add_bin(bin);
            if has_missing {
                consider(b, values_left, Some(false));
                let with_missing = Sums {
                    grad: values_left.grad + missing.grad,
                    hess: values_left.hess + missing.hess,
                    count: values_left.count + missing.count,
                };
                consider(b, with_missing, Some(true));
            } else {
                consider(b, values_left, None);
            }
        }
        best
    }
}

/// Splits `histogram` into the disjoint slots of `features` (increasing).
fn feature_slots<'h>(
    histogram: &'h mut [HistBin],
    offsets: &[usize],
    features: &[usize],
) -> Vec<&'h mut [HistBin]> {
    let mut slots = Vec::with_capacity(features.len());
    let mut rest = histogram;
    let mut at = 0;
    for &f in features {
        let tail = std::mem::take(&mut rest);
        let (_, tail) = tail.split_at_mut(offsets[f] - at);
        let (slot, tail) = tail.split_at_mut(offsets[f + 1] - offsets[f]);
        slots.push(slot);
        rest = tail;
        at = offsets[f + 1];
    }
    slots
}

/// The rows of a leaf as a histogram reads them.
struct LeafRows<'a> {
    /// Row ids of `grads` (`None`: rows `0..grads.len()`).
    rows: Option<&'a [u32]>,
    grads: &'a [GradPair],
    /// Sums of `grads`.
    total: Sums,
}

/// What one task of a histogram build fills: one feature's slot, or the
/// slots of a bundle's or a sparse group's members (those in the build's
/// features).
enum Task<'h> {
    Feature(usize, &'h mut [HistBin]),
    Bundle(&'h Bundle, Vec<(usize, &'h mut [HistBin])>),
    Group(&'h SparseGroup, Vec<(usize, &'h mut [HistBin])>),
}

/// Sums gradients into the slot of each of `features` (slots in the same
/// order).
fn fill_slots<'h, B: BinIndex>(
    columns: &[Vec<B>],
    matrix: &'h BinnedMatrix,
    features: &[usize],
    leaf: &LeafRows<'_>,
    slots: Vec<&'h mut [HistBin]>,
    parallel: bool,
) {
    let mut tasks: Vec<Task<'h>> = Vec::with_capacity(features.len());
    let mut task_of_bundle: Vec<Option<usize>> = vec![None; matrix.bundles.len()];
    let mut task_of_group: Vec<Option<usize>> = vec![None; matrix.sparse_groups.len()];
    for (&f, slot) in features.iter().zip(slots) {
        match (matrix.bundle_of[f], matrix.group_of[f]) {
            (Some(b), _) => match task_of_bundle[b] {
                Some(t) => {
                    if let Task::Bundle(_, members) = &mut tasks[t] {
                        members.push((f, slot));
                    }
                }
                None => {
                    task_of_bundle[b] = Some(tasks.len());
                    tasks.push(Task::Bundle(&matrix.bundles[b], vec![(f, slot)]));
                }
            },
            (None, Some(g)) => match task_of_group[g] {
                Some(t) => {
                    if let Task::Group(_, members) = &mut tasks[t] {
                        members.push((f, slot));
                    }
                }
                None => {
                    task_of_group[g] = Some(tasks.len());
                    tasks.push(Task::Group(&matrix.sparse_groups[g], vec![(f, slot)]));
                }
            },
            (None, None) => tasks.push(Task::Feature(f, slot)),
        }
    }
    let fill = |task: &mut Task<'h>| match task {
        Task::Feature(f, slot) => {
            let bins = &matrix.features[*f];
            if bins.sparse {
                fill_sparse_slot(&columns[*f], bins.default_bin, leaf, slot);
            } else {
                fill_slot(&columns[*f], leaf, slot);
            }
        }
        Task::Bundle(bundle, members) => fill_bundle(bundle, matrix, leaf, members),
        Task::Group(group, members) => fill_group(group, matrix, leaf, members),
    };
    if parallel {
        tasks.par_iter_mut().for_each(fill);
    } else {
        tasks.iter_mut().for_each(fill);
    }
}

/// Fills the slots of a bundle's `members` in one pass over the leaf's rows;
/// each gets what [`fill_sparse_slot`] would give it, bit for bit.
fn fill_bundle(
    bundle: &Bundle,
    matrix: &BinnedMatrix,
    leaf: &LeafRows<'_>,
    members: &mut [(usize, &mut [HistBin])],
) {
    let mut codes = [HistBin::default(); 256];
    let column = &bundle.codes;
    match leaf.rows {
        None => column.iter().zip(leaf.grads).for_each(|(&code, grad)| {
            if code != 0 {
                add_to(&mut codes[usize::from(code)], grad);
            }
        }),
        Some(rows) => {
            for (i, (&row, grad)) in rows.iter().zip(leaf.grads).enumerate() {
                if let Some(&ahead) = rows.get(i + PREFETCH_AHEAD) {
                    prefetch(column, ahead as usize);
                }
                let code = column[row as usize];
                if code != 0 {
                    add_to(&mut codes[usize::from(code)], grad);
                }
            }
        }
    }
    for (f, slot) in members.iter_mut() {
        let offset = bundle.offset_of(*f);
        let default_bin = matrix.features[*f].default_bin;
        slot.copy_from_slice(&codes[offset..offset + slot.len()]);
        slot[default_bin] = HistBin::default();
        set_default_bin(slot, default_bin, leaf.total);
    }
}

/// Fills the slots of a sparse group's `members` from its row-wise entries;
/// each gets what [`fill_sparse_slot`] would give it, bit for bit (every
/// bin sums its rows in row order).
fn fill_group(
    group: &SparseGroup,
    matrix: &BinnedMatrix,
    leaf: &LeafRows<'_>,
    members: &mut [(usize, &mut [HistBin])],
) {
    let mut positions = vec![HistBin::default(); group.n_positions];
    let starts = &group.row_starts;
    let mut add_row = |row: usize, grad: &GradPair| {
        let (begin, end) = (starts[row] as usize, starts[row + 1] as usize);
        for &position in &group.entries[begin..end] {
            add_to(&mut positions[usize::from(position)], grad);
        }
    };
    match leaf.rows {
        None => leaf
            .grads
            .iter()
            .enumerate()
            .for_each(|(row, grad)| add_row(row, grad)),
        Some(rows) => {
            for (i, (&row, grad)) in rows.iter().zip(leaf.grads).enumerate() {
                if let Some(&ahead) = rows.get(i + PREFETCH_AHEAD) {
                    prefetch(starts, ahead as usize);
                }
                add_row(row as usize, grad);
            }
        }
    }
    for (f, slot) in members.iter_mut() {
        let offset = group
            .members
            .iter()
            .find(|(member, _)| member == f)
            .map_or(0, |(_, offset)| *offset);
        let default_bin = matrix.features[*f].default_bin;
        slot.copy_from_slice(&positions[offset..offset + slot.len()]);
        set_default_bin(slot, default_bin, leaf.total);
    }
}

#[inline(always)]
fn add_to(entry: &mut HistBin, grad: &GradPair) {
    entry.grad += f64::from(grad[0]);
    entry.hess += f64::from(grad[1]);
    entry.count += 1;
}

/// Leaves of at least this many rows fill a byte-binned dense feature
/// through a 256-entry array, which a byte indexes with no bounds check, and
/// copy its first bins out; below it, clearing those 256 entries would cost
/// more than the checks.
const BYTE_ARRAY_MIN_ROWS: usize = 2048;

/// Rows ahead whose bin a scattered pass asks the cache for.
const PREFETCH_AHEAD: usize = 32;

/// Asks the cache for `values[i]` (a hint: nothing is read, nothing can fault). A pass
/// over a leaf's rows reads its columns at scattered rows, a cache miss each once the
/// columns outgrow the cache; asked for [`PREFETCH_AHEAD`] rows ahead, the miss overlaps the
/// work in between (`gbdt_bench` at 2M x 60: 7 % faster; see ARCHITECTURE).
#[inline(always)]
fn prefetch<T>(values: &[T], i: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let at = values.as_ptr().wrapping_add(i).cast::<i8>();
        // SAFETY: a prefetch is a hint; it dereferences nothing and never faults, whatever
        // the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (values, i);
}

/// Fills one feature's histogram slot, summing in row order.
fn fill_slot<B: BinIndex>(column: &[B], leaf: &LeafRows<'_>, slot: &mut [HistBin]) {
    if let Some(bytes) = B::as_bytes(column)
        && leaf.grads.len() >= BYTE_ARRAY_MIN_ROWS
        && slot.len() <= BYTE_BINS
    {
        let mut bins = [HistBin::default(); BYTE_BINS];
        match leaf.rows {
            None => bytes
                .iter()
                .zip(leaf.grads)
                .for_each(|(&bin, grad)| add_to(&mut bins[usize::from(bin)], grad)),
            Some(rows) => {
                for (i, (&row, grad)) in rows.iter().zip(leaf.grads).enumerate() {
                    if let Some(&ahead) = rows.get(i + PREFETCH_AHEAD) {
                        prefetch(bytes, ahead as usize);
                    }
                    add_to(&mut bins[usize::from(bytes[row as usize])], grad);
                }
            }
        }
        slot.copy_from_slice(&bins[..slot.len()]);
        return;
    }
    slot.fill(HistBin::default());
    match leaf.rows {
        None => column
            .iter()
            .zip(leaf.grads)
            .for_each(|(&bin, grad)| add_to(&mut slot[bin.index()], grad)),
        Some(rows) => rows
            .iter()
            .zip(leaf.grads)
            .for_each(|(&row, grad)| add_to(&mut slot[column[row as usize].index()], grad)),
    }
}

/// [`fill_slot`] for a sparse feature: rows in `default_bin` are skipped and
/// that bin gets the leaf's sums minus the other bins' (summed in bin order).
fn fill_sparse_slot<B: BinIndex>(
    column: &[B],
    default_bin: usize,
    leaf: &LeafRows<'_>,
    slot: &mut [HistBin],
) {
    slot.fill(HistBin::default());
    match leaf.rows {
        None => column.iter().zip(leaf.grads).for_each(|(&bin, grad)| {
            if bin.index() != default_bin {
                add_to(&mut slot[bin.index()], grad);
            }
        }),
        Some(rows) => rows.iter().zip(leaf.grads).for_each(|(&row, grad)| {
            let bin = column[row as usize].index();
            if bin != default_bin {
                add_to(&mut slot[bin], grad);
            }
        }),
    }
    set_default_bin(slot, default_bin, leaf.total);
}

/// Sets the (empty) default bin of a sparse feature's slot to the leaf's
/// sums minus the other bins' (summed in bin order).
fn set_default_bin(slot: &mut [HistBin], default_bin: usize, total: Sums) {
    let others = slot.iter().fold(Sums::default(), Sums::add_bin);
    let rest = total.minus(others);
    slot[default_bin] = HistBin {
        grad: rest.grad,
        hess: rest.hess,
        count: rest.count as u32,
    };
}

/// Stable partition of `rows`/`grads` by `goes_left[bin]`; returns the
/// number of rows on the left.
fn partition_by<B: BinIndex>(
    column: &[B],
    goes_left: &[bool],
    rows: &mut [u32],
    grads: &mut [GradPair],
    spare_rows: &mut Vec<u32>,
    spare_grads: &mut Vec<GradPair>,
) -> usize {
    spare_rows.clear();
    spare_grads.clear();
    let mut write = 0;
    for i in 0..rows.len() {
        if let Some(&ahead) = rows.get(i + PREFETCH_AHEAD) {
            prefetch(column, ahead as usize);
        }
        let row = rows[i];
        let grad = grads[i];
        if goes_left[column[row as usize].index()] {
            rows[write] = row;
            grads[write] = grad;
            write += 1;
        } else {
            spare_rows.push(row);
            spare_grads.push(grad);
        }
    }
    rows[write..].copy_from_slice(spare_rows);
    grads[write..].copy_from_slice(spare_grads);
    write
}

#[cfg(test)]
mod tests {
    use super::super::rng::SplitMix64;
    use super::*;

    fn config(num_leaves: usize) -> GrowthConfig {
        GrowthConfig {
            num_leaves,
            max_depth: None,
            min_data_in_leaf: 5,
            min_sum_hessian_in_leaf: 1e-3,
            lambda_l2: 1.0,
            min_gain_to_split: 0.0,
            learning_rate: 0.5,
        }
    }

    fn data(n: usize, seed: u64) -> (Vec<f32>, Vec<GradPair>) {
        let mut rng = SplitMix64::new(seed);
        let mut x = Vec::with_capacity(n * 3);
        let mut grads = Vec::with_capacity(n);
        for _ in 0..n {
            let a = (rng.next_f64() * 50.0).floor() as f32;
            let b = if rng.below(4) == 0 {
                f32::NAN
            } else {
                rng.next_f64() as f32
            };
            let c = rng.next_f64() as f32;
            x.extend_from_slice(&[a, b, c]);
            let target = if a > 25.0 || b.is_nan() { 1.0 } else { -1.0 };
            grads.push([
                (-target + rng.next_f64() - 0.5) as f32,
                (0.1 + rng.next_f64()) as f32,
            ]);
        }
        (x, grads)
    }

    #[test]
    fn subtracted_histogram_equals_a_direct_build() {
        let (x, grads) = data(2000, 1);
        let matrix = BinnedMatrix::build(&x, 3, 255, 0);
        let mut learner = TreeLearner::new(&matrix, config(2));
        learner.rows.extend(0..2000);
        learner.row_grads.extend_from_slice(&grads);
        let features = [0, 1, 2];
        let total = Sums {
            grad: grads.iter().map(|g| f64::from(g[0])).sum(),
            hess: grads.iter().map(|g| f64::from(g[1])).sum(),
            count: 2000,
        };
        let mut parent = learner.take_histogram();
        learner.build_histogram(0, 2000, total, true, &features, &mut parent);
        let split = learner
            .best_split(&parent, total, &features)
            .expect("a split");
        assert_eq!(split.feature, 0, "{split:?}");
        let mid = learner.partition(0, 2000, split);
        assert_eq!(mid, split.left.count);
        assert!(
            learner.rows[..mid].windows(2).all(|w| w[0] < w[1]),
            "stable"
        );
        let mut left = learner.take_histogram();
        let mut right = learner.take_histogram();
        learner.build_histogram(0, mid, split.left, false, &features, &mut left);
        learner.build_histogram(mid, 2000, split.right, false, &features, &mut right);
        for ((p, l), r) in parent.iter().zip(&left).zip(&right) {
            assert_eq!(p.count, l.count + r.count);
            assert!((p.grad - l.grad - r.grad).abs() < 1e-9);
            assert!((p.hess - l.hess - r.hess).abs() < 1e-9);
        }
        // Every feature's slot of a child sums to the child's totals.
        for f in features {
            let slot = &left[learner.offsets[f]..learner.offsets[f + 1]];
            let sums = slot.iter().fold(Sums::default(), Sums::add_bin);
            assert_eq!(sums.count, split.left.count);
            assert!((sums.grad - split.left.grad).abs() < 1e-9);
        }
    }

    /// A learner whose bag is `rows`, with the bag's gradient sums.
    fn learner_on<'m>(
        matrix: &'m BinnedMatrix,
        rows: impl Iterator<Item = u32>,
        grads: &[GradPair],
    ) -> (TreeLearner<'m>, Sums) {
        let mut learner = TreeLearner::new(matrix, config(2));
        learner.rows.extend(rows);
        learner
            .row_grads
            .extend(learner.rows.iter().map(|&r| grads[r as usize]));
        let total = learner.row_grads.iter().fold(Sums::default(), |s, g| Sums {
            grad: s.grad + f64::from(g[0]),
            hess: s.hess + f64::from(g[1]),
            count: s.count + 1,
        });
        (learner, total)
    }

    #[test]
    fn a_sparse_feature_histogram_equals_direct_sums() {
        // Feature 0 is a one-hot column (about 90 % zeros), feature 1 mostly
        // NaN, feature 2 dense (a leaf of 2,048 rows or more fills it through
        // the 256-entry array, a smaller one directly).
        let n = 4500;
        let mut rng = SplitMix64::new(9);
        let mut x = Vec::with_capacity(n * 3);
        let mut grads = Vec::with_capacity(n);
        for _ in 0..n {
            let hot = if rng.below(10) == 0 { 1.0 } else { 0.0 };
            let mostly_missing = if rng.below(5) == 0 {
                rng.next_f64() as f32
            } else {
                f32::NAN
            };
            x.extend_from_slice(&[hot, mostly_missing, rng.next_f64() as f32]);
            grads.push([(rng.next_f64() - 0.5) as f32, (0.1 + rng.next_f64()) as f32]);
        }
        let matrix = BinnedMatrix::build(&x, 3, 255, 0);
        assert!(matrix.features[0].sparse && matrix.features[1].sparse);
        assert!(!matrix.features[2].sparse);
        assert_eq!(matrix.features[0].default_bin, 0);
        assert_eq!(
            matrix.features[1].default_bin,
            matrix.features[1].missing_bin()
        );
        let large: Vec<u32> = (0..n as u32).filter(|r| r % 3 != 1).collect();
        let small: Vec<u32> = (0..n as u32).filter(|r| r % 5 == 0).collect();
        assert!(large.len() >= BYTE_ARRAY_MIN_ROWS && small.len() < BYTE_ARRAY_MIN_ROWS);
        for leaf_rows in [large, small] {
            let (mut learner, total) = learner_on(&matrix, leaf_rows.into_iter(), &grads);
            let features = [0, 1, 2];
            let mut histogram = learner.take_histogram();
            let len = learner.rows.len();
            learner.build_histogram(0, len, total, false, &features, &mut histogram);
            for f in features {
                let slot = &histogram[learner.offsets[f]..learner.offsets[f + 1]];
                assert_eq!(slot.len(), matrix.features[f].n_hist_bins());
                for (b, bin) in slot.iter().enumerate() {
                    let rows = learner
                        .rows
                        .iter()
                        .filter(|&&r| matrix.bin(f, r as usize) == b);
                    let (mut grad, mut hess, mut count) = (0.0, 0.0, 0);
                    for &r in rows {
                        grad += f64::from(grads[r as usize][0]);
                        hess += f64::from(grads[r as usize][1]);
                        count += 1;
                    }
                    assert_eq!(bin.count, count, "{len} rows, feature {f} bin {b}");
                    assert!((bin.grad - grad).abs() < 1e-9, "feature {f} bin {b}");
                    assert!((bin.hess - hess).abs() < 1e-9, "feature {f} bin {b}");
                }
            }
        }
    }

    #[test]
    fn a_bundle_fills_its_members_as_one_pass_each_would_bit_for_bit() {
        // A categorical with four levels one-hot encoded (each column 75 %
        // zeros, never two ones in a row), a dense column, and a sparse one
        // that overlaps the one-hot columns.
        let n = 4000;
        let mut rng = SplitMix64::new(11);
        let mut x = Vec::with_capacity(n * 6);
        let mut grads = Vec::with_capacity(n);
        for _ in 0..n {
            let level = rng.below(4);
            for l in 0..4 {
                x.push(if level == l { 1.0 } else { 0.0 });
            }
            x.push(rng.next_f64() as f32);
            x.push(if rng.below(5) == 0 { 2.0 } else { 0.0 });
            grads.push([(rng.next_f64() - 0.5) as f32, (0.1 + rng.next_f64()) as f32]);
        }
        let bundled = BinnedMatrix::build(&x, 6, 255, 0);
        assert_eq!(bundled.bundles.len(), 1, "{:?}", bundled.bundle_of);
        assert_eq!(
            bundled.bundle_of,
            vec![Some(0), Some(0), Some(0), Some(0), None, None]
        );
        let mut apart = BinnedMatrix::build(&x, 6, 255, 0);
        apart.bundles.clear();
        apart.bundle_of = vec![None; 6];
        let features = [0, 1, 3, 4, 5]; // feature 2 left out, as feature sampling does
        let histogram = |matrix: &BinnedMatrix| {
            let (mut learner, total) =
                learner_on(matrix, (0..n as u32).filter(|r| r % 4 != 3), &grads);
            let mut histogram = learner.take_histogram();
            let len = learner.rows.len();
            learner.build_histogram(0, len, total, false, &features, &mut histogram);
            let mut slots = Vec::new();
            for f in features {
                slots.push(histogram[learner.offsets[f]..learner.offsets[f + 1]].to_vec());
            }
            slots
        };
        let (together, one_by_one) = (histogram(&bundled), histogram(&apart));
        assert_eq!(together, one_by_one);
        // And they are the sums: feature 1's level-present bin holds its rows.
        let hot: u32 = (0..n)
            .filter(|&r| r % 4 != 3 && x[r * 6 + 1] == 1.0)
            .count() as u32;
        assert_eq!(together[1][bundled.features[1].bin_of(1.0)].count, hot);
    }

    #[test]
    fn a_sparse_group_fills_its_members_as_one_pass_each_would_bit_for_bit() {
        // Six sparse columns that overlap (so no bundle takes them): counts,
        // a mostly-missing one and a negative one; and a dense column.
        let n = 5000;
        let mut rng = SplitMix64::new(13);
        let mut x = Vec::with_capacity(n * 7);
        let mut grads = Vec::with_capacity(n);
        for _ in 0..n {
            for f in 0..4 {
                let count = if rng.below(4 + f) == 0 {
                    1.0 + rng.below(6) as f32
                } else {
                    0.0
                };
                x.push(count);
            }
            x.push(if rng.below(6) == 0 {
                rng.next_f64() as f32
            } else {
                f32::NAN
            });
            x.push(if rng.below(5) == 0 { -3.0 } else { 0.0 });
            x.push(rng.next_f64() as f32);
            grads.push([(rng.next_f64() - 0.5) as f32, (0.1 + rng.next_f64()) as f32]);
        }
        let grouped = BinnedMatrix::build(&x, 7, 255, 0);
        assert!(grouped.bundles.is_empty(), "{:?}", grouped.bundle_of);
        assert_eq!(
            grouped.group_of.iter().flatten().count(),
            6,
            "{:?}",
            grouped.group_of
        );
        assert!(grouped.sparse_groups.len() > 1, "the cells are split");
        assert_eq!(grouped.group_of[6], None);
        let mut apart = BinnedMatrix::build(&x, 7, 255, 0);
        apart.sparse_groups.clear();
        apart.group_of = vec![None; 7];
        let features = [0, 2, 3, 4, 5, 6]; // feature 1 left out
        let histogram = |matrix: &BinnedMatrix, all: bool| {
            let rows: Box<dyn Iterator<Item = u32>> = if all {
                Box::new(0..n as u32)
            } else {
                Box::new((0..n as u32).filter(|r| r % 3 != 2))
            };
            let (mut learner, total) = learner_on(matrix, rows, &grads);
            let mut histogram = learner.take_histogram();
            let len = learner.rows.len();
            learner.build_histogram(0, len, total, all, &features, &mut histogram);
            let mut slots = Vec::new();
            for f in features {
                slots.push(histogram[learner.offsets[f]..learner.offsets[f + 1]].to_vec());
            }
            slots
        };
        for all in [true, false] {
            let (together, one_by_one) = (histogram(&grouped, all), histogram(&apart, all));
            assert_eq!(together, one_by_one, "all rows: {all}");
            // The counts are the rows': feature 5's -3 bin.
            let expected = (0..n)
                .filter(|&r| (all || r % 3 != 2) && x[r * 7 + 5] == -3.0)
                .count() as u32;
            assert_eq!(
                together[4][grouped.features[5].bin_of(-3.0)].count,
                expected
            );
        }
    }

    #[test]
    fn missing_values_go_where_they_help() {
        // Feature 1 only: NaN rows want +, low values -, high values +.
        let (x, grads) = data(4000, 2);
        let matrix = BinnedMatrix::build(&x, 3, 255, 0);
        let mut learner = TreeLearner::new(&matrix, config(4));
        let grown = learner.grow(&grads, None, &[1]);
        for node in grown.tree.nodes() {
            if let TreeNode::Split {
                missing_left,
                left,
                right,
                ..
            } = *node
            {
                let value = |n: usize| match grown.tree.nodes()[n] {
                    TreeNode::Leaf { value, .. } => Some(value),
                    TreeNode::Split { .. } => None,
                };
                // At the root's split the NaN rows (target +1, negative
                // gradient, positive leaf) must join the positive side.
                if let (Some(l), Some(r)) = (value(left), value(right)) {
                    let nan_side = if missing_left { l } else { r };
                    assert!(nan_side >= l.min(r));
                }
            }
        }
        let nan_leaf = grown.tree.leaf_value(&[0.0, f32::NAN, 0.0]);
        let low_leaf = grown.tree.leaf_value(&[0.0, 0.5, 0.0]);
        assert!(
            nan_leaf > 0.0 && nan_leaf > low_leaf,
            "{nan_leaf} vs {low_leaf}"
        );
        // Feature 0 has no NaN: NaN follows the side with more hessian.
        let mut learner = TreeLearner::new(&matrix, config(2));
        let grown = learner.grow(&grads, None, &[0]);
        let TreeNode::Split {
            missing_left,
            left,
            right,
            ..
        } = grown.tree.nodes()[0]
        else {
            panic!("expected a split")
        };
        let cover = |n: usize| grown.tree.nodes()[n].cover();
        // Hessians are iid, so the heavier side is the larger one here.
        assert_eq!(missing_left, cover(left) > cover(right));
    }

    #[test]
    fn respects_num_leaves_and_min_data() {
        let (x, grads) = data(3000, 3);
        let matrix = BinnedMatrix::build(&x, 3, 255, 0);
        // Without L2 every split of a leaf has gain >= 0 (Cauchy-Schwarz),
        // so the leaf budget is used up.
        let limits = GrowthConfig {
            min_data_in_leaf: 100,
            lambda_l2: 0.0,
            ..config(7)
        };
        let mut learner = TreeLearner::new(&matrix, limits);
        let grown = learner.grow(&grads, None, &[0, 1, 2]);
        assert_eq!(grown.tree.n_leaves(), 7);
        let mut seen = vec![false; 3000];
        for &(node, begin, end) in &grown.leaf_ranges {
            assert!(end - begin >= 100);
            assert_eq!(grown.tree.nodes()[node].cover(), (end - begin) as f64);
            for &r in &learner.rows()[begin..end] {
                assert!(!std::mem::replace(&mut seen[r as usize], true));
            }
        }
        assert!(seen.iter().all(|s| *s));
        // A bag: only its rows are grown on.
        let bag: Vec<u32> = (0..3000).filter(|r| r % 3 == 0).collect();
        let grown = learner.grow(&grads, Some(&bag), &[0, 1, 2]);
        assert_eq!(grown.tree.nodes()[0].cover(), 1000.0);
        for r in (0..3000).step_by(7) {
            let raw_leaf = grown.tree.leaf_index(&x[r * 3..r * 3 + 3]);
            assert_eq!(grown.leaf_of_binned_row(&matrix, r), raw_leaf);
        }
    }
}
