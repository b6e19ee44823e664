//! `leadscore-train`: the training binary. A thin layer over the `features` and `models`
//! libraries: it parses the command line, reports progress and turns library errors into
//! readable messages.

mod cli_registry;
mod cli_store;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use features::synthetic::{GeneratorParams, Segments, SyntheticKind};
use indicatif::{ProgressBar, ProgressStyle};
use models::bundle::{
    Manifest, ModelName, ROUTING_FILE, Registry, RegistryLock, clean_stale_temp_dirs,
    new_version_name,
};
use models::capacity::HeldOutScores;
use models::gbdt::GbdtParams;
use models::thresholds_file::ThresholdsFile;
use training::drift::{DriftAnswer, DriftLimits, drift_alerts, drift_table, top_shifts};
use training::evaluate::{Evaluation, FamilyParams, FittedModel, ModelFamily, ValidationPlan};
use training::fit::{EarlyStopping, GbdtStart};
use training::gate::{GatePolicy, compare_with_live};
use training::pipeline::{DEFAULT_FOLDS, Prepared, ValidationMode, prepare, validation_plan_with};
use training::prepared_table::{EntitySample, read_prepared};
use training::repeat::{RepeatSettings, RepeatedAuc, is_random, repeated_roc_auc};
use training::report::SegmentRow;
use training::requests::score_requests;
use training::segments::{
    self, RunSettings, SegmentOutcome, SegmentParams, replace_routing_table, routing_table,
};
use training::split::HoldoutShare;
use training::thresholds::capacity_report;
use training::train::{
    BundleInputs, FamilyChoice, assemble_bundle, choose_family, evaluate_families, truth_roc_auc,
};
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
        /// Leads only: `differ` adds a `segment` field (enterprise, smb) whose levels convert
        /// for different reasons, `alike` the same field with no effect (see
        /// `features::synthetic`).
        #[arg(long, default_value = "none", value_parser = parse_segments)]
        segments: Segments,
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
    /// Train, validate and calibrate on a dataset and write the model bundle (ONNX model,
    /// manifest, explainer, HTML report, held-out scores) to the registry.
    Train(TrainArgs),
    /// Sales capacity: which threshold for N leads a week, with what precision, share of
    /// conversions caught and expected conversions, and what each grade band holds, from a
    /// bundle's held-out predictions.
    Thresholds(ThresholdsArgs),
    /// The registry: versions, the live one, promote, revert, and the log of changes.
    Registry {
        /// Registry folder, or a URL of one on object storage (`file:///...`).
        #[arg(
            long,
            env = "LEADSCORE_REGISTRY",
            default_value = "registry",
            global = true
        )]
        registry: PathBuf,
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// Load a dataset's history (entities, events, outcomes) into an entity store, so the
    /// server's sales queue is right the day it starts. Stop the server first (the store is
    /// one process's); running it twice stores nothing twice.
    Import {
        /// Dataset spec (TOML).
        #[arg(long)]
        spec: PathBuf,
        /// Folder the spec's relative file paths are read from (default: the spec's own
        /// folder).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Entity store folder (the server's `--store`).
        #[arg(long)]
        store: PathBuf,
    },
    /// Write what an entity store holds as entities, events and outcomes files with a
    /// dataset spec that `train` reads (a running server does the same at
    /// `POST /admin/store/export`).
    Export {
        /// Entity store folder (the server's `--store`).
        #[arg(long)]
        store: PathBuf,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// The entities to write: propensity (leads) or churn (customers) [default: the
        /// task of `--like`, else propensity].
        #[arg(long, value_parser = parse_task)]
        task: Option<features::spec::Task>,
        /// The spec the model was trained from: the export keeps its name, label, cutoffs,
        /// feature options and column kinds.
        #[arg(long)]
        like: Option<PathBuf>,
    },
    /// Write score requests (the server's JSON body, one per line) for entities of a
    /// dataset, at the moment its spec scores them, with the events before it only.
    Requests {
        /// Dataset spec (TOML).
        #[arg(long)]
        spec: PathBuf,
        /// Folder the spec's relative file paths are read from (default: the spec's folder).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// How many entities (spread evenly over the dataset).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Output file (JSON lines).
        #[arg(long)]
        out: PathBuf,
    },
    /// What a running server scored over its drift window (an hour by default) against the
    /// live model's training distribution: the features and fields that moved most
    /// (population stability index), share missing, share of categorical levels never seen
    /// in training, and alerts.
    Drift(DriftArgs),
}

#[derive(clap::Args)]
struct DriftArgs {
    /// The server, `http://host:port` (plain HTTP; for HTTPS save the answer with curl and
    /// pass `--answer`).
    #[arg(long, env = "LEADSCORE_URL", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// The model whose drift to read (its name; a model trained without `--model` is named
    /// after its task).
    #[arg(long, alias = "task", default_value = "propensity")]
    model: ModelName,
    /// A client API key (from the environment, not the command line, on shared machines).
    #[arg(long, env = "LEADSCORE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Read a saved answer of `GET /v1/drift/{model}` from this file instead (`-`: stdin).
    #[arg(long)]
    answer: Option<PathBuf>,
    /// Features and fields shown, by PSI (0: all).
    #[arg(long, default_value_t = 20)]
    top: usize,
    /// PSI above this is an alert.
    #[arg(long, default_value_t = 0.2)]
    psi_alert: f64,
    /// Share of unknown categorical levels above this is an alert.
    #[arg(long, default_value_t = 0.05)]
    unknown_alert: f64,
    /// Fewer rows scored than this: no alert (too few to tell).
    #[arg(long, default_value_t = 500)]
    min_rows: u64,
    /// Exit with status 3 when there is an alert (for cron and monitoring scripts).
    #[arg(long)]
    fail_on_alert: bool,
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// Every version of each model, newest last, the live one marked.
    List,
    /// One version's manifest summary and its entries in the log.
    Show {
        /// The model's name (`--task` is accepted for a model named after its task).
        #[arg(long, alias = "task")]
        model: ModelName,
        /// Default: the live one.
        #[arg(long)]
        version: Option<String>,
    },
    /// Make a version live (the server follows within its reload interval).
    Promote {
        /// The model's name.
        #[arg(long, alias = "task")]
        model: ModelName,
        #[arg(long)]
        version: String,
        /// Why, for the log.
        #[arg(long)]
        reason: String,
        /// Who, for the log (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// Make live again the version that was live before the current one was promoted.
    Revert {
        /// The model's name.
        #[arg(long, alias = "task")]
        model: ModelName,
        /// Why, for the log.
        #[arg(long)]
        reason: String,
        /// Who, for the log (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// The log of every change: who, when, what, why.
    Log,
}

impl RegistryCommand {
    /// Whether it changes the registry (and so takes its lock on object storage).
    fn writes(&self) -> bool {
        matches!(
            self,
            RegistryCommand::Promote { .. } | RegistryCommand::Revert { .. }
        )
    }
}

#[derive(clap::Args)]
struct ThresholdsArgs {
    /// Registry folder.
    #[arg(long, env = "LEADSCORE_REGISTRY", default_value = "registry")]
    registry: PathBuf,
    /// The model's name.
    #[arg(long, alias = "task", default_value = "propensity")]
    model: ModelName,
    /// Bundle version (default: the live one, else the newest).
    #[arg(long)]
    version: Option<String>,
    /// Leads the team can work a week (repeatable; default: a ladder of shares of the
    /// volume).
    #[arg(long = "capacity-per-week")]
    capacities: Vec<f64>,
    /// Leads scored a week (default: the held-out rows over the weeks they cover; needed
    /// for undated, tabular data).
    #[arg(long)]
    volume_per_week: Option<f64>,
    /// The thresholds file the server reads: the grades and sales-ready cut-off in force
    /// are the bundle's with its overrides (default: the bundle's).
    #[arg(long)]
    thresholds_file: Option<PathBuf>,
}

/// Hyperparameters of the trees (defaults: LightGBM's, with the number of trees chosen by
/// early stopping).
#[derive(clap::Args, Clone)]
struct GbdtArgs {
    /// Shrinkage of every tree.
    #[arg(long, default_value_t = GbdtParams::default().learning_rate)]
    learning_rate: f64,
    /// Most leaves per tree.
    #[arg(long, default_value_t = GbdtParams::default().num_leaves)]
    num_leaves: usize,
    /// Fewest training rows in a leaf.
    #[arg(long, default_value_t = GbdtParams::default().min_data_in_leaf)]
    min_data_in_leaf: usize,
    /// L2 regularisation of the leaf values.
    #[arg(long, default_value_t = GbdtParams::default().lambda_l2)]
    lambda_l2: f64,
    /// Most trees when early stopping; the number of trees without it.
    #[arg(long, default_value_t = EarlyStopping::default().max_trees)]
    max_trees: usize,
    /// Grow exactly --max-trees trees, without early stopping.
    #[arg(long)]
    no_early_stopping: bool,
    /// Where boosting starts: `constant` (the mean label's log-odds), `linear` (a logistic
    /// regression's log-odds; the trees add what it misses), or `auto` (both tried on the
    /// early-stopping split, the linear start kept only if clearly better; `constant` without
    /// early stopping). "+lin" after the number of trees in the summary marks a linear start.
    #[arg(long, value_enum, default_value = "auto")]
    gbdt_start: StartArg,
}

#[derive(clap::ValueEnum, Clone, Copy)]
enum StartArg {
    Auto,
    Constant,
    Linear,
}

impl GbdtArgs {
    fn family_params(&self) -> FamilyParams {
        let defaults = FamilyParams::default();
        FamilyParams {
            gbdt: GbdtParams {
                learning_rate: self.learning_rate,
                num_leaves: self.num_leaves,
                min_data_in_leaf: self.min_data_in_leaf,
                lambda_l2: self.lambda_l2,
                n_trees: self.max_trees,
                ..defaults.gbdt
            },
            gbdt_early_stopping: (!self.no_early_stopping).then(|| EarlyStopping {
                max_trees: self.max_trees,
                ..EarlyStopping::default()
            }),
            gbdt_start: match self.gbdt_start {
                StartArg::Auto => GbdtStart::Auto,
                StartArg::Constant => GbdtStart::Constant,
                StartArg::Linear => GbdtStart::Linear,
            },
            ..defaults
        }
    }
}

/// How `train` and `evaluate` validate.
#[derive(clap::Args)]
struct ValidationArgs {
    /// `auto`: time split for event data, stratified k-fold for tabular data; `kfold`:
    /// k-fold whatever the form (to compare with tools that only do k-fold).
    #[arg(long, value_enum, default_value = "auto")]
    validation: Validation,
    #[arg(long, default_value_t = DEFAULT_FOLDS)]
    folds: usize,
    /// Time split: the share of entities held out (0 < share < 1), or `all` (every entity
    /// scored at the last cutoff validates; training uses earlier cutoffs only).
    #[arg(long, default_value = "0.25")]
    holdout_share: HoldoutShare,
    /// Validation splits in all: with N > 1 the split is drawn again with the next N - 1
    /// seeds and the mean and spread of each family's held-out ROC AUC are printed (and put
    /// in the report); the model shipped is the first split's.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    repeats: u32,
}

impl ValidationArgs {
    fn repeat_settings<'a>(
        &self,
        seed: u64,
        choice: FamilyChoice,
        params: &'a FamilyParams,
    ) -> RepeatSettings<'a> {
        RepeatSettings {
            mode: validation_mode(self.validation),
            folds: self.folds,
            seed,
            holdout: self.holdout_share,
            choice,
            params,
            repeats: self.repeats as usize,
        }
    }
}

#[derive(clap::Args)]
struct TrainArgs {
    /// Dataset spec (TOML).
    #[arg(long, required_unless_present = "prepared")]
    spec: Option<PathBuf>,
    /// Train from a feature table built elsewhere instead of the spec's files: the folder
    /// the Python package's Spark build writes (`leadscore.spark`, see README "Python").
    #[arg(long, conflicts_with_all = ["spec", "data_dir"])]
    prepared: Option<PathBuf>,
    /// With --prepared: keep this share of the entities (all rows of each, chosen by a hash
    /// of the id and --seed) as the table is read, for a table larger than memory.
    #[arg(long, requires = "prepared")]
    sample_entities: Option<f64>,
    /// Folder the spec's relative file paths are read from (default: the spec's folder).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Registry folder, or a URL of one on object storage (`file:///...`: mirrored, the new
    /// bundle uploaded after); the bundle goes to `<registry>/<model>/<version>/`.
    #[arg(long, env = "LEADSCORE_REGISTRY", default_value = "registry")]
    registry: PathBuf,
    /// The model's name in the registry (lower-case letters, digits, `-`, `_`), e.g.
    /// `propensity-enterprise`; default: the spec's task (`propensity` or `churn`). The
    /// server scores with it at `POST /v1/score/{model}`.
    #[arg(long)]
    model: Option<ModelName>,
    /// `both`: evaluate both families, ship the one with the higher held-out ROC AUC.
    #[arg(long, value_enum, default_value = "both")]
    family: Families,
    #[command(flatten)]
    check: ValidationArgs,
    /// The generator's truth.parquet: records the ground-truth ROC AUC beside the model's.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Version name (default: creation time and a random suffix).
    #[arg(long)]
    version: Option<String>,
    #[command(flatten)]
    gbdt: GbdtArgs,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Make the new version live.
    #[arg(long, conflicts_with = "promote_if_better")]
    promote: bool,
    /// Make the new version live only if it is not worse than the live one on the same
    /// held-out rows (or there is none, or it is older than --max-live-age-days); otherwise
    /// keep the live one, log the refusal and exit non-zero. The new bundle stays for
    /// inspection either way.
    #[arg(long)]
    promote_if_better: bool,
    /// Publish gate: largest drop of held-out ROC AUC accepted.
    #[arg(long, default_value_t = 0.005)]
    max_auc_drop: f64,
    /// Publish gate: largest rise of held-out calibration error (ECE) accepted.
    #[arg(long, default_value_t = 0.002)]
    max_ece_rise: f64,
    /// Publish gate: a live model older than this many days is replaced anyway.
    #[arg(long)]
    max_live_age_days: Option<f64>,
    /// Who is promoting, for the registry's log (default: $USER).
    #[arg(long)]
    by: Option<String>,
    /// Also train one model per level of this categorical profile field (named
    /// `<model>-<level>`), each compared with the global model on that segment's held-out
    /// rows; a segment model is written only where it is better by more than the noise, and
    /// the routing table for what shipped goes to `<registry>/routing.toml`.
    #[arg(long)]
    segment_by: Option<String>,
    /// Fewest positive rows a segment needs for a model of its own.
    #[arg(long, default_value_t = SegmentParams::default().min_positives)]
    min_segment_positives: usize,
    /// A segment model ships only when its ROC AUC gain is above this many standard
    /// deviations of the gain (bootstrap over the segment's held-out rows).
    #[arg(long, default_value_t = SegmentParams::default().noise_multiple)]
    segment_noise_multiple: f64,
    /// ... and above this ROC AUC gain.
    #[arg(long, default_value_t = SegmentParams::default().min_gain)]
    min_segment_gain: f64,
}

#[derive(clap::Args)]
struct EvaluateArgs {
    /// Dataset spec (TOML).
    #[arg(long)]
    spec: PathBuf,
    /// Folder the spec's relative file paths are read from (default: the spec's folder).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    check: ValidationArgs,
    /// Model families to evaluate.
    #[arg(long, value_enum, default_value = "both")]
    family: Families,
    /// The generator's truth.parquet: prints the ground-truth ROC AUC on the same rows.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Also write the feature table as CSV (entity_id, cutoff, label, split, features), e.g.
    /// for ../shared/peer/train_peer.py; `split` is each row's role in the validation plan
    /// (`train`, `valid`, `unused` or `fold<i>`); feature names are reduced to letters, digits
    /// and `_`.
    #[arg(long)]
    export_csv: Option<PathBuf>,
    #[command(flatten)]
    gbdt: GbdtArgs,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Validation {
    Auto,
    Kfold,
}

/// `--family` of `evaluate` and `train`.
#[derive(Clone, Copy, ValueEnum)]
enum Families {
    /// Both families (`train` ships the better).
    #[value(alias = "best")]
    Both,
    Gbdt,
    Logistic,
}

impl Families {
    fn choice(self) -> FamilyChoice {
        match self {
            Families::Both => FamilyChoice::Best,
            Families::Gbdt => FamilyChoice::Only(ModelFamily::Gbdt),
            Families::Logistic => FamilyChoice::Only(ModelFamily::Logistic),
        }
    }
}

fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Generate {
            out,
            kind,
            entities,
            seed,
            segments,
        } => {
            let params = GeneratorParams {
                kind: match kind {
                    Kind::Leads => SyntheticKind::Leads,
                    Kind::Customers => SyntheticKind::Customers,
                },
                entities,
                seed,
                segments,
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
                prepared.entity_count(),
                table.n_rows(),
                table.n_features(),
                100.0 * table.positive_rate(),
                started.elapsed().as_secs_f64(),
                out.display()
            );
        }
        Command::Evaluate(args) => evaluate_command(&args)?,
        Command::Train(mut args) => {
            let mirror = cli_registry::mirror(&mut args.registry, Some("leadscore-train train"))?;
            train_command(&args)?;
            if let Some(m) = mirror {
                m.push()?;
            }
        }
        Command::Thresholds(mut args) => {
            let _mirror = cli_registry::mirror(&mut args.registry, None)?;
            thresholds_command(&args)?
        }
        Command::Registry {
            mut registry,
            command,
        } => {
            let writer = command.writes().then_some("leadscore-train registry");
            let mirror = cli_registry::mirror(&mut registry, writer)?;
            registry_command(&registry, command)?;
            if let Some(m) = mirror {
                m.push()?;
            }
        }
        Command::Drift(args) => return drift_command(&args),
        Command::Import {
            spec,
            data_dir,
            store,
        } => cli_store::import(&spec, data_dir, &store)?,
        Command::Export {
            store,
            out,
            task,
            like,
        } => cli_store::export(&store, &out, task, like.as_deref())?,
        Command::Requests {
            spec,
            data_dir,
            limit,
            out,
        } => {
            let mut spec = features::spec::DatasetSpec::from_file(&spec)?;
            if let Some(dir) = data_dir {
                spec.base_dir = dir;
            }
            let data = features::load::load_dataset(&spec)?;
            let cutoffs = features::builder::resolve_cutoffs(&data)?;
            let requests = score_requests(&data, &cutoffs, limit)?;
            let mut text = String::new();
            for request in &requests {
                text.push_str(&serde_json::to_string(request)?);
                text.push('\n');
            }
            std::fs::write(&out, text).with_context(|| out.display().to_string())?;
            println!("{} requests -> {}", requests.len(), out.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn thresholds_command(args: &ThresholdsArgs) -> Result<()> {
    let model = &args.model;
    let registry = Registry::new(&args.registry);
    let version = match &args.version {
        Some(v) => v.clone(),
        None => registry.served(model)?.with_context(|| {
            format!(
                "no {model} bundle in {}",
                registry.model_dir(model).display()
            )
        })?,
    };
    let bundle = registry.load(model, &version)?;
    let rows = bundle.read_holdout()?.with_context(|| {
        format!(
            "{} is missing: the bundle kept no held-out predictions",
            bundle.holdout_path().display()
        )
    })?;
    let held = HeldOutScores::from_holdout(&rows, &bundle.manifest().dataset.cutoffs)
        .with_context(|| bundle.holdout_path().display().to_string())?;
    let over = args
        .thresholds_file
        .as_deref()
        .map(ThresholdsFile::read)
        .transpose()?
        .unwrap_or_default();
    // The file's own volume, else the command's, else the held-out rows'.
    let file_volume = over.get(model.as_str()).and_then(|o| o.volume_per_week);
    let volume = held
        .resolve_volume(args.volume_per_week.or(file_volume))
        .context("--volume-per-week")?;
    let thresholds = over
        .apply(model.as_str(), &bundle.manifest().thresholds, Some(&held))
        .map_err(anyhow::Error::msg)?;
    let name = format!("{model}/{version}");
    print!(
        "{}",
        capacity_report(
            &name,
            bundle.manifest().task,
            &held,
            &thresholds,
            &args.capacities,
            volume
        )?
    );
    Ok(())
}

/// A spinner showing `message` and the elapsed time, for one long step.
fn spinner(message: String) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(message);
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

fn prepare_with_progress(
    spec: &std::path::Path,
    data_dir: Option<&std::path::Path>,
) -> Result<Prepared> {
    let bar = spinner(format!("loading {} and building features", spec.display()));
    let prepared = prepare(spec, data_dir);
    bar.finish_and_clear();
    let prepared = prepared?;
    print_prepared(&prepared, "");
    Ok(prepared)
}

/// One line on what was prepared: entities, rows, features, positive share, `more`.
fn print_prepared(prepared: &Prepared, more: &str) {
    let table = &prepared.table;
    println!(
        "{}: {} entities, {} rows x {} features, {:.1} % positive{more}",
        prepared.spec.name,
        prepared.entity_count(),
        table.n_rows(),
        table.n_features(),
        100.0 * table.positive_rate(),
    );
}

fn read_prepared_with_progress(
    dir: &std::path::Path,
    share: Option<f64>,
    seed: u64,
) -> Result<Prepared> {
    let bar = spinner(format!(
        "reading the prepared feature table {}",
        dir.display()
    ));
    let sample = share.map(|share| EntitySample { share, seed });
    let prepared = read_prepared(dir, sample.as_ref());
    bar.finish_and_clear();
    let prepared = prepared?;
    let events = match &prepared.source {
        training::pipeline::Source::Table(table) => table.events,
        training::pipeline::Source::Files(_) => 0,
    };
    let sampled = sample.map_or(String::new(), |s| {
        format!("; a {} share of the entities", s.share)
    });
    print_prepared(
        &prepared,
        &format!(
            " (prepared table {}, built from {events} events{sampled})",
            dir.display()
        ),
    );
    Ok(prepared)
}

/// Column names made of ASCII letters, digits and `_` only (others become `_`), kept unique
/// by a numeric suffix.
fn plain_column_names(names: &[&str]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    names
        .iter()
        .map(|name| {
            let base: String = name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            let mut candidate = base.clone();
            let mut n = 2;
            while !seen.insert(candidate.clone()) {
                candidate = format!("{base}_{n}");
                n += 1;
            }
            candidate
        })
        .collect()
}

/// The validation plan with the data guards applied; prints the scheme and the warnings (the
/// loader's first, then the guards').
fn plan_validation(
    prepared: &Prepared,
    validation: Validation,
    folds: usize,
    seed: u64,
    holdout: HoldoutShare,
) -> Result<(ValidationPlan, Vec<String>)> {
    let mode = validation_mode(validation);
    let (plan, guards) = validation_plan_with(prepared, mode, folds, seed, holdout)?;
    let mut warnings = prepared.warnings().to_vec();
    warnings.extend(guards);
    println!("validation: {}", plan.description());
    for warning in &warnings {
        println!("warning: {warning}");
    }
    Ok((plan, warnings))
}

fn code_version() -> String {
    match option_env!("LEADSCORE_GIT_COMMIT") {
        Some(commit) if !commit.is_empty() => {
            format!("leadscore {} ({commit})", env!("CARGO_PKG_VERSION"))
        }
        _ => format!("leadscore {}", env!("CARGO_PKG_VERSION")),
    }
}

fn train_command(args: &TrainArgs) -> Result<()> {
    let started = Instant::now();
    let registry = Registry::new(&args.registry);
    // The input is read and checked first: on bad input nothing is written, not even the
    // registry folder or its lock.
    let (prepared, input) = match (&args.spec, &args.prepared) {
        (Some(spec), _) => (
            prepare_with_progress(spec, args.data_dir.as_deref())?,
            format!("--spec {}", spec.display()),
        ),
        (None, Some(dir)) => (
            read_prepared_with_progress(dir, args.sample_entities, args.seed)?,
            format!("--prepared {}", dir.display()),
        ),
        (None, None) => bail!("give --spec or --prepared"),
    };
    // Held from here to the end: a promotion never races another run.
    let lock = registry.lock(&format!("train {input}"))?;
    // With the lock held no other writer is at work: a temporary folder is what a killed
    // run left behind.
    for model in registry.models()? {
        for left in clean_stale_temp_dirs(registry.root(), &model, std::time::Duration::ZERO)? {
            println!("removed {}, left by an interrupted run", left.display());
        }
    }
    let created_at = chrono::Utc::now();
    let version = args
        .version
        .clone()
        .unwrap_or_else(|| new_version_name(created_at));
    let segment_params = args
        .segment_by
        .as_ref()
        .map(|field| {
            let params = SegmentParams {
                field: field.clone(),
                min_positives: args.min_segment_positives,
                noise_multiple: args.segment_noise_multiple,
                min_gain: args.min_segment_gain,
                seed: args.seed,
                ..SegmentParams::default()
            };
            prepared
                .data("a segment model")
                .and_then(|data| params.check(data))
                .map(|()| params)
        })
        .transpose()?;
    let (plan, warnings) = plan_validation(
        &prepared,
        args.check.validation,
        args.check.folds,
        args.seed,
        args.check.holdout_share,
    )?;
    let truth = args.truth.as_deref().map(GroundTruth::read).transpose()?;
    let evaluations = evaluate_with_progress(
        &prepared,
        &plan,
        args.family.choice(),
        &args.gbdt.family_params(),
        args.seed,
    )?;
    let shipped = choose_family(&evaluations).context("no model family was evaluated")?;
    let repeated = repeat_splits(
        &prepared,
        &plan,
        &evaluations,
        &args
            .check
            .repeat_settings(args.seed, args.family.choice(), &args.gbdt.family_params()),
    )?;
    let model = args
        .model
        .clone()
        .unwrap_or_else(|| ModelName::of_task(prepared.spec.task));
    let mut trained = vec![TrainedModel {
        model: model.clone(),
        segment: None,
        prepared,
        plan,
        warnings,
        evaluations,
        shipped,
    }];
    let mut segment_rows = Vec::new();
    if let Some(params) = &segment_params {
        let (segments, rows) = train_segments(args, params, &trained[0])?;
        trained.extend(segments);
        segment_rows = rows;
    }
    let mut refusals = Vec::new();
    for (i, t) in trained.iter().enumerate() {
        let bar = spinner(format!("writing the bundle of {}", t.model));
        let contents = assemble_bundle(&BundleInputs {
            prepared: &t.prepared,
            plan: &t.plan,
            warnings: &t.warnings,
            evaluations: &t.evaluations,
            shipped: t.shipped,
            truth: truth.as_ref(),
            model: Some(t.model.clone()),
            version: version.clone(),
            created_at,
            code_version: code_version(),
            started,
            segments: if i == 0 { &segment_rows } else { &[] },
            repeated: if i == 0 { &repeated } else { &[] },
        });
        let written = contents.map_err(anyhow::Error::from).and_then(|contents| {
            let dir = registry.write(&contents)?;
            Ok((contents, dir))
        });
        bar.finish_and_clear();
        let (contents, dir) = written?;
        if i == 0 {
            print_summary(&t.prepared, &t.evaluations, Some(t.shipped), truth.as_ref())?;
        }
        let m = &contents.manifest;
        println!(
            "{}: thresholds: {}",
            t.model,
            describe_thresholds(&m.thresholds, m.task)
        );
        println!(
            "bundle {}/{} ({}) written to {} in {:.1}s; report: {}",
            t.model,
            m.version,
            t.evaluations[t.shipped].family.as_str(),
            dir.display(),
            started.elapsed().as_secs_f64(),
            dir.join(models::bundle::REPORT_FILE).display()
        );
        if let Some(refusal) = publish(
            args,
            &registry,
            &lock,
            &t.prepared,
            &t.evaluations[t.shipped],
            m,
        )? {
            refusals.push(refusal);
        }
    }
    if let Some(params) = &segment_params {
        write_routing(&registry, &model, &params.field, &trained[1..])?;
    }
    if !refusals.is_empty() {
        bail!("{}", refusals.join("\n"));
    }
    Ok(())
}

/// A model trained by this run: the global one or a segment's.
struct TrainedModel {
    model: ModelName,
    /// The level of the segment field it was trained on; `None` for the global model.
    segment: Option<String>,
    prepared: Prepared,
    plan: ValidationPlan,
    warnings: Vec<String>,
    evaluations: Vec<Evaluation>,
    shipped: usize,
}

/// Trains a model per level of the segment field and keeps those that beat the global
/// model on their segment's held-out rows by more than the noise; prints the comparison
/// and returns it for the global model's report.
fn train_segments(
    args: &TrainArgs,
    params: &SegmentParams,
    global: &TrainedModel,
) -> Result<(Vec<TrainedModel>, Vec<SegmentRow>)> {
    let settings = RunSettings {
        mode: validation_mode(args.check.validation),
        folds: args.check.folds,
        holdout: args.check.holdout_share,
        choice: args.family.choice(),
        family_params: args.gbdt.family_params(),
        seed: args.seed,
    };
    let bar = spinner(format!("segments by {}", params.field));
    let runs = segments::train_segments(
        &global.prepared,
        &global.evaluations[global.shipped],
        &global.model,
        params,
        &settings,
        |level| bar.set_message(format!("training the {} segment's model", level.level)),
    );
    bar.finish_and_clear();
    let runs = runs?;
    println!(
        "segments by {} ({} levels): each level's model against {} on the level's held-out rows",
        params.field,
        runs.len(),
        global.model
    );
    println!(
        "  {:<24} {:>8} {:>9} {:>9} {:>8} {:>8} {:>8} {:>7}  decision",
        "level", "rows", "positive", "held out", "segment", "global", "gain", "noise"
    );
    let mut shipped = Vec::new();
    let mut rows = Vec::new();
    for run in runs {
        let level = &run.level;
        let mut row = SegmentRow {
            field: params.field.clone(),
            level: level.level.clone(),
            rows: level.rows,
            positives: level.positives,
            comparison: None,
            decision: String::new(),
        };
        let head = format!(
            "  {:<24} {:>8} {:>9}",
            level.level, level.rows, level.positives
        );
        match run.outcome {
            SegmentOutcome::Skipped(why) => {
                println!("{head} {:>45}  none: {why}", "");
                row.decision = format!("none: {why}");
            }
            SegmentOutcome::Compared {
                comparison: c,
                ships,
                why,
                model,
            } => {
                let decision = match &model {
                    Some(m) if ships => format!("ships as {}", m.name),
                    _ => "none: not better than the noise".to_string(),
                };
                println!(
                    "{head} {:>9} {:>8.4} {:>8.4} {:>+8.4} {:>7.4}  {decision}",
                    c.rows, c.segment_roc_auc, c.global_roc_auc, c.gain, c.noise
                );
                println!("      {why}");
                row.comparison = Some(c);
                row.decision = format!("{decision}: {why}");
                if let Some(m) = model.map(|m| *m) {
                    shipped.push(TrainedModel {
                        model: m.name,
                        segment: Some(level.level.clone()),
                        prepared: m.prepared,
                        plan: m.plan,
                        warnings: m.warnings,
                        evaluations: m.evaluations,
                        shipped: m.shipped,
                    });
                }
            }
        }
        rows.push(row);
    }
    Ok((shipped, rows))
}

/// Writes (or, when no segment shipped, removes) the table of `route` in the registry's
/// routing file, atomically; the server reads it on its next reload.
fn write_routing(
    registry: &Registry,
    route: &ModelName,
    field: &str,
    segments: &[TrainedModel],
) -> Result<()> {
    let path = registry.root().join(ROUTING_FILE);
    let existing = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| path.display().to_string()),
    };
    let shipped: Vec<(String, ModelName)> = segments
        .iter()
        .filter_map(|t| Some((t.segment.clone()?, t.model.clone())))
        .collect();
    let table = (!shipped.is_empty()).then(|| routing_table(route, field, &shipped));
    let text = replace_routing_table(&existing, route, table.as_deref());
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, &text)
        .and_then(|()| std::fs::File::open(&tmp).and_then(|f| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_context(|| format!("writing {}", path.display()))?;
    match table {
        Some(_) => println!(
            "routing: {} scores each entity with its {field} segment's model, the others with \
             {route}; written to {} (a server on this registry reads it)",
            route,
            path.display()
        ),
        None => println!(
            "routing: no segment model shipped; {route} scores every entity (its table removed \
             from {})",
            path.display()
        ),
    }
    Ok(())
}

fn parse_task(text: &str) -> Result<features::spec::Task, String> {
    match text {
        "propensity" => Ok(features::spec::Task::Propensity),
        "churn" => Ok(features::spec::Task::Churn),
        other => Err(format!("{other:?}: use propensity or churn")),
    }
}

fn parse_segments(text: &str) -> Result<Segments, String> {
    Segments::parse(text).ok_or_else(|| format!("{text:?}: use none, differ or alike"))
}

/// A bundle's cut-offs in one line.
fn describe_thresholds(t: &models::bundle::Thresholds, task: features::spec::Task) -> String {
    format!(
        "{} {:.4}; grades A >= {:.4}, B >= {:.4}, C >= {:.4}",
        training::words::words(task).flagged,
        t.sales_ready,
        t.grades.a,
        t.grades.b,
        t.grades.c
    )
}

/// Who is acting, for the registry's log.
fn who(by: Option<&str>) -> String {
    by.map(str::to_owned)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// After `train` wrote a bundle: promote it, gate it, or leave it off, as asked. Returns
/// the refusal, when the publish gate kept it off.
fn publish(
    args: &TrainArgs,
    registry: &Registry,
    lock: &RegistryLock,
    prepared: &Prepared,
    evaluation: &Evaluation,
    manifest: &Manifest,
) -> Result<Option<String>> {
    let (model, version) = (&manifest.name(), manifest.version.as_str());
    let who = who(args.by.as_deref());
    let name = format!("{model}/{version}");
    let status = registry.live_status(model)?;
    if let Some(problem) = &status.problem {
        eprintln!("warning: {problem}");
    }
    let live = status.version;
    if args.promote {
        registry.promote(lock, model, version, &who, "train --promote")?;
        println!("{name} is live");
        return Ok(None);
    }
    if !args.promote_if_better {
        match live {
            Some(live) => println!(
                "not promoted: {model}/{live} stays live (`leadscore-train registry promote` \
                 or `train --promote-if-better` make a version live)"
            ),
            None => println!(
                "not promoted: no version is live, so the server serves the newest, {name}"
            ),
        }
        return Ok(None);
    }
    let Some(live) = live else {
        registry.promote(lock, model, version, &who, "no live version yet")?;
        println!("{name} is live (no version was)");
        return Ok(None);
    };
    let live_bundle = registry
        .load(model, &live)
        .with_context(|| format!("the live version {live} cannot be read to compare with"))?;
    let policy = GatePolicy {
        max_roc_auc_drop: args.max_auc_drop,
        max_ece_rise: args.max_ece_rise,
        max_live_age_days: args.max_live_age_days,
    };
    let report = compare_with_live(
        prepared,
        evaluation,
        &live_bundle,
        &policy,
        chrono::Utc::now(),
    )?;
    println!(
        "publish gate on {} held-out rows: new ROC AUC {:.4}, ECE {:.4}; live {live} ({:.1} days old) ROC AUC {:.4}, ECE {:.4}",
        report.rows,
        report.new_roc_auc,
        report.new_ece,
        report.live_age_days,
        report.live_roc_auc,
        report.live_ece
    );
    if let Some(drift) = &report.data_drift {
        let top = top_shifts(drift, 5);
        let moved: Vec<String> = top
            .iter()
            .filter(|(_, psi)| *psi > 0.1)
            .map(|(name, psi)| format!("{name} {psi:.3}"))
            .collect();
        let said = match top.first() {
            _ if !moved.is_empty() => format!(
                "moved (PSI above 0.1; above 0.2 is a significant shift): {}",
                moved.join(", ")
            ),
            Some((name, psi)) => format!("nothing moved (highest PSI {psi:.3}, {name})"),
            None => "no rows to compare".to_string(),
        };
        println!(
            "the new data against the live model's training distribution ({} rows): {said}",
            drift.rows
        );
    }
    if report.promote {
        registry.promote(lock, model, version, &who, &report.reason)?;
        println!("{name} is live: {}", report.reason);
        Ok(None)
    } else {
        registry.record_refusal(lock, manifest.task, model, version, &who, &report.reason)?;
        Ok(Some(format!(
            "not promoted: {name}: {}; {model}/{live} stays live; the new bundle is kept for \
             inspection",
            report.reason,
        )))
    }
}

fn drift_command(args: &DriftArgs) -> Result<ExitCode> {
    let model = &args.model;
    let (text, source) = match &args.answer {
        Some(path) if path.as_os_str() == "-" => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("reading the answer from stdin")?;
            (text, "stdin".to_string())
        }
        Some(path) => (
            std::fs::read_to_string(path).with_context(|| path.display().to_string())?,
            path.display().to_string(),
        ),
        None => {
            let path = format!("/v1/drift/{model}");
            let text = http_get(&args.server, &path, args.api_key.as_deref())?;
            (text, format!("{}{path}", args.server.trim_end_matches('/')))
        }
    };
    let answer: DriftAnswer = serde_json::from_str(&text)
        .with_context(|| format!("{source} is not a drift answer of the server"))?;
    let limits = DriftLimits {
        psi: args.psi_alert,
        unknown_share: args.unknown_alert,
        min_rows: args.min_rows,
    };
    print!("{}", drift_table(&answer, &limits, args.top));
    if args.fail_on_alert && !drift_alerts(&answer, &limits).is_empty() {
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

/// `GET path` from a plain-HTTP server (`http://host[:port]`), with a bearer key; the body
/// of a 200 answer, or an error with the server's own message.
fn http_get(server: &str, path: &str, key: Option<&str>) -> Result<String> {
    use std::io::{Read as _, Write as _};
    use std::net::ToSocketAddrs as _;
    let Some(authority) = server.trim_end_matches('/').strip_prefix("http://") else {
        bail!(
            "--server {server}: only http:// is read directly; for https, save the answer \
             (curl -H 'Authorization: Bearer ...' {server}{path} > drift.json) and pass \
             --answer drift.json"
        );
    };
    if authority.contains('/') {
        bail!("--server {server}: give the server as http://host:port, without a path");
    }
    let host_port = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let timeout = std::time::Duration::from_secs(10);
    let address = host_port
        .to_socket_addrs()
        .with_context(|| format!("--server {server}: cannot resolve {host_port}"))?
        .next()
        .with_context(|| format!("--server {server}: {host_port} has no address"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&address, timeout)
        .with_context(|| format!("cannot connect to {server}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let authorization = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    // HTTP/1.0: the answer comes whole, never chunked, and the connection closes after it.
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nAccept: application/json\r\n{authorization}\r\n"
    )?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .with_context(|| format!("reading the answer of {server}{path}"))?;
    let text = String::from_utf8(raw).with_context(|| format!("{server}{path}: not UTF-8"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("{server}{path}: not an HTTP answer"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .with_context(|| format!("{server}{path}: no status in {:?}", head.lines().next()))?;
    if status != 200 {
        let message = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| body.chars().take(300).collect());
        bail!("{server}{path} answered {status}: {message}");
    }
    Ok(body.to_string())
}

/// The live version of `model` ([`Registry::live_status`]); what is wrong with `LIVE`, if
/// anything, goes to stderr as a warning (the version then comes from the log) or an error
/// (no version can be said to be live).
fn live_or_warn(registry: &Registry, model: &ModelName) -> Option<String> {
    match registry.live_status(model) {
        Ok(status) => {
            if let Some(problem) = &status.problem {
                eprintln!("warning: {model}: {problem}");
            }
            status.version
        }
        Err(e) => {
            eprintln!("error: {model}: no live version: {e}");
            None
        }
    }
}

fn registry_command(root: &std::path::Path, command: RegistryCommand) -> Result<()> {
    let registry = Registry::new(root);
    match command {
        RegistryCommand::List => {
            let models = registry.models()?;
            let width = models
                .iter()
                .map(|m| m.as_str().len())
                .max()
                .unwrap_or(0)
                .max(10);
            println!(
                "{:<width$} {:<10} {:<32} {:<4} {:<20} {:<14} {:>8} {:>7} {:>8}",
                "model", "task", "version", "live", "created", "kind", "ROC AUC", "ECE", "rows"
            );
            for model in &models {
                let live = live_or_warn(&registry, model);
                for version in registry.versions(model)? {
                    let mark = if live.as_deref() == Some(version.as_str()) {
                        "*"
                    } else {
                        ""
                    };
                    match registry.load(model, &version) {
                        Ok(bundle) => {
                            let m = bundle.manifest();
                            // Ranking from the model's scores; calibration from the
                            // calibrated probabilities (cross-fitted, see ARCHITECTURE).
                            let (raw, v) = (&m.validation.raw, &m.validation.calibrated);
                            println!(
                                "{:<width$} {:<10} {:<32} {:<4} {:<20} {:<14} {:>8.4} {:>7.4} {:>8}",
                                model.as_str(),
                                m.task.as_str(),
                                version,
                                mark,
                                m.created_at.format("%Y-%m-%d %H:%M:%S"),
                                format!("{:?}", m.model_kind).to_lowercase(),
                                raw.roc_auc,
                                v.ece,
                                v.rows
                            );
                        }
                        Err(e) => println!(
                            "{:<width$} {:<10} {:<32} {:<4} unreadable: {e}",
                            model.as_str(),
                            "?",
                            version,
                            mark
                        ),
                    }
                }
            }
        }
        RegistryCommand::Show { model, version } => {
            let version = match version {
                Some(v) => v,
                None => registry
                    .served(&model)?
                    .with_context(|| format!("no {model} version"))?,
            };
            let bundle = registry.load(&model, &version)?;
            let m = bundle.manifest();
            let (raw, v) = (&m.validation.raw, &m.validation.calibrated);
            println!("{model}/{version} ({} model)", m.task.as_str());
            let live = live_or_warn(&registry, &model);
            println!(
                "  live:        {}",
                live.as_deref() == Some(version.as_str())
            );
            println!("  created:     {} by {}", m.created_at, m.code_version);
            println!(
                "  model:       {:?}, {} features",
                m.model_kind,
                m.n_features()
            );
            println!(
                "  data:        {} ({} rows, {} positive)",
                m.dataset.name, m.dataset.rows, m.dataset.positives
            );
            println!("  validation:  {}", m.validation.scheme);
            println!(
                "  held out:    ROC AUC {:.4} (calibrated {:.4}), log loss {:.4}, ECE {:.4} on {} rows",
                raw.roc_auc, v.roc_auc, v.log_loss, v.ece, v.rows
            );
            println!(
                "  thresholds:  {}",
                describe_thresholds(&m.thresholds, m.task)
            );
            println!("  report:      {}", bundle.report_path().display());
            for e in registry
                .history()?
                .iter()
                .filter(|e| e.model_name() == model.as_str() && e.version == version)
            {
                println!(
                    "  log:         {} {:?} by {}: {}",
                    e.at.format("%Y-%m-%d %H:%M:%S"),
                    e.action,
                    e.who,
                    e.why
                );
            }
        }
        RegistryCommand::Promote {
            model,
            version,
            reason,
            by,
        } => {
            let lock = registry.lock("registry promote")?;
            let event = registry.promote(&lock, &model, &version, &who(by.as_deref()), &reason)?;
            if registry
                .load(&model, &event.version)
                .is_ok_and(|b| !b.has_model_digest())
            {
                eprintln!(
                    "note: {model}/{} has no `model_sha256` in its manifest (made before \
                     bundles stored one): its model.onnx cannot be checked",
                    event.version
                );
            }
            println!(
                "{model}/{} is live (was {})",
                event.version,
                event.previous.as_deref().unwrap_or("none")
            );
        }
        RegistryCommand::Revert { model, reason, by } => {
            let lock = registry.lock("registry revert")?;
            let event = registry.revert(&lock, &model, &who(by.as_deref()), &reason)?;
            println!(
                "{model}/{} is live again (was {})",
                event.version,
                event.previous.as_deref().unwrap_or("none")
            );
        }
        RegistryCommand::Log => {
            for e in registry.history()? {
                println!(
                    "{} {:<8} {:<22} {:<32} (was {}) by {}: {}",
                    e.at.format("%Y-%m-%dT%H:%M:%SZ"),
                    format!("{:?}", e.action).to_lowercase(),
                    e.model_name(),
                    e.version,
                    e.previous.as_deref().unwrap_or("none"),
                    e.who,
                    e.why
                );
            }
        }
    }
    Ok(())
}

/// Evaluates the families of `choice` behind a progress bar.
fn evaluate_with_progress(
    prepared: &Prepared,
    plan: &ValidationPlan,
    choice: FamilyChoice,
    params: &FamilyParams,
    seed: u64,
) -> Result<Vec<Evaluation>> {
    let bar = ProgressBar::new(choice.families().len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let mut started_one = false;
    let evaluations = evaluate_families(prepared, plan, choice, params, seed, |family| {
        if started_one {
            bar.inc(1);
        }
        started_one = true;
        bar.set_message(format!("validating {}", family.as_str()));
    });
    bar.finish_and_clear();
    Ok(evaluations?)
}

/// The summary table: one line per family, the shipped one (if any) marked.
fn print_summary(
    prepared: &Prepared,
    evaluations: &[Evaluation],
    shipped: Option<usize>,
    truth: Option<&GroundTruth>,
) -> Result<()> {
    println!(
        "  {:<9} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8} {:>7} {:>7}",
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
        "trees",
        "fit s",
        "all s"
    );
    for (i, e) in evaluations.iter().enumerate() {
        let truth_auc =
            truth_roc_auc(truth, prepared, e)?.map_or("-".to_string(), |auc| format!("{auc:.4}"));
        let fold_auc = if e.fold_roc_auc.is_empty() {
            "-".to_string()
        } else {
            format!(
                "{:.4}",
                e.fold_roc_auc.iter().sum::<f64>() / e.fold_roc_auc.len() as f64
            )
        };
        let trees = match &e.model {
            FittedModel::Gbdt(model) => format!(
                "{}{}",
                model.trees.trees().len(),
                if model.start.is_some() { "+lin" } else { "" }
            ),
            FittedModel::Logistic(_) => "-".to_string(),
        };
        let (raw, calibrated) = (&e.raw_metrics, &e.calibrated_metrics);
        println!(
            "{} {:<9} {:>8} {:>8.4} {:>9} {:>8.4} {:>8.4} {:>8.4} {:>8.4} {:>9.4} {:>9} {:>8} {:>7.1} {:>7.2}",
            if Some(i) == shipped { "*" } else { " " },
            e.family.as_str(),
            raw.rows,
            raw.roc_auc,
            fold_auc,
            raw.pr_auc,
            calibrated.log_loss,
            calibrated.brier,
            raw.ece,
            calibrated.ece,
            truth_auc,
            trees,
            e.fit_seconds,
            e.seconds
        );
        println!("    calibration: {}", e.calibration_reason);
        if let Some(warning) = e.model.solver_warning() {
            println!("    warning: {warning}");
        }
    }
    if shipped.is_some() {
        println!("  (* shipped)");
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
    let (plan, _warnings) = plan_validation(
        &prepared,
        args.check.validation,
        args.check.folds,
        args.seed,
        args.check.holdout_share,
    )?;
    if let Some(path) = &args.export_csv {
        let mut frame = table.to_dataframe()?;
        let roles = plan.row_roles(table.n_rows());
        frame
            .insert_column(3, polars::prelude::Column::new("split".into(), roles))
            .context("adding the split column")?;
        // LightGBM refuses JSON-special characters in feature names (`Country=<other>`,
        // `"`, `:`, `,`...): the CSV for other tools gets plain names, in the same order.
        let names: Vec<&str> = frame
            .get_column_names()
            .iter()
            .map(|n| n.as_str())
            .collect();
        let plain = plain_column_names(&names);
        frame
            .set_column_names(&plain)
            .context("renaming the exported columns")?;
        let mut file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        use polars::prelude::SerWriter as _;
        polars::prelude::CsvWriter::new(&mut file)
            .finish(&mut frame)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("feature table written to {}", path.display());
    }
    let truth = args.truth.as_deref().map(GroundTruth::read).transpose()?;
    let evaluations = evaluate_with_progress(
        &prepared,
        &plan,
        args.family.choice(),
        &args.gbdt.family_params(),
        args.seed,
    )?;
    print_summary(&prepared, &evaluations, None, truth.as_ref())?;
    repeat_splits(
        &prepared,
        &plan,
        &evaluations,
        &args
            .check
            .repeat_settings(args.seed, args.family.choice(), &args.gbdt.family_params()),
    )?;
    Ok(())
}

fn validation_mode(validation: Validation) -> ValidationMode {
    match validation {
        Validation::Auto => ValidationMode::Auto,
        Validation::Kfold => ValidationMode::KFold,
    }
}

/// `--repeats`: the held-out ROC AUC of each family over the run's split and `repeats - 1`
/// more, printed; none when one split was asked for or the split is not random.
fn repeat_splits(
    prepared: &Prepared,
    plan: &ValidationPlan,
    evaluations: &[Evaluation],
    settings: &RepeatSettings<'_>,
) -> Result<Vec<RepeatedAuc>> {
    if settings.repeats < 2 {
        return Ok(Vec::new());
    }
    if !is_random(plan, settings.holdout) {
        println!(
            "repeats: the split is not random (every entity scored at the last cutoff \
             validates), so it is not repeated"
        );
        return Ok(Vec::new());
    }
    let bar = spinner("repeating the validation split".to_string());
    let repeated = repeated_roc_auc(prepared, evaluations, settings, |k| {
        bar.set_message(format!("validation split {k} of {}", settings.repeats));
    })?;
    bar.finish_and_clear();
    println!(
        "held-out ROC AUC over {} splits (seeds {}..):",
        settings.repeats, settings.seed
    );
    for r in &repeated {
        println!("  {:<9} {}", r.family.as_str(), r.describe());
    }
    Ok(repeated)
}

#[cfg(test)]
mod tests {
    use super::plain_column_names;

    #[test]
    fn exported_column_names_are_plain_and_unique() {
        let names = plain_column_names(&["entity_id", "Country=<other>", "Country=_other_", "a:b"]);
        assert_eq!(
            names,
            ["entity_id", "Country__other_", "Country__other__2", "a_b"]
        );
    }
}
