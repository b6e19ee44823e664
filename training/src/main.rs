//! `leadscore-train`: the training binary. A thin layer over the `features` and `models`
//! libraries: it parses the command line, reports progress and turns library errors into
//! readable messages.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use features::DatasetSpec;
use features::builder::{build_features, fit_plan, resolve_cutoffs};
use features::load::load_dataset;
use features::synthetic::{GeneratorParams, SyntheticKind};

#[derive(Parser)]
#[command(
    name = "leadscore-train",
    version,
    about = "Train and validate lead-scoring models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    /// B2B leads with an engagement log and conversions (propensity).
    Leads,
    /// Customers with product usage, tickets, billing and churn (churn).
    Customers,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a synthetic CRM history (Parquet files and a dataset spec) with a hidden
    /// ground-truth model.
    Generate {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "leads")]
        kind: Kind,
        /// Number of leads or customers.
        #[arg(long, default_value_t = 10_000)]
        entities: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Load and validate a dataset, build its point-in-time features and write them as
    /// Parquet.
    Features {
        /// Dataset spec (TOML).
        #[arg(long)]
        spec: PathBuf,
        /// Folder the spec's relative file paths are read from (default: the spec's own
        /// folder). Lets the repository's example specs read data kept elsewhere.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Output Parquet file.
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Generate {
            out,
            kind,
            entities,
            seed,
        } => {
            let params = GeneratorParams {
                kind: match kind {
                    Kind::Leads => SyntheticKind::Leads,
                    Kind::Customers => SyntheticKind::Customers,
                },
                entities,
                seed,
                ..GeneratorParams::default()
            };
            let started = Instant::now();
            let generated = params
                .generate(&out)
                .with_context(|| format!("generating into {}", out.display()))?;
            println!(
                "generated {} entities, {} events, {} outcomes in {:.1}s; spec: {}",
                generated.entities,
                generated.events,
                generated.outcomes,
                started.elapsed().as_secs_f64(),
                generated.spec_path.display()
            );
        }
        Command::Features {
            spec,
            data_dir,
            out,
        } => {
            let started = Instant::now();
            let mut spec = DatasetSpec::from_file(&spec)?;
            if let Some(data_dir) = data_dir {
                spec.base_dir = data_dir;
            }
            let data = load_dataset(&spec)?;
            let cutoffs = resolve_cutoffs(&data)?;
            let plan = fit_plan(&data, None)?;
            let table = build_features(&data, &plan, &cutoffs)?;
            table.write_parquet(&out)?;
            println!(
                "{}: {} entities, {} rows x {} features, {:.1} % positive, in {:.1}s -> {}",
                spec.name,
                data.entities.height(),
                table.n_rows(),
                table.n_features(),
                100.0 * table.positive_rate(),
                started.elapsed().as_secs_f64(),
                out.display()
            );
        }
    }
    Ok(())
}
