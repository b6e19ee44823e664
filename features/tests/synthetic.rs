//! Tests of the synthetic CRM history generator (`features::synthetic`): determinism, the
//! spec it writes, plausible rates, and a ground truth consistent with the data files.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::OnceLock;

use features::DatasetSpec;
use features::spec::ColumnKind;
use features::spec::{CutoffSpec, Task};
use features::synthetic::{GeneratedDataset, GeneratorParams, Segments, SyntheticKind};
use polars::prelude::{DataFrame, DataType, ParquetReader, SerReader};
use tempfile::TempDir;

const DAY_MS: i64 = 86_400_000;

fn small_params(kind: SyntheticKind) -> GeneratorParams {
    GeneratorParams {
        kind,
        entities: 2_000,
        seed: 7,
        chunk_size: 500,
        ..GeneratorParams::default()
    }
}

/// A generated dataset kept for the whole test binary (generation is the slow part).
struct Generated {
    _dir: TempDir,
    dataset: GeneratedDataset,
    dir: std::path::PathBuf,
}

fn generate(params: &GeneratorParams) -> Generated {
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = dir.path().join("out");
    let dataset = params.generate(&path).expect("generation succeeds");
    Generated {
        _dir: dir,
        dataset,
        dir: path,
    }
}

fn leads() -> &'static Generated {
    static LEADS: OnceLock<Generated> = OnceLock::new();
    LEADS.get_or_init(|| generate(&small_params(SyntheticKind::Leads)))
}

fn customers() -> &'static Generated {
    static CUSTOMERS: OnceLock<Generated> = OnceLock::new();
    CUSTOMERS.get_or_init(|| generate(&small_params(SyntheticKind::Customers)))
}

fn read(path: &Path) -> DataFrame {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    ParquetReader::new(file)
        .finish()
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn texts(frame: &DataFrame, column: &str) -> Vec<Option<String>> {
    frame
        .column(column)
        .and_then(|c| {
            c.str()
                .map(|s| s.iter().map(|v| v.map(str::to_owned)).collect())
        })
        .unwrap_or_else(|e| panic!("text column {column}: {e}"))
}

fn ids(frame: &DataFrame, column: &str) -> Vec<String> {
    texts(frame, column)
        .into_iter()
        .map(|value| value.unwrap_or_else(|| panic!("null in id column {column}")))
        .collect()
}

fn millis(frame: &DataFrame, column: &str) -> Vec<i64> {
    let series = frame
        .column(column)
        .unwrap_or_else(|e| panic!("column {column}: {e}"));
    assert_eq!(
        series.dtype(),
        &DataType::Datetime(polars::prelude::TimeUnit::Milliseconds, None),
        "{column} is Datetime(ms) without a time zone"
    );
    let physical = series.cast(&DataType::Int64).expect("datetime to int64");
    physical
        .i64()
        .expect("int64")
        .iter()
        .map(|v| v.expect("no null timestamps"))
        .collect()
}

fn floats(frame: &DataFrame, column: &str) -> Vec<Option<f64>> {
    frame
        .column(column)
        .and_then(|c| c.f64().map(|s| s.iter().collect()))
        .unwrap_or_else(|e| panic!("float column {column}: {e}"))
}

fn labels(frame: &DataFrame) -> Vec<u8> {
    frame
        .column("label")
        .and_then(|c| {
            c.u8()
                .map(|s| s.iter().map(|v| v.expect("no null label")).collect())
        })
        .expect("label is UInt8")
}

/// Area under the ROC curve, ties counted half (Mann-Whitney).
fn auc(scores: &[f64], labels: &[u8]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum_positive = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum_positive +=
            order[i..=j].iter().filter(|&&k| labels[k] == 1).count() as f64 * mean_rank;
        i = j + 1;
    }
    let positives = labels.iter().filter(|&&l| l == 1).count() as f64;
    let negatives = labels.len() as f64 - positives;
    (rank_sum_positive - positives * (positives + 1.0) / 2.0) / (positives * negatives)
}

fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("list output")
        .map(|entry| {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&path).expect("read output file"))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn same_params_give_identical_files_whatever_the_thread_count() {
    for kind in [SyntheticKind::Leads, SyntheticKind::Customers] {
        let params = GeneratorParams {
            entities: 1_200,
            chunk_size: 300,
            ..small_params(kind)
        };
        let dir = tempfile::tempdir().expect("temporary folder");
        let single = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("pool");
        let quad = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .expect("pool");
        let first = single
            .install(|| params.generate(&dir.path().join("a")))
            .expect("first run");
        let second = quad
            .install(|| params.generate(&dir.path().join("b")))
            .expect("second run");
        assert_eq!(first.events, second.events);
        let (a, b) = (
            files_of(&dir.path().join("a")),
            files_of(&dir.path().join("b")),
        );
        assert_eq!(
            a.len(),
            5,
            "four Parquet files and the spec, nothing left over: {:?}",
            a.iter().map(|f| &f.0).collect::<Vec<_>>()
        );
        assert_eq!(
            a.iter().map(|f| &f.0).collect::<Vec<_>>(),
            b.iter().map(|f| &f.0).collect::<Vec<_>>()
        );
        for ((name, bytes_a), (_, bytes_b)) in a.iter().zip(&b) {
            assert!(bytes_a == bytes_b, "{kind:?}: {name} differs between runs");
        }

        // Another seed gives other data (the same ground-truth model, other entities).
        let other = GeneratorParams {
            seed: params.seed + 1,
            ..params.clone()
        };
        other.generate(&dir.path().join("c")).expect("third run");
        let events_a = std::fs::read(dir.path().join("a/events.parquet")).expect("events a");
        let events_c = std::fs::read(dir.path().join("c/events.parquet")).expect("events c");
        assert!(
            events_a != events_c,
            "{kind:?}: another seed gives other events"
        );
    }
}

#[test]
fn regenerating_into_the_same_folder_replaces_the_files() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let params = GeneratorParams {
        entities: 300,
        ..small_params(SyntheticKind::Leads)
    };
    params.generate(dir.path()).expect("first run");
    let bigger = GeneratorParams {
        entities: 400,
        ..params
    };
    let dataset = bigger.generate(dir.path()).expect("second run");
    let leads = read(&dir.path().join("leads.parquet"));
    assert_eq!(leads.height(), 400);
    assert_eq!(dataset.entities, 400);
    assert_eq!(files_of(dir.path()).len(), 5);
}

#[test]
fn spec_parses_and_describes_the_files() {
    for generated in [leads(), customers()] {
        let spec = DatasetSpec::from_file(&generated.dataset.spec_path).expect("spec parses");
        let entities = spec.entities.as_ref().expect("[entities]");
        let events = spec.events.as_ref().expect("[events]");
        let outcomes = spec.outcomes.as_ref().expect("[outcomes]");
        let label = spec.label.as_ref().expect("[label]");
        assert_eq!(label.horizon_days, 30);
        let expected: Vec<String> = generated
            .dataset
            .cutoffs
            .iter()
            .map(|d| d.format("%Y-%m-%d").to_string())
            .collect();
        assert_eq!(label.cutoffs, CutoffSpec::Dates(expected));
        // 2025-01-01 + 30k while the 30-day window ends by day 365: k = 1..=11.
        assert_eq!(generated.dataset.cutoffs.len(), 11);
        assert_eq!(generated.dataset.cutoffs[0].to_string(), "2025-01-31");
        assert_eq!(generated.dataset.cutoffs[10].to_string(), "2025-11-27");

        let entity_frame = read(&spec.resolve(entities.path.as_ref().expect("entities path")));
        let event_frame = read(&spec.resolve(&events.path));
        let outcome_frame = read(&spec.resolve(&outcomes.path));
        assert_eq!(entity_frame.height(), generated.dataset.entities);
        assert_eq!(event_frame.height(), generated.dataset.events);
        assert_eq!(outcome_frame.height(), generated.dataset.outcomes);
        for column in entities.columns.keys() {
            assert!(
                entity_frame.column(column).is_ok(),
                "profile column {column} exists"
            );
        }
        let id = &entities.id;
        assert!(entity_frame.column(id).is_ok());
        millis(
            &entity_frame,
            entities.created_at.as_deref().expect("created_at"),
        );
        assert_eq!(&events.entity_id, id);
        millis(&event_frame, &events.timestamp);
        texts(
            &event_frame,
            events.event_type.as_deref().expect("event_type column"),
        );
        texts(
            &event_frame,
            events.channel.as_deref().expect("channel column"),
        );
        floats(&event_frame, events.value.as_deref().expect("value column"));
        millis(&outcome_frame, &outcomes.timestamp);
        match spec.task {
            Task::Propensity => assert_eq!(id, "lead_id"),
            Task::Churn => assert_eq!(id, "customer_id"),
        }
    }
}

#[test]
fn lead_profiles_have_skew_rare_levels_and_missing_values() {
    let leads = read(&leads().dir.join("leads.parquet"));
    let n = leads.height() as f64;
    let lead_ids = ids(&leads, "lead_id");
    assert_eq!(lead_ids[0], "L00000001");
    assert!(
        lead_ids.windows(2).all(|w| w[0] < w[1]),
        "ids unique and in order"
    );
    for column in ["industry", "country", "job_title"] {
        let missing = texts(&leads, column).iter().filter(|v| v.is_none()).count() as f64 / n;
        assert!(
            (0.01..0.06).contains(&missing),
            "{column}: {missing:.3} missing, want about 3 %"
        );
    }
    let bands = texts(&leads, "employee_band");
    let allowed = ["1-10", "11-50", "51-200", "201-1000", "1001-5000", "5000+"];
    assert!(
        bands
            .iter()
            .flatten()
            .all(|b| allowed.contains(&b.as_str()))
    );
    let revenue = floats(&leads, "annual_revenue_musd");
    let missing_revenue = revenue.iter().filter(|v| v.is_none()).count() as f64 / n;
    assert!(
        (0.025..0.08).contains(&missing_revenue),
        "revenue missing {missing_revenue:.3}"
    );
    assert!(revenue.iter().flatten().all(|&r| r > 0.0));

    // Skewed: the most frequent lead source is far more common than the least frequent one.
    let mut counts: HashMap<String, usize> = HashMap::new();
    for source in texts(&leads, "lead_source") {
        *counts
            .entry(source.expect("lead_source is never missing"))
            .or_default() += 1;
    }
    let most = counts.values().max().copied().unwrap_or(0);
    assert!(most as f64 / n > 0.2, "a dominant lead source");
    assert!(counts.len() >= 8);

    // Rare levels (< 0.1 %) need a bigger sample to show up: 20,000 leads.
    let dir = tempfile::tempdir().expect("temporary folder");
    let params = GeneratorParams {
        entities: 20_000,
        chunk_size: 5_000,
        ..small_params(SyntheticKind::Leads)
    };
    params.generate(dir.path()).expect("generation");
    let big = read(&dir.path().join("leads.parquet"));
    let mut rare_levels = 0;
    for column in ["industry", "country", "job_title", "lead_source"] {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for value in texts(&big, column).into_iter().flatten() {
            *counts.entry(value).or_default() += 1;
        }
        rare_levels += counts
            .values()
            .filter(|&&c| (c as f64) < 0.001 * big.height() as f64)
            .count();
    }
    assert!(
        rare_levels >= 4,
        "found {rare_levels} levels rarer than 0.1 %"
    );
}

#[test]
fn lead_event_rates_are_plausible() {
    let generated = leads();
    let events = read(&generated.dir.join("events.parquet"));
    let n = generated.dataset.entities as f64;
    let per_lead = events.height() as f64 / n;
    assert!(
        (12.0..30.0).contains(&per_lead),
        "{per_lead:.1} events per lead, target 20"
    );

    let types = texts(&events, "event_type");
    let count = |name: &str| types.iter().filter(|t| t.as_deref() == Some(name)).count() as f64;
    let allowed = [
        "email_sent",
        "email_open",
        "email_click",
        "web_visit",
        "pricing_page_view",
        "content_download",
        "webinar_registration",
        "webinar_attendance",
        "form_submit",
        "demo_request",
        "sales_call",
        "unsubscribe",
        "bounce",
    ];
    assert!(
        types
            .iter()
            .all(|t| t.as_deref().is_some_and(|t| allowed.contains(&t)))
    );
    for name in allowed {
        assert!(count(name) > 0.0, "some {name} events");
    }
    let open_rate = count("email_open") / count("email_sent");
    assert!(
        (0.15..0.35).contains(&open_rate),
        "open rate {open_rate:.3}"
    );
    let click_rate = count("email_click") / count("email_open");
    assert!(
        (0.06..0.25).contains(&click_rate),
        "clicks per open {click_rate:.3}"
    );
    let demo_share = count("demo_request") / n;
    assert!(
        (0.005..0.15).contains(&demo_share),
        "demo requests per lead {demo_share:.3}"
    );
    assert!(
        count("sales_call") > count("demo_request") * 0.5,
        "sales calls follow demos"
    );
    assert!(count("web_visit") / n > 2.0, "web visits per lead");

    // Web visits come in bursts: many follow another visit of the lead within 6 hours, far
    // more than a Poisson process of the same rate would give.
    let lead_ids = ids(&events, "lead_id");
    let ts = millis(&events, "ts");
    let (mut visits, mut close) = (0, 0);
    let mut last_visit: Option<(usize, i64)> = None;
    for i in 0..types.len() {
        if types[i].as_deref() != Some("web_visit") {
            continue;
        }
        if let Some((j, t)) = last_visit
            && lead_ids[j] == lead_ids[i]
            && ts[i] - t < DAY_MS / 4
        {
            close += 1;
        }
        visits += 1;
        last_visit = Some((i, ts[i]));
    }
    assert!(
        close as f64 / visits as f64 > 0.2,
        "bursty visits: {close} of {visits} within 6 h"
    );

    // Values: seconds on page for visits, minutes for calls, none for emails.
    let values = floats(&events, "value");
    let channels = texts(&events, "channel");
    for i in 0..types.len() {
        match types[i].as_deref() {
            Some("web_visit") => assert!(values[i].is_some_and(|v| (1.0..=3600.0).contains(&v))),
            Some("sales_call") => assert!(values[i].is_some_and(|v| (1.0..=120.0).contains(&v))),
            Some("email_sent" | "email_open" | "email_click") => {
                assert!(values[i].is_none());
                assert_eq!(channels[i].as_deref(), Some("email"));
            }
            _ => {}
        }
    }

    // Unsubscribes and bounces stop emails.
    let mut stopped: HashMap<&str, i64> = HashMap::new();
    for i in 0..types.len() {
        if matches!(types[i].as_deref(), Some("unsubscribe" | "bounce")) {
            stopped.entry(lead_ids[i].as_str()).or_insert(ts[i]);
        }
    }
    for i in 0..types.len() {
        if types[i].as_deref() == Some("email_sent")
            && let Some(&stop) = stopped.get(lead_ids[i].as_str())
        {
            assert!(
                ts[i] <= stop,
                "{} was emailed after unsubscribing or bouncing",
                lead_ids[i]
            );
        }
    }
}

/// Checks the truth file against the entities, events and outcomes; returns (label mean,
/// mean probability, AUC, outcome share).
fn check_truth(
    generated: &Generated,
    entities_file: &str,
    id: &str,
    outcomes_file: &str,
    outcome_column: &str,
) -> (f64, f64, f64, f64) {
    let entities = read(&generated.dir.join(entities_file));
    let events = read(&generated.dir.join("events.parquet"));
    let outcomes = read(&generated.dir.join(outcomes_file));
    let truth = read(&generated.dir.join("truth.parquet"));
    assert_eq!(truth.height(), generated.dataset.truth_rows);

    let created: HashMap<String, i64> = ids(&entities, id)
        .into_iter()
        .zip(millis(&entities, "created_at"))
        .collect();
    let outcome: HashMap<String, i64> = ids(&outcomes, id)
        .into_iter()
        .zip(millis(&outcomes, outcome_column))
        .collect();
    assert_eq!(
        outcome.len(),
        outcomes.height(),
        "at most one outcome per entity"
    );
    let horizon = 30 * DAY_MS;
    let cutoffs: Vec<i64> = generated
        .dataset
        .cutoffs
        .iter()
        .map(|d| {
            d.and_hms_opt(0, 0, 0)
                .expect("midnight")
                .and_utc()
                .timestamp_millis()
        })
        .collect();

    // Events: after creation, before the outcome, in time order within an entity.
    let event_ids = ids(&events, id);
    let event_ts = millis(&events, "ts");
    for i in 0..event_ids.len() {
        let owner = &event_ids[i];
        let created_at = *created
            .get(owner)
            .unwrap_or_else(|| panic!("event of unknown {owner}"));
        assert!(event_ts[i] >= created_at, "{owner}: event before creation");
        if let Some(&outcome_at) = outcome.get(owner) {
            assert!(
                event_ts[i] < outcome_at,
                "{owner}: event at or after its outcome"
            );
        }
        if i > 0 && event_ids[i - 1] == *owner {
            assert!(
                event_ts[i - 1] <= event_ts[i],
                "{owner}: events out of order"
            );
        }
    }
    for (owner, &outcome_at) in &outcome {
        assert!(
            outcome_at >= created[owner],
            "{owner}: outcome before creation"
        );
        assert!(
            cutoffs
                .iter()
                .any(|&c| c <= outcome_at && outcome_at < c + horizon),
            "{owner}: outcome outside every label window"
        );
    }

    // Truth rows: exactly the (entity, cutoff) pairs at risk, labelled by the outcome file.
    let truth_ids = ids(&truth, id);
    let truth_cutoffs = millis(&truth, "cutoff");
    let probabilities: Vec<f64> = floats(&truth, "true_probability")
        .into_iter()
        .map(|p| p.expect("probability"))
        .collect();
    let truth_labels = labels(&truth);
    let mut expected_rows = 0;
    for (owner, &created_at) in &created {
        for &cutoff in &cutoffs {
            let at_risk = created_at < cutoff && outcome.get(owner).is_none_or(|&o| o >= cutoff);
            expected_rows += usize::from(at_risk);
        }
    }
    assert_eq!(
        truth.height(),
        expected_rows,
        "one truth row per entity at risk per cutoff"
    );
    for i in 0..truth.height() {
        let owner = &truth_ids[i];
        let cutoff = truth_cutoffs[i];
        assert!(cutoffs.contains(&cutoff));
        assert!(
            created[owner] < cutoff,
            "{owner}: truth row before creation"
        );
        let positive = outcome
            .get(owner)
            .is_some_and(|&o| cutoff <= o && o < cutoff + horizon);
        assert_eq!(
            truth_labels[i] == 1,
            positive,
            "{owner} at {cutoff}: label matches the outcome file"
        );
        assert!(probabilities[i] > 0.0 && probabilities[i] < 1.0);
    }

    let rows = truth.height() as f64;
    let label_mean = truth_labels.iter().map(|&l| f64::from(l)).sum::<f64>() / rows;
    let probability_mean = probabilities.iter().sum::<f64>() / rows;
    // The labels are independent Bernoulli(p) draws given the truth: their sum has variance
    // sum p(1-p). Allow four standard deviations.
    let standard_error = probabilities
        .iter()
        .map(|p| p * (1.0 - p))
        .sum::<f64>()
        .sqrt()
        / rows;
    assert!(
        (label_mean - probability_mean).abs() < 4.0 * standard_error,
        "label mean {label_mean:.4} vs mean probability {probability_mean:.4} (se {standard_error:.4})"
    );
    let outcome_share = outcome.len() as f64 / created.len() as f64;
    (
        label_mean,
        probability_mean,
        auc(&probabilities, &truth_labels),
        outcome_share,
    )
}

#[test]
fn lead_truth_is_consistent_and_informative() {
    let (label_mean, probability_mean, area, conversion_share) = check_truth(
        leads(),
        "leads.parquet",
        "lead_id",
        "conversions.parquet",
        "converted_at",
    );
    assert!(
        (0.015..0.05).contains(&probability_mean),
        "window conversion rate {probability_mean:.4}"
    );
    assert!((0.01..0.06).contains(&label_mean));
    assert!(
        (0.08..0.20).contains(&conversion_share),
        "leads converting {conversion_share:.3}"
    );
    assert!(
        area > 0.75 && area < 0.99,
        "AUC of the true probability {area:.3}"
    );
}

#[test]
fn customer_truth_is_consistent_and_informative() {
    let (label_mean, probability_mean, area, churn_share) = check_truth(
        customers(),
        "customers.parquet",
        "customer_id",
        "churn.parquet",
        "churned_at",
    );
    assert!(
        (0.01..0.04).contains(&probability_mean),
        "window churn rate {probability_mean:.4}"
    );
    assert!((0.005..0.05).contains(&label_mean));
    assert!(
        (0.05..0.30).contains(&churn_share),
        "customers churning {churn_share:.3}"
    );
    assert!(
        area > 0.75 && area < 0.99,
        "AUC of the true probability {area:.3}"
    );
}

#[test]
fn customer_histories_are_plausible() {
    let generated = customers();
    let customers = read(&generated.dir.join("customers.parquet"));
    let events = read(&generated.dir.join("events.parquet"));
    let n = customers.height() as f64;
    let plans = texts(&customers, "plan");
    let starter = plans
        .iter()
        .filter(|p| p.as_deref() == Some("starter"))
        .count() as f64
        / n;
    assert!((0.45..0.7).contains(&starter), "starter share {starter:.3}");
    assert!(
        plans
            .iter()
            .all(|p| matches!(p.as_deref(), Some("starter" | "pro" | "enterprise")))
    );
    let seats = customers
        .column("seats")
        .and_then(|c| c.i64().map(|s| s.iter().collect::<Vec<_>>()))
        .expect("seats");
    assert!(seats.iter().all(|s| s.is_some_and(|s| s >= 1)));
    let fees = floats(&customers, "monthly_fee");
    assert!(fees.iter().all(|f| f.is_some_and(|f| f > 0.0)));

    let per_customer = events.height() as f64 / n;
    assert!(
        (12.0..40.0).contains(&per_customer),
        "{per_customer:.1} events per customer"
    );
    let types = texts(&events, "event_type");
    let values = floats(&events, "value");
    let count = |name: &str| types.iter().filter(|t| t.as_deref() == Some(name)).count() as f64;
    for name in [
        "login",
        "feature_use",
        "support_ticket",
        "ticket_resolved",
        "billing_paid",
        "billing_failed",
        "plan_upgrade",
        "plan_downgrade",
        "seat_removed",
    ] {
        assert!(count(name) > 0.0, "some {name} events");
    }
    // Roughly monthly billing over the ~9 months a customer is observed on average.
    let billing_per_customer = (count("billing_paid") + count("billing_failed")) / n;
    assert!(
        (4.0..12.0).contains(&billing_per_customer),
        "{billing_per_customer:.2} billing events per customer"
    );
    let failed_share = count("billing_failed") / (count("billing_paid") + count("billing_failed"));
    assert!(
        (0.01..0.15).contains(&failed_share),
        "failed billing share {failed_share:.3}"
    );
    assert!(
        count("ticket_resolved") < count("support_ticket"),
        "some tickets stay open"
    );
    for i in 0..types.len() {
        match types[i].as_deref() {
            Some("support_ticket") => assert!(matches!(values[i], Some(1.0 | 2.0 | 3.0))),
            Some("billing_paid" | "billing_failed") => assert!(values[i].is_some_and(|v| v > 0.0)),
            _ => {}
        }
    }
}

#[test]
fn truth_depends_on_engagement() {
    // Leads with more events before a cutoff get a higher true probability on average.
    let generated = leads();
    let events = read(&generated.dir.join("events.parquet"));
    let truth = read(&generated.dir.join("truth.parquet"));
    let mut event_times: HashMap<String, Vec<i64>> = HashMap::new();
    for (owner, ts) in ids(&events, "lead_id")
        .into_iter()
        .zip(millis(&events, "ts"))
    {
        event_times.entry(owner).or_default().push(ts);
    }
    let probabilities = floats(&truth, "true_probability");
    let (mut quiet, mut busy) = (Vec::new(), Vec::new());
    for ((owner, cutoff), p) in ids(&truth, "lead_id")
        .into_iter()
        .zip(millis(&truth, "cutoff"))
        .zip(probabilities)
    {
        let recent = event_times.get(&owner).map_or(0, |times| {
            times
                .iter()
                .filter(|&&t| t < cutoff && t >= cutoff - 30 * DAY_MS)
                .count()
        });
        let p = p.expect("probability");
        if recent == 0 {
            quiet.push(p)
        } else if recent >= 10 {
            busy.push(p)
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(!quiet.is_empty() && !busy.is_empty());
    assert!(
        mean(&busy) > 2.0 * mean(&quiet),
        "busy {:.4} vs quiet {:.4}",
        mean(&busy),
        mean(&quiet)
    );
}

#[test]
fn check_rejects_bad_parameters() {
    let good = GeneratorParams::default();
    assert!(good.check().is_ok());
    let bad = [
        GeneratorParams {
            entities: 0,
            ..good.clone()
        },
        GeneratorParams {
            horizon_days: 0,
            ..good.clone()
        },
        GeneratorParams {
            span_days: 50,
            horizon_days: 30,
            ..good.clone()
        },
        GeneratorParams {
            events_per_entity: f64::NAN,
            ..good.clone()
        },
        GeneratorParams {
            events_per_entity: 0.0,
            ..good.clone()
        },
        GeneratorParams {
            chunk_size: 0,
            ..good.clone()
        },
        GeneratorParams {
            start: chrono::NaiveDate::MAX,
            ..good.clone()
        },
    ];
    for params in bad {
        let error = params.check().expect_err("rejected");
        assert!(matches!(error, features::DataError::Invalid(_)), "{error}");
        let dir = tempfile::tempdir().expect("temporary folder");
        assert!(
            params.generate(dir.path()).is_err(),
            "generate checks first"
        );
        assert_eq!(
            files_of(dir.path()).len(),
            0,
            "nothing written for bad parameters"
        );
    }
}

#[test]
fn unwritable_folder_is_an_io_error() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"not a folder").expect("write");
    let params = GeneratorParams {
        entities: 10,
        ..small_params(SyntheticKind::Leads)
    };
    let error = params
        .generate(&blocker.join("out"))
        .expect_err("cannot create a folder in a file");
    assert!(matches!(error, features::DataError::Io { .. }), "{error}");
}

fn params(segments: Segments, entities: usize) -> GeneratorParams {
    GeneratorParams {
        entities,
        seed: 7,
        chunk_size: 500,
        segments,
        ..GeneratorParams::default()
    }
}

#[test]
fn no_segments_keep_the_earlier_history() {
    let fingerprints = [
        (
            SyntheticKind::Leads,
            "intercept = -4.960940, rate_scale = 0.607917 (pilot: 20.44 events per entity, \
             0.0250 mean probability per window)",
        ),
        (
            SyntheticKind::Customers,
            "intercept = -7.398112, rate_scale = 0.027017 (pilot: 30.01 events per entity, \
             0.0200 mean probability per window)",
        ),
    ];
    for (kind, fingerprint) in fingerprints {
        let dir = tempfile::tempdir().expect("temporary folder");
        let generated = GeneratorParams {
            kind,
            ..params(Segments::None, 200)
        }
        .generate(dir.path())
        .expect("generation");
        let spec = std::fs::read_to_string(&generated.spec_path).expect("spec");
        assert!(
            spec.contains(fingerprint),
            "{kind:?}: the ground truth changed:\n{spec}"
        );
        assert!(!spec.contains("segment"), "{kind:?}:\n{spec}");
        let files = match kind {
            SyntheticKind::Leads => ["leads.parquet", "truth.parquet"],
            SyntheticKind::Customers => ["customers.parquet", "truth.parquet"],
        };
        for file in files {
            let frame = read(&dir.path().join(file));
            assert!(frame.column("segment").is_err(), "{kind:?}: {file}");
        }
        assert_eq!(read(&dir.path().join("truth.parquet")).width(), 4);
    }
}

#[test]
fn differ_leads_carry_a_declared_segment_that_the_truth_follows() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let generated = params(Segments::Differ, 2_000)
        .generate(dir.path())
        .expect("generation");
    let spec_text = std::fs::read_to_string(&generated.spec_path).expect("spec");
    assert!(
        spec_text.contains(
            "# segments = differ: enterprise and smb leads convert for different reasons"
        ),
        "{spec_text}"
    );
    assert!(spec_text.contains("(smb)") && spec_text.contains("(enterprise)"));
    let spec = DatasetSpec::from_file(&generated.spec_path).expect("spec parses");
    let entities = spec.entities.as_ref().expect("[entities]");
    assert_eq!(
        entities.columns.get("segment"),
        Some(&ColumnKind::Categorical)
    );
    assert_eq!(entities.columns.len(), 8);

    let leads = read(&dir.path().join("leads.parquet"));
    let last_column = leads.get_column_names().last().map(|name| name.to_string());
    assert_eq!(last_column.as_deref(), Some("segment"));
    let segments = texts(&leads, "segment");
    let count = |level: &str| {
        segments
            .iter()
            .filter(|segment| segment.as_deref() == Some(level))
            .count()
    };
    let (enterprise, smb) = (count("enterprise"), count("smb"));
    assert_eq!(enterprise + smb, leads.height(), "every lead has a segment");
    let share = enterprise as f64 / leads.height() as f64;
    assert!(
        (0.36..0.44).contains(&share),
        "enterprise share {share:.3}, want about 40 %"
    );

    // Each truth row names its lead's segment.
    let segment_of: HashMap<String, String> = texts(&leads, "lead_id")
        .into_iter()
        .zip(segments)
        .filter_map(|(id, segment)| Some((id?, segment?)))
        .collect();
    let truth = read(&dir.path().join("truth.parquet"));
    let truth_segments = texts(&truth, "segment");
    for (id, segment) in texts(&truth, "lead_id").iter().zip(&truth_segments) {
        let id = id.as_deref().expect("truth row with an id");
        assert_eq!(
            segment.as_deref(),
            segment_of.get(id).map(String::as_str),
            "{id}"
        );
    }
    // Each segment converts at about the calibrated rate, and its true probability
    // predicts its labels well.
    let probabilities: Vec<f64> = floats(&truth, "true_probability")
        .into_iter()
        .map(|p| p.expect("a true probability"))
        .collect();
    let truth_labels = labels(&truth);
    for level in ["enterprise", "smb"] {
        let rows: Vec<usize> = (0..truth.height())
            .filter(|&row| truth_segments[row].as_deref() == Some(level))
            .collect();
        let p: Vec<f64> = rows.iter().map(|&row| probabilities[row]).collect();
        let l: Vec<u8> = rows.iter().map(|&row| truth_labels[row]).collect();
        let mean = p.iter().sum::<f64>() / p.len() as f64;
        assert!(
            (0.012..0.05).contains(&mean),
            "{level}: mean true probability {mean:.4} per window"
        );
        let area = auc(&p, &l);
        assert!(
            (0.75..0.97).contains(&area),
            "{level}: AUC of the true probability {area:.3}"
        );
    }
}

/// The segment is drawn after everything else: with `Alike`, the same parameters give the
/// files of `None` plus the `segment` column (and the spec two more lines).
#[test]
fn alike_is_none_plus_the_segment_column() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let (none, alike) = (dir.path().join("none"), dir.path().join("alike"));
    let without = params(Segments::None, 600)
        .generate(&none)
        .expect("no segments");
    let with = params(Segments::Alike, 600)
        .generate(&alike)
        .expect("alike segments");
    assert_eq!(without.events, with.events);
    assert_eq!(without.outcomes, with.outcomes);
    for file in ["events.parquet", "conversions.parquet"] {
        assert!(
            read(&none.join(file)).equals_missing(&read(&alike.join(file))),
            "{file} differs"
        );
    }
    for file in ["leads.parquet", "truth.parquet"] {
        let frame = read(&alike.join(file));
        let levels = texts(&frame, "segment");
        for level in ["enterprise", "smb"] {
            assert!(levels.iter().any(|l| l.as_deref() == Some(level)), "{file}");
        }
        assert!(
            levels.iter().all(Option::is_some),
            "{file}: a missing segment"
        );
        let dropped = frame
            .drop("segment")
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            read(&none.join(file)).equals_missing(&dropped),
            "{file} differs beyond its segment column"
        );
    }
    let spec_without = std::fs::read_to_string(&without.spec_path).expect("spec");
    let spec_with = std::fs::read_to_string(&with.spec_path).expect("spec");
    assert!(spec_with.contains("# segments = alike"), "{spec_with}");
    assert!(
        spec_with.contains("\nsegment = \"categorical\"\n"),
        "{spec_with}"
    );
    let other_lines: Vec<&str> = spec_with
        .lines()
        .filter(|line| !line.starts_with("# segments = ") && *line != "segment = \"categorical\"")
        .collect();
    assert_eq!(other_lines, spec_without.lines().collect::<Vec<_>>());
}
