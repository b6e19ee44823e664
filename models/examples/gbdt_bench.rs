//! Times `models::gbdt` training on seeded synthetic data (default
//! 1,000,000 rows x 60 features, 100 trees, default hyperparameters).
//!
//! ```text
//! cargo build --release --workspace --bins --examples
//! target/release/examples/gbdt_bench [--rows N] [--features F] [--write-data PATH]
//! ```
//!
//! `--write-data PATH` also writes the rows for `gbdt_bench_lightgbm.py`:
//! `u64 n_rows, u64 n_features` (little-endian), then the row-major `f32`
//! features, then the `f32` labels. Use `RAYON_NUM_THREADS` to set threads.
//!
//! Also times single-row scoring and TreeSHAP on one thread, as the server
//! runs them per request.

use std::time::Instant;

use models::gbdt::{GbdtParams, ShapScratch, TrainData};

/// SplitMix64: a seeded generator, so the data needs no dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u = self.uniform().max(1e-300);
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * self.uniform()).cos()
    }
}

/// Rows mixing Gaussian, integer-valued and partly missing features; the
/// label follows a nonlinear logit of ten of them (about 20 % positive).
fn generate(n_rows: usize, n_features: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng(seed);
    let mut x = vec![0.0f32; n_rows * n_features];
    let mut y = vec![0.0f32; n_rows];
    for (row, label) in x.chunks_exact_mut(n_features).zip(&mut y) {
        for (f, value) in row.iter_mut().enumerate() {
            *value = match f % 3 {
                0 => rng.normal() as f32,
                1 => (rng.uniform() * 20.0).floor() as f32,
                _ if rng.uniform() < 0.1 => f32::NAN,
                _ => (rng.normal() * 3.0 + 1.0) as f32,
            };
        }
        let v = |f: usize| {
            if f < n_features && !row[f].is_nan() {
                f64::from(row[f])
            } else {
                0.0
            }
        };
        let logit = 1.2 * v(0) - 0.8 * v(3) * v(6)
            + 0.15 * (v(1) - 10.0)
            + 0.4 * (v(2) > 2.0) as u8 as f64
            + (v(4) - 10.0).abs() * 0.12
            + (3.0 * v(9)).sin()
            + if f64::from(row[5.min(n_features - 1)]).is_nan() {
                0.7
            } else {
                0.0
            }
            - 1.8;
        *label = if rng.uniform() < 1.0 / (1.0 + (-logit).exp()) {
            1.0
        } else {
            0.0
        };
    }
    (x, y)
}

fn main() {
    let mut n_rows = 1_000_000usize;
    let mut n_features = 60usize;
    let mut write_data: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--rows" => n_rows = value().parse().expect("--rows: an integer"),
            "--features" => n_features = value().parse().expect("--features: an integer"),
            "--write-data" => write_data = Some(value()),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(n_features >= 10, "--features: at least 10");
    let (x, y) = generate(n_rows, n_features, 2024);
    if let Some(path) = &write_data {
        let mut bytes = Vec::with_capacity(16 + 4 * (x.len() + y.len()));
        bytes.extend((n_rows as u64).to_le_bytes());
        bytes.extend((n_features as u64).to_le_bytes());
        bytes.extend(x.iter().chain(&y).flat_map(|v| v.to_le_bytes()));
        std::fs::write(path, bytes).expect("write data");
    }
    let params = GbdtParams::default();
    let data = TrainData::new(&x, n_features, &y);
    let start = Instant::now();
    let model = params.fit(&data).expect("fit");
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "rust gbdt: rows {n_rows} features {n_features} threads {} seconds {seconds:.2} trees {}",
        rayon::current_num_threads(),
        model.trees().len()
    );

    let probe_rows = 10_000.min(n_rows);
    let rows = || x.chunks_exact(n_features).take(probe_rows);
    let start = Instant::now();
    let checksum: f64 = rows().map(|row| model.raw_score(row)).sum();
    let score_us = start.elapsed().as_secs_f64() * 1e6 / probe_rows as f64;
    let mut scratch = ShapScratch::new(&model);
    let mut phi = vec![0.0; n_features];
    let start = Instant::now();
    let mut worst = 0.0f64;
    for row in rows() {
        let expected = model.shap_values_into(row, &mut scratch, &mut phi);
        let raw = model.raw_score(row);
        worst = worst.max((expected + phi.iter().sum::<f64>() - raw).abs() / raw.abs().max(1.0));
    }
    let shap_us = start.elapsed().as_secs_f64() * 1e6 / probe_rows as f64;
    let leaves: usize = model.trees().iter().map(|t| t.n_leaves()).sum();
    let depth = model.trees().iter().map(|t| t.depth()).max().unwrap_or(0);
    println!(
        "per row ({probe_rows} rows, {leaves} leaves, max depth {depth}): raw_score {score_us:.2} us, \
         TreeSHAP {shap_us:.1} us (additivity error {worst:.1e}, checksum {checksum:.3})"
    );
}
