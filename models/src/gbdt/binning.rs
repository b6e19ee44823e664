//! Quantile binning of the training features.
//!
//! Each feature gets a [`FeatureBins`]: up to `max_bins` value bins, cut at
//! quantiles of a seeded row sample, plus one bin for missing values (NaN).
//! Every cut is an `f32` value that occurs in the training data, and value
//! bin `b` holds the training values `v` with `cut[b-1] < v <= cut[b]`. A
//! split "value bins `0..=b` go left" is therefore exported with threshold
//! `cut[b]`: the largest training value on the left, so `v <= cut[b]` in
//! `f32` reproduces the training partition exactly.
//!
//! The binned matrix is column-major, one `u8` per cell when every bin index
//! (missing bin included) fits, `u16` otherwise.
//!
//! Sparse features that are never off their default bin in the same row
//! (the levels of one one-hot field, above all) are also bundled, as
//! LightGBM's exclusive feature bundling does: one byte column per
//! [`Bundle`] says which member is off its default bin and in which bin, so
//! one pass over a leaf's rows fills the histograms of all its members.
//!
//! The other sparse features are stored row-wise as well, a few groups of
//! them ([`SparseGroup`]): each row lists only its bins off their default,
//! so a leaf's histogram costs the cells off their defaults, not rows x
//! features. The groups depend on the data alone, never on the threads.

use rayon::prelude::*;

use super::rng::SplitMix64;

/// Rows sampled to choose the cuts (LightGBM's `bin_construct_sample_cnt`).
const BIN_SAMPLE_ROWS: usize = 200_000;
/// Rows per parallel task when binning the full matrix.
const BIN_CHUNK_ROWS: usize = 16_384;
/// Rows binned feature by feature within a chunk: the matrix is row-major, so reading one
/// feature down a whole chunk touches a new cache line per row, and by the next feature
/// those lines are gone; a tile's rows stay in cache across its features.
const BIN_TILE_ROWS: usize = 128;

/// The value bins of one feature.
#[derive(Debug, Clone)]
pub(crate) struct FeatureBins {
    /// `cuts[b]` is the largest value of value bin `b`; the last value bin
    /// has no cut (it is unbounded above).
    pub cuts: Vec<f32>,
    /// Whether any training row has NaN in this feature.
    pub has_missing: bool,
    /// The largest non-NaN training value (0 when there is none): the
    /// threshold of a split sending every value bin left.
    pub max_value: f32,
    /// The bin most training rows fall in (the lowest such bin on a tie).
    pub default_bin: usize,
    /// Whether at least [`SPARSE_DEFAULT_SHARE`] of the training rows fall
    /// in `default_bin`: histograms of such a feature skip those rows and
    /// take the bin's sums as the leaf's minus the other bins'.
    pub sparse: bool,
}

/// Share of rows in its most frequent bin from which a feature is built
/// as sparse (see [`FeatureBins::sparse`]). Below it, skipping rows costs
/// more in mispredicted branches than it saves.
pub(crate) const SPARSE_DEFAULT_SHARE: f64 = 0.7;

impl FeatureBins {
    /// Number of value bins (`cuts.len() + 1`).
    pub fn n_value_bins(&self) -> usize {
        self.cuts.len() + 1
    }

    /// Index of the missing-value bin, always right after the value bins.
    pub fn missing_bin(&self) -> usize {
        self.n_value_bins()
    }

    /// Bins in this feature's histogram: the value bins and the missing bin.
    pub fn n_hist_bins(&self) -> usize {
        self.n_value_bins() + 1
    }

    /// Whether some split of this feature can separate training rows.
    pub fn is_splittable(&self) -> bool {
        self.n_value_bins() > 1 || self.has_missing
    }

    /// The bin of a value: the first value bin whose cut is `>= value`, or
    /// the missing bin for NaN.
    pub fn bin_of(&self, value: f32) -> usize {
        if value.is_nan() {
            self.missing_bin()
        } else {
            self.cuts.partition_point(|&cut| cut < value)
        }
    }
}

/// Chooses at most `max_bins` value bins from the sorted non-NaN `values`.
///
/// Distinct values each get a bin when there are few enough; otherwise a
/// greedy pass gives frequent values their own bin and fills the others to
/// roughly equal counts. `-0.0` and `0.0` are one value, as `f32`
/// comparison sees them.
fn cuts_from_sorted(values: &[f32], max_bins: usize) -> Vec<f32> {
    let mut distinct: Vec<(f32, usize)> = Vec::new();
    for &v in values {
        match distinct.last_mut() {
            Some((last, count)) if *last == v => *count += 1,
            _ => distinct.push((v, 1)),
        }
    }
    if distinct.len() <= 1 {
        return Vec::new();
    }
    if distinct.len() <= max_bins {
        return distinct[..distinct.len() - 1].iter().map(|d| d.0).collect();
    }
    // Frequent values (at least one mean bin's worth) are kept apart.
    let mean_bin = values.len() as f64 / max_bins as f64;
    let is_big = |count: usize| count as f64 >= mean_bin;
    let n_big = distinct.iter().filter(|d| is_big(d.1)).count();
    let big_total: usize = distinct.iter().filter(|d| is_big(d.1)).map(|d| d.1).sum();
    let mut rest_total = (values.len() - big_total) as f64;
    let mut rest_bins = max_bins.saturating_sub(n_big).max(1) as f64;
    let mut cuts = Vec::with_capacity(max_bins - 1);
    let mut in_bin = 0usize;
    for i in 0..distinct.len() - 1 {
        let (value, count) = distinct[i];
        in_bin += count;
        if !is_big(count) {
            rest_total -= count as f64;
        }
        let target = (rest_total + in_bin as f64) / rest_bins;
        let next_is_big = is_big(distinct[i + 1].1);
        if is_big(count) || next_is_big || in_bin as f64 >= target {
            cuts.push(value);
            if !is_big(count) {
                rest_bins = (rest_bins - 1.0).max(1.0);
            }
            in_bin = 0;
            if cuts.len() + 1 == max_bins {
                break;
            }
        }
    }
    cuts
}

/// The binned training matrix: per-feature bins and column-major indices.
#[derive(Debug)]
pub(crate) struct BinnedMatrix {
    pub n_rows: usize,
    pub features: Vec<FeatureBins>,
    pub columns: BinColumns,
    /// Sparse features whose histograms are built together.
    pub bundles: Vec<Bundle>,
    /// The bundle of each feature, if any.
    pub bundle_of: Vec<Option<usize>>,
    /// Sparse features outside bundles, stored row-wise.
    pub sparse_groups: Vec<SparseGroup>,
    /// The sparse group of each feature, if any.
    pub group_of: Vec<Option<usize>>,
}

/// Sparse features stored row-wise: row `r`'s bins off their default bin
/// are `entries[row_starts[r]..row_starts[r + 1]]`, each a position in the
/// group's histogram (`offset + bin` of its member, members in order).
#[derive(Debug)]
pub(crate) struct SparseGroup {
    /// Each member feature with its first position in the group's histogram.
    pub members: Vec<(usize, usize)>,
    /// Positions of the group's histogram.
    pub n_positions: usize,
    pub row_starts: Vec<u32>,
    pub entries: Vec<u16>,
}

/// Groups the sparse features are split into, by cells off their default
/// (more tasks than threads, so the histogram build balances).
const SPARSE_GROUPS: usize = 8;
/// Positions a group's histogram can hold (its entries are `u16`).
const GROUP_POSITIONS: usize = 1 << 16;

/// Sparse features no row has off their default bin together, with one
/// column of codes: 0 when every member is in its default bin, else
/// `offset + bin` for the member that is not (see [`Bundle::members`]).
#[derive(Debug)]
pub(crate) struct Bundle {
    /// Each member feature with its first code: its bin `b` is code
    /// `offset + b` (the code of its default bin is never used).
    pub members: Vec<(usize, usize)>,
    pub codes: Vec<u8>,
}

impl Bundle {
    /// The first code of member `feature`.
    pub fn offset_of(&self, feature: usize) -> usize {
        self.members
            .iter()
            .find(|(f, _)| *f == feature)
            .map_or(0, |(_, offset)| *offset)
    }
}

/// Codes a bundle can hold (its column is one byte per row).
const BUNDLE_CODES: usize = 256;
/// Open bundles a feature is tried against before it starts its own.
const BUNDLE_TRIES: usize = 32;

/// Column-major bin indices, one column per feature.
#[derive(Debug)]
pub(crate) enum BinColumns {
    U8(Vec<Vec<u8>>),
    U16(Vec<Vec<u16>>),
}

/// A bin index type of the column store.
pub(crate) trait BinIndex: Copy + Send + Sync + 'static {
    fn from_bin(bin: usize) -> Self;
    fn index(self) -> usize;
    /// The column as bytes, when its bins are bytes.
    fn as_bytes(column: &[Self]) -> Option<&[u8]>;
}

impl BinIndex for u8 {
    #[inline(always)]
    fn from_bin(bin: usize) -> Self {
        debug_assert!(bin <= usize::from(u8::MAX));
        bin as u8
    }
    #[inline(always)]
    fn index(self) -> usize {
        usize::from(self)
    }
    fn as_bytes(column: &[Self]) -> Option<&[u8]> {
        Some(column)
    }
}

impl BinIndex for u16 {
    #[inline(always)]
    fn from_bin(bin: usize) -> Self {
        debug_assert!(bin <= usize::from(u16::MAX));
        bin as u16
    }
    #[inline(always)]
    fn index(self) -> usize {
        usize::from(self)
    }
    fn as_bytes(_: &[Self]) -> Option<&[u8]> {
        None
    }
}

impl BinnedMatrix {
    /// Bins the row-major `x` (`n_rows x n_features`, finite or NaN).
    pub fn build(x: &[f32], n_features: usize, max_bins: usize, seed: u64) -> Self {
        let n_rows = x.len() / n_features;
        // Gather the sampled rows column-major once (row-wise reads), so the
        // per-feature sorts read contiguous memory.
        let sample = sample_rows(n_rows, seed);
        let mut sample_columns = vec![Vec::with_capacity(sample.len()); n_features];
        for &r in &sample {
            for (f, column) in sample_columns.iter_mut().enumerate() {
                column.push(x[r * n_features + f]);
            }
        }
        let mut features: Vec<FeatureBins> = sample_columns
            .into_par_iter()
            .map(|mut values| {
                values.retain(|v| !v.is_nan());
                values.sort_unstable_by(f32::total_cmp);
                FeatureBins {
                    cuts: cuts_from_sorted(&values, max_bins),
                    has_missing: false,
                    max_value: 0.0,
                    default_bin: 0,
                    sparse: false,
                }
            })
            .collect();
        let widest = features.iter().map(FeatureBins::n_hist_bins).max();
        let (columns, summaries) = if widest.unwrap_or(0) <= usize::from(u8::MAX) + 1 {
            let (columns, summaries) = bin_columns::<u8>(x, n_features, &features);
            (BinColumns::U8(columns), summaries)
        } else {
            let (columns, summaries) = bin_columns::<u16>(x, n_features, &features);
            (BinColumns::U16(columns), summaries)
        };
        for (bins, summary) in features.iter_mut().zip(&summaries) {
            bins.has_missing = summary.has_missing;
            bins.max_value = summary.max_value.unwrap_or(0.0);
            let (default_bin, rows) =
                summary
                    .bin_counts
                    .iter()
                    .enumerate()
                    .fold(
                        (0, 0),
                        |best, (b, &n)| if n > best.1 { (b, n) } else { best },
                    );
            bins.default_bin = default_bin;
            bins.sparse = rows as f64 >= SPARSE_DEFAULT_SHARE * n_rows as f64;
        }
        let (bundles, bundle_of) = match &columns {
            BinColumns::U8(columns) => bundle_features(&features, columns),
            BinColumns::U16(columns) => bundle_features(&features, columns),
        };
        let off_default: Vec<usize> = features
            .iter()
            .zip(&summaries)
            .map(|(bins, summary)| n_rows - summary.bin_counts[bins.default_bin])
            .collect();
        let (sparse_groups, group_of) = match &columns {
            BinColumns::U8(columns) => {
                group_sparse_features(&features, columns, &bundle_of, &off_default)
            }
            BinColumns::U16(columns) => {
                group_sparse_features(&features, columns, &bundle_of, &off_default)
            }
        };
        Self {
            n_rows,
            features,
            columns,
            bundles,
            bundle_of,
            sparse_groups,
            group_of,
        }
    }

    /// The bin of `row` in `feature`.
    pub fn bin(&self, feature: usize, row: usize) -> usize {
        match &self.columns {
            BinColumns::U8(cols) => usize::from(cols[feature][row]),
            BinColumns::U16(cols) => usize::from(cols[feature][row]),
        }
    }
}

/// Greedy exclusive bundling, in feature order: each sparse, splittable
/// feature joins the first of the last [`BUNDLE_TRIES`] bundles with room
/// for its bins where no row is off its default bin in both, or starts a
/// new one. Bundles of one feature are dropped (its own column is as good).
fn bundle_features<B: BinIndex>(
    features: &[FeatureBins],
    columns: &[Vec<B>],
) -> (Vec<Bundle>, Vec<Option<usize>>) {
    struct Open {
        members: Vec<(usize, usize)>,
        next_code: usize,
        /// Rows some member is off its default bin in, one bit each.
        occupied: Vec<u64>,
    }
    let n_rows = columns.first().map_or(0, Vec::len);
    let mut open: Vec<Open> = Vec::new();
    for (f, bins) in features.iter().enumerate() {
        if !bins.sparse || !bins.is_splittable() || bins.n_hist_bins() + 1 > BUNDLE_CODES {
            continue;
        }
        let column = &columns[f];
        let off_default: Vec<usize> = (0..n_rows)
            .filter(|&r| column[r].index() != bins.default_bin)
            .collect();
        let fits = |bundle: &Open| {
            bundle.next_code + bins.n_hist_bins() <= BUNDLE_CODES
                && off_default
                    .iter()
                    .all(|&r| bundle.occupied[r / 64] & (1 << (r % 64)) == 0)
        };
        let first_try = open.len().saturating_sub(BUNDLE_TRIES);
        let at = match (first_try..open.len()).find(|&b| fits(&open[b])) {
            Some(b) => b,
            None => {
                open.push(Open {
                    members: Vec::new(),
                    next_code: 1,
                    occupied: vec![0; n_rows.div_ceil(64)],
                });
                open.len() - 1
            }
        };
        let bundle = &mut open[at];
        bundle.members.push((f, bundle.next_code));
        bundle.next_code += bins.n_hist_bins();
        for &r in &off_default {
            bundle.occupied[r / 64] |= 1 << (r % 64);
        }
    }
    let mut bundles = Vec::new();
    let mut bundle_of = vec![None; features.len()];
    for bundle in open.into_iter().filter(|b| b.members.len() > 1) {
        let mut codes = vec![0u8; n_rows];
        for &(f, offset) in &bundle.members {
            let default = features[f].default_bin;
            for (code, bin) in codes.iter_mut().zip(&columns[f]) {
                if bin.index() != default {
                    *code = (offset + bin.index()) as u8;
                }
            }
            bundle_of[f] = Some(bundles.len());
        }
        bundles.push(Bundle {
            members: bundle.members,
            codes,
        });
    }
    (bundles, bundle_of)
}

/// Splits the sparse, splittable features outside bundles into up to
/// [`SPARSE_GROUPS`] groups of consecutive features with about as many cells
/// off their default each, and stores each group row-wise.
fn group_sparse_features<B: BinIndex>(
    features: &[FeatureBins],
    columns: &[Vec<B>],
    bundle_of: &[Option<usize>],
    off_default: &[usize],
) -> (Vec<SparseGroup>, Vec<Option<usize>>) {
    let candidates: Vec<usize> = (0..features.len())
        .filter(|&f| {
            features[f].sparse
                && features[f].is_splittable()
                && bundle_of[f].is_none()
                && features[f].n_hist_bins() <= GROUP_POSITIONS
        })
        .collect();
    let total: usize = candidates.iter().map(|&f| off_default[f]).sum();
    let target = total.div_ceil(SPARSE_GROUPS).max(1);
    /// A group being planned: its members with their first positions, its positions and
    /// its cells.
    type Plan = (Vec<(usize, usize)>, usize, usize);
    let mut plans: Vec<Plan> = Vec::new();
    for &f in &candidates {
        let bins = features[f].n_hist_bins();
        let full = plans.last().is_none_or(|(_, positions, cells)| {
            *cells >= target
                || positions + bins > GROUP_POSITIONS
                || cells + off_default[f] > u32::MAX as usize
        });
        if full {
            plans.push((Vec::new(), 0, 0));
        }
        if let Some((members, positions, cells)) = plans.last_mut() {
            members.push((f, *positions));
            *positions += bins;
            *cells += off_default[f];
        }
    }
    let mut group_of = vec![None; features.len()];
    for (g, (members, _, _)) in plans.iter().enumerate() {
        for &(f, _) in members {
            group_of[f] = Some(g);
        }
    }
    let n_rows = columns.first().map_or(0, Vec::len);
    let groups = plans
        .into_par_iter()
        .map(|(members, n_positions, cells)| {
            // Count each row's cells, then place them member by member, so
            // a row's entries are in member order.
            let mut row_starts = vec![0u32; n_rows + 1];
            for &(f, _) in &members {
                let default = features[f].default_bin;
                for (count, bin) in row_starts[1..].iter_mut().zip(&columns[f]) {
                    *count += u32::from(bin.index() != default);
                }
            }
            for r in 0..n_rows {
                row_starts[r + 1] += row_starts[r];
            }
            let mut cursor = row_starts.clone();
            let mut entries = vec![0u16; cells];
            for &(f, offset) in &members {
                let default = features[f].default_bin;
                for (r, bin) in columns[f].iter().enumerate() {
                    if bin.index() != default {
                        entries[cursor[r] as usize] = (offset + bin.index()) as u16;
                        cursor[r] += 1;
                    }
                }
            }
            SparseGroup {
                members,
                n_positions,
                row_starts,
                entries,
            }
        })
        .collect();
    (groups, group_of)
}

/// The rows used to choose cuts: all of them when few, else a seeded sample
/// of [`BIN_SAMPLE_ROWS`] in increasing order.
fn sample_rows(n_rows: usize, seed: u64) -> Vec<usize> {
    if n_rows <= BIN_SAMPLE_ROWS {
        return (0..n_rows).collect();
    }
    let mut rng = SplitMix64::new(seed ^ 0x0b1e_5eed);
    let mut rows = rng.sample_sorted(n_rows, BIN_SAMPLE_ROWS);
    rows.shrink_to_fit();
    rows
}

/// What the binning pass learns of one feature over all training rows.
#[derive(Debug, Clone, Default)]
struct ColumnSummary {
    has_missing: bool,
    max_value: Option<f32>,
    /// Rows per histogram bin.
    bin_counts: Vec<usize>,
}

impl ColumnSummary {
    fn new(n_hist_bins: usize) -> Self {
        Self {
            bin_counts: vec![0; n_hist_bins],
            ..Self::default()
        }
    }

    fn merge(mut self, other: Self) -> Self {
        self.max_value = match (self.max_value, other.max_value) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.has_missing |= other.has_missing;
        for (total, n) in self.bin_counts.iter_mut().zip(other.bin_counts) {
            *total += n;
        }
        self
    }
}

type BinnedColumns<B> = (Vec<Vec<B>>, Vec<ColumnSummary>);

/// Bins every cell, parallel over row chunks, writing column-major; also
/// finds which features have NaN and their largest value.
fn bin_columns<B: BinIndex>(
    x: &[f32],
    n_features: usize,
    features: &[FeatureBins],
) -> BinnedColumns<B> {
    let n_rows = x.len() / n_features;
    let mut columns: Vec<Vec<B>> = (0..n_features)
        .map(|_| vec![B::from_bin(0); n_rows])
        .collect();
    let n_chunks = n_rows.div_ceil(BIN_CHUNK_ROWS);
    let mut chunks: Vec<Vec<&mut [B]>> = (0..n_chunks)
        .map(|_| Vec::with_capacity(n_features))
        .collect();
    for column in &mut columns {
        for (chunk, part) in column.chunks_mut(BIN_CHUNK_ROWS).enumerate() {
            chunks[chunk].push(part);
        }
    }
    let chunk_summaries: Vec<Vec<ColumnSummary>> = chunks
        .into_par_iter()
        .enumerate()
        .map(|(chunk, mut parts)| {
            let first_row = chunk * BIN_CHUNK_ROWS;
            let mut summaries: Vec<ColumnSummary> = features
                .iter()
                .map(|bins| ColumnSummary::new(bins.n_hist_bins()))
                .collect();
            let chunk_rows = parts.first().map_or(0, |part| part.len());
            for tile in (0..chunk_rows).step_by(BIN_TILE_ROWS) {
                let tile_rows = tile..(tile + BIN_TILE_ROWS).min(chunk_rows);
                for (f, part) in parts.iter_mut().enumerate() {
                    let bins = &features[f];
                    let summary = &mut summaries[f];
                    for (cell, i) in part[tile_rows.clone()].iter_mut().zip(tile_rows.clone()) {
                        let value = x[(first_row + i) * n_features + f];
                        if value.is_nan() {
                            summary.has_missing = true;
                        } else {
                            summary.max_value =
                                Some(summary.max_value.map_or(value, |m| m.max(value)));
                        }
                        let bin = bins.bin_of(value);
                        summary.bin_counts[bin] += 1;
                        *cell = B::from_bin(bin);
                    }
                }
            }
            summaries
        })
        .collect();
    let mut summaries: Vec<ColumnSummary> = features
        .iter()
        .map(|bins| ColumnSummary::new(bins.n_hist_bins()))
        .collect();
    for chunk in chunk_summaries {
        for (total, part) in summaries.iter_mut().zip(chunk) {
            *total = std::mem::take(total).merge(part);
        }
    }
    (columns, summaries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_distinct_values_get_one_bin_each_and_cuts_are_data_values() {
        let values = [3.0f32, 1.0, 2.0, 2.0, -0.0, 0.0, 3.0];
        let mut sorted = values.to_vec();
        sorted.sort_by(f32::total_cmp);
        let cuts = cuts_from_sorted(&sorted, 255);
        assert_eq!(cuts, vec![0.0, 1.0, 2.0]);
        let bins = FeatureBins {
            cuts,
            has_missing: false,
            max_value: 3.0,
            default_bin: 0,
            sparse: false,
        };
        assert_eq!(bins.bin_of(-0.0), 0);
        assert_eq!(bins.bin_of(0.5), 1);
        assert_eq!(bins.bin_of(2.0), 2);
        assert_eq!(bins.bin_of(7.0), 3);
        assert_eq!(bins.bin_of(f32::NAN), 4);
    }

    #[test]
    fn many_values_respect_max_bins_and_partition_exactly() {
        let mut rng = SplitMix64::new(7);
        let mut values: Vec<f32> = (0..5000)
            .map(|i| {
                if i % 5 == 0 {
                    1.5 // a heavy value
                } else {
                    (rng.next_f64() * 100.0) as f32
                }
            })
            .collect();
        values.sort_by(f32::total_cmp);
        for max_bins in [2usize, 3, 16, 255] {
            let cuts = cuts_from_sorted(&values, max_bins);
            assert!(cuts.len() < max_bins, "{} cuts for {max_bins}", cuts.len());
            assert!(cuts.windows(2).all(|w| w[0] < w[1]));
            let bins = FeatureBins {
                cuts: cuts.clone(),
                has_missing: false,
                max_value: 0.0,
                default_bin: 0,
                sparse: false,
            };
            for (b, &cut) in cuts.iter().enumerate() {
                // The cut is a training value and is the largest in its bin.
                assert!(values.contains(&cut));
                for &v in &values {
                    assert_eq!(v <= cut, bins.bin_of(v) <= b);
                }
            }
        }
        // The heavy value is alone in its bin when there is room.
        let cuts = cuts_from_sorted(&values, 64);
        let bins = FeatureBins {
            cuts,
            has_missing: false,
            max_value: 0.0,
            default_bin: 0,
            sparse: false,
        };
        let heavy = bins.bin_of(1.5);
        assert!(
            values
                .iter()
                .all(|&v| (bins.bin_of(v) == heavy) == (v == 1.5))
        );
    }

    #[test]
    fn binned_matrix_is_column_major_with_missing_bin() {
        let x = [1.0f32, f32::NAN, 2.0, 5.0, 1.0, 5.0, 3.0, 5.0];
        let m = BinnedMatrix::build(&x, 2, 255, 1);
        assert_eq!(m.n_rows, 4);
        assert!(!m.features[0].has_missing);
        assert!(m.features[1].has_missing);
        assert!(m.features[1].is_splittable());
        assert_eq!(m.features[1].n_value_bins(), 1);
        assert_eq!(
            (0..4).map(|r| m.bin(0, r)).collect::<Vec<_>>(),
            vec![0, 1, 0, 2]
        );
        assert_eq!(
            (0..4).map(|r| m.bin(1, r)).collect::<Vec<_>>(),
            vec![1, 0, 0, 0]
        );
        assert_eq!(m.features[0].max_value, 3.0);
        assert_eq!(m.features[1].max_value, 5.0);
        // Feature 1 is 5.0 in three rows of four (bin 0): sparse at 0.7.
        assert_eq!(
            (m.features[0].default_bin, m.features[0].sparse),
            (0, false)
        );
        assert_eq!((m.features[1].default_bin, m.features[1].sparse), (0, true));
        assert!(matches!(m.columns, BinColumns::U8(_)));
        let wide = BinnedMatrix::build(&(0..600).map(|i| i as f32).collect::<Vec<_>>(), 1, 400, 1);
        assert!(matches!(wide.columns, BinColumns::U16(_)));
        assert_eq!(wide.bin(0, 599), wide.features[0].n_value_bins() - 1);
    }
}
