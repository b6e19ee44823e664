//! Measures the synthetic generator: writes a synthetic history to a temporary folder and
//! prints the elapsed time and the row counts.
//!
//! ```text
//! cargo run --release -p leadscore-features --example generate_bench -- [ENTITIES] [leads|customers] [OUT_DIR]
//! ```
//!
//! Defaults: 1,000,000 leads into a temporary folder that is removed afterwards.

use std::path::PathBuf;
use std::time::Instant;

use features::synthetic::{GeneratorParams, SyntheticKind};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let entities: usize = match args.next() {
        Some(text) => text
            .replace('_', "")
            .parse()
            .map_err(|e| format!("ENTITIES {text:?}: {e}"))?,
        None => 1_000_000,
    };
    let kind = match args.next().as_deref() {
        None | Some("leads") => SyntheticKind::Leads,
        Some("customers") => SyntheticKind::Customers,
        Some(other) => return Err(format!("kind must be leads or customers, not {other:?}").into()),
    };
    let temporary = tempfile::tempdir()?;
    let out_dir = args
        .next()
        .map_or_else(|| temporary.path().to_path_buf(), PathBuf::from);

    let params = GeneratorParams {
        kind,
        entities,
        ..GeneratorParams::default()
    };
    let started = Instant::now();
    let dataset = params.generate(&out_dir)?;
    let elapsed = started.elapsed().as_secs_f64();

    let bytes: u64 = std::fs::read_dir(&out_dir)?
        .filter_map(|entry| entry.ok()?.metadata().ok())
        .map(|metadata| metadata.len())
        .sum();
    println!("kind            {kind:?}");
    println!("threads         {}", rayon::current_num_threads());
    println!("entities        {}", dataset.entities);
    println!(
        "events          {} ({:.1} per entity)",
        dataset.events,
        dataset.events as f64 / dataset.entities as f64
    );
    println!(
        "outcomes        {} ({:.1} %)",
        dataset.outcomes,
        100.0 * dataset.outcomes as f64 / dataset.entities as f64
    );
    println!("truth rows      {}", dataset.truth_rows);
    println!("cutoffs         {}", dataset.cutoffs.len());
    println!(
        "output          {:.1} MB in {}",
        bytes as f64 / 1e6,
        out_dir.display()
    );
    println!(
        "elapsed         {elapsed:.2} s ({:.0} events/s)",
        dataset.events as f64 / elapsed
    );
    Ok(())
}
