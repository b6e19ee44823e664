//! `leadscore-train`: the training binary. A thin layer over the `features` and `models`
//! libraries: it parses the command line, reports progress and turns library errors into
//! readable messages.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use features::synthetic::{GeneratorParams, SyntheticKind};
use training::evaluate::{FamilyParams, ModelFamily, evaluate};
use training::pipeline::{DEFAULT_FOLDS, ValidationMode, prepare, validation_plan};
use training::truth::GroundTruth;

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
    /// Validate both model families on a dataset and print their held-out metrics (the
    /// benchmark of the training issue; nothing is written to the registry).
    Evaluate(EvaluateArgs),
}

#[derive(clap::Args)]
struct EvaluateArgs {
    /// Dataset spec (TOML).
    #[arg(long)]
    spec: PathBuf,
    /// Folder the spec's relative file paths are read from (default: the spec's folder).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// `auto`: time split for event data, stratified k-fold for tabular data; `kfold`:
    /// k-fold whatever the form (to compare with tools that only do k-fold).
    #[arg(long, value_enum, default_value = "auto")]
    validation: Validation,
    #[arg(long, default_value_t = DEFAULT_FOLDS)]
    folds: usize,
    /// Model families to evaluate.
    #[arg(long, value_enum, default_value = "both")]
    family: Families,
    /// The generator's truth.parquet: prints the ground-truth ROC AUC on the same rows.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Also write the feature table as CSV (entity_id, cutoff, label, features), e.g. for
    /// ../shared/peer/train_peer.py.
    #[arg(long)]
    export_csv: Option<PathBuf>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Validation {
    Auto,
    Kfold,
}

#[derive(Clone, Copy, ValueEnum)]
enum Families {
    Both,
    Gbdt,
    Logistic,
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
            let prepared = prepare(&spec, data_dir.as_deref())?;
            let table = &prepared.table;
            table.write_parquet(&out)?;
            println!(
                "{}: {} entities, {} rows x {} features, {:.1} % positive, in {:.1}s -> {}",
                prepared.spec.name,
                prepared.data.entities.height(),
                table.n_rows(),
                table.n_features(),
                100.0 * table.positive_rate(),
                started.elapsed().as_secs_f64(),
                out.display()
            );
        }
        Command::Evaluate(args) => evaluate_command(&args)?,
    }
    Ok(())
}

fn evaluate_command(args: &EvaluateArgs) -> Result<()> {
    let started = Instant::now();
    let prepared = prepare(&args.spec, args.data_dir.as_deref())?;
    let table = &prepared.table;
    println!(
        "{}: {} rows x {} features, {:.1} % positive (features in {:.1}s)",
        prepared.spec.name,
        table.n_rows(),
        table.n_features(),
        100.0 * table.positive_rate(),
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = &args.export_csv {
        let mut frame = table.to_dataframe()?;
        let mut file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        use polars::prelude::SerWriter as _;
        polars::prelude::CsvWriter::new(&mut file)
            .finish(&mut frame)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("feature table written to {}", path.display());
    }
    let mode = match args.validation {
        Validation::Auto => ValidationMode::Auto,
        Validation::Kfold => ValidationMode::KFold,
    };
    let (plan, warnings) = validation_plan(&prepared, mode, args.folds, args.seed)?;
    println!("validation: {}", plan.description());
    for warning in &warnings {
        println!("warning: {warning}");
    }
    let truth = args.truth.as_deref().map(GroundTruth::read).transpose()?;
    let families: &[ModelFamily] = match args.family {
        Families::Both => &[ModelFamily::Gbdt, ModelFamily::Logistic],
        Families::Gbdt => &[ModelFamily::Gbdt],
        Families::Logistic => &[ModelFamily::Logistic],
    };
    println!(
        "{:<9} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>7}",
        "model",
        "rows",
        "ROC AUC",
        "fold AUC",
        "PR AUC",
        "logloss",
        "Brier",
        "ECE raw",
        "ECE calib",
        "truth AUC",
        "fit s"
    );
    for &family in families {
        let evaluation = evaluate(family, &FamilyParams::default(), table, &plan, args.seed)?;
        let fold_auc = if evaluation.fold_roc_auc.is_empty() {
            "-".to_string()
        } else {
            format!(
                "{:.4}",
                evaluation.fold_roc_auc.iter().sum::<f64>() / evaluation.fold_roc_auc.len() as f64
            )
        };
        let truth_auc = match &truth {
            Some(truth) => {
                let p = truth.probabilities(table, &evaluation.holdout_rows)?;
                format!(
                    "{:.4}",
                    models::metrics::roc_auc(&p, &evaluation.holdout_labels, None)?
                )
            }
            None => "-".to_string(),
        };
        let raw = &evaluation.raw_metrics;
        let calibrated = &evaluation.calibrated_metrics;
        println!(
            "{:<9} {:>8} {:>8.4} {:>9} {:>8.4} {:>8.4} {:>8.4} {:>8.4} {:>9.4} {:>9} {:>7.1}",
            family.as_str(),
            raw.rows,
            raw.roc_auc,
            fold_auc,
            raw.pr_auc,
            calibrated.log_loss,
            calibrated.brier,
            raw.ece,
            calibrated.ece,
            truth_auc,
            evaluation.fit_seconds
        );
        println!("          calibration: {}", evaluation.calibration_reason);
    }
    Ok(())
}
