//! The feature builder's guarantees on generator data: leakage safety, online/offline
//! parity, signal against the generator's ground truth, and hand-computed values.

use std::collections::HashMap;
use std::path::Path;

use features::builder::{Cutoffs, FeatureTable, build_features, fit_plan, resolve_cutoffs};
use features::history::DAY_MS;
use features::load::{
    CHANNEL, CREATED_AT, ENTITY_ID, EVENT_TYPE, LoadedDataset, TS, VALUE, load_dataset,
};
use features::plan::{FeaturePlanParams, PlanInputs, ProfileInput, RECENCY_CAP_DAYS};
use features::spec::{ColumnKind, FeatureOptions, Form};
use features::synthetic::{GeneratorParams, SyntheticKind};
use features::{DatasetSpec, EntityHistory, Event, FeaturePlan, ProfileValue};
use polars::prelude::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Rows checked for parity and leakage in each test.
const SAMPLED_ROWS: usize = 300;
/// How far a quick logistic regression may fall behind the ground truth's AUC.
const SIGNAL_AUC_TOLERANCE: f64 = 0.05;

fn generate(dir: &Path, kind: SyntheticKind, entities: usize, seed: u64) -> LoadedDataset {
    let params = GeneratorParams {
        kind,
        entities,
        seed,
        ..GeneratorParams::default()
    };
    let generated = params.generate(dir).expect("generator runs");
    let spec = DatasetSpec::from_file(&generated.spec_path).expect("generated spec parses");
    load_dataset(&spec).expect("generated data loads")
}

fn build(data: &LoadedDataset) -> (FeaturePlan, Cutoffs, FeatureTable) {
    let cutoffs = resolve_cutoffs(data).expect("cutoffs");
    let plan = fit_plan(data, None).expect("plan fits");
    let table = build_features(data, &plan, &cutoffs).expect("features build");
    (plan, cutoffs, table)
}

/// All events of the dataset as owned rows, by entity.
fn events_by_entity(data: &LoadedDataset) -> HashMap<String, Vec<Event>> {
    let events = data.events.as_ref().expect("event form");
    let ids = events.column(ENTITY_ID).unwrap().str().unwrap();
    let ts = events.column(TS).unwrap().i64().unwrap();
    let types = events.column(EVENT_TYPE).unwrap().str().unwrap();
    let channels = events.column(CHANNEL).unwrap().str().unwrap();
    let values = events.column(VALUE).unwrap().f64().unwrap();
    let mut out: HashMap<String, Vec<Event>> = HashMap::new();
    for i in 0..events.height() {
        out.entry(ids.get(i).unwrap().to_string())
            .or_default()
            .push(Event {
                ts_ms: ts.get(i).unwrap(),
                event_type: types.get(i).unwrap().to_string(),
                channel: channels.get(i).map(str::to_string),
                value: values.get(i),
            });
    }
    out
}

fn events_frame(by_entity: &HashMap<String, Vec<Event>>) -> DataFrame {
    let mut keys: Vec<&String> = by_entity.keys().collect();
    keys.sort();
    let (mut ids, mut ts, mut types, mut channels, mut values) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for id in keys {
        for e in &by_entity[id] {
            ids.push(id.clone());
            ts.push(e.ts_ms);
            types.push(e.event_type.clone());
            channels.push(e.channel.clone());
            values.push(e.value);
        }
    }
    df!(ENTITY_ID => ids, TS => ts, EVENT_TYPE => types, CHANNEL => channels, VALUE => values)
        .unwrap()
}

/// The history the server would receive for `entity`: its profile and every event it has,
/// including those after the cutoff, in shuffled order.
fn serving_history(
    data: &LoadedDataset,
    plan: &FeaturePlan,
    events: &HashMap<String, Vec<Event>>,
    entity: &str,
    rng: &mut StdRng,
) -> EntityHistory {
    let ids = data.entities.column(ENTITY_ID).unwrap().str().unwrap();
    let row = (0..ids.len())
        .find(|&i| ids.get(i) == Some(entity))
        .expect("entity exists");
    let created = data.entities.column(CREATED_AT).unwrap().i64().unwrap();
    let profile = plan
        .profile_fields()
        .iter()
        .map(|field| {
            let column = data.entities.column(&field.name).unwrap();
            match column.dtype() {
                DataType::String => column
                    .str()
                    .unwrap()
                    .get(row)
                    .map_or(ProfileValue::Missing, |s| ProfileValue::Text(s.to_string())),
                _ => column
                    .cast(&DataType::Float64)
                    .unwrap()
                    .f64()
                    .unwrap()
                    .get(row)
                    .map_or(ProfileValue::Missing, ProfileValue::Number),
            }
        })
        .collect();
    let mut history = events.get(entity).cloned().unwrap_or_default();
    history.shuffle(rng);
    EntityHistory {
        created_at_ms: created.get(row).unwrap(),
        profile,
        events: history,
    }
}

fn sample_rows(table: &FeatureTable, rng: &mut StdRng) -> Vec<usize> {
    let mut rows: Vec<usize> = (0..table.n_rows()).collect();
    rows.shuffle(rng);
    rows.truncate(SAMPLED_ROWS);
    rows
}

fn assert_same_bits(expected: &[f32], got: &[f32], names: &[String], context: &str) {
    for ((e, g), name) in expected.iter().zip(got).zip(names) {
        assert_eq!(
            e.to_bits(),
            g.to_bits(),
            "{context}: feature `{name}`: {e} vs {g}"
        );
    }
}

#[test]
fn serving_features_equal_batch_rows_bit_for_bit() {
    for (kind, seed) in [(SyntheticKind::Leads, 7), (SyntheticKind::Customers, 8)] {
        let dir = tempfile::tempdir().unwrap();
        let data = generate(dir.path(), kind, 1_500, seed);
        let (plan, _, table) = build(&data);
        assert!(table.n_rows() > 1_000, "{} rows only", table.n_rows());
        let events = events_by_entity(&data);
        let mut rng = StdRng::seed_from_u64(seed);
        for i in sample_rows(&table, &mut rng) {
            let entity = &table.entity_ids[i];
            let history = serving_history(&data, &plan, &events, entity, &mut rng);
            let online = plan.compute(&history, table.cutoffs_ms[i]).unwrap();
            assert_same_bits(
                table.row(i),
                &online,
                plan.feature_names(),
                &format!("entity {entity} at cutoff {}", table.cutoffs_ms[i]),
            );
        }
    }
}

#[test]
fn events_at_or_after_the_cutoff_never_change_features() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(dir.path(), SyntheticKind::Leads, 1_500, 11);
    let (plan, cutoffs, table) = build(&data);
    let mut rng = StdRng::seed_from_u64(11);
    let mut events = events_by_entity(&data);
    let event_types = &plan.data().event_types;
    let channels = &plan.data().channels;

    // For each sampled row, tamper with its entity's events at and after its cutoff only.
    let mut tampered: HashMap<String, i64> = HashMap::new();
    for i in sample_rows(&table, &mut rng) {
        let entity = table.entity_ids[i].clone();
        let cutoff = table.cutoffs_ms[i];
        let bound = tampered.entry(entity.clone()).or_insert(cutoff);
        *bound = (*bound).min(cutoff);
        let bound = *bound;
        let list = events.entry(entity).or_default();
        for event in list.iter_mut().filter(|e| e.ts_ms >= bound) {
            event.event_type = event_types[rng.random_range(0..event_types.len())].clone();
            event.value = Some(rng.random_range(0.0..1e4));
            event.ts_ms += rng.random_range(0..DAY_MS);
        }
        for offset in [0, 1, DAY_MS / 2, 40 * DAY_MS] {
            list.push(Event {
                ts_ms: bound + offset,
                event_type: event_types[rng.random_range(0..event_types.len())].clone(),
                channel: Some(channels[rng.random_range(0..channels.len())].clone()),
                value: Some(123.0),
            });
        }
    }
    let changed = LoadedDataset {
        events: Some(events_frame(&events)),
        ..data.clone()
    };
    let rebuilt = build_features(&changed, &plan, &cutoffs).unwrap();

    let index: HashMap<(&str, i64), usize> = (0..rebuilt.n_rows())
        .map(|i| ((rebuilt.entity_ids[i].as_str(), rebuilt.cutoffs_ms[i]), i))
        .collect();
    let mut compared = 0;
    for i in 0..table.n_rows() {
        let entity = table.entity_ids[i].as_str();
        let Some(bound) = tampered.get(entity) else {
            continue;
        };
        if table.cutoffs_ms[i] > *bound {
            continue;
        }
        let j = index[&(entity, table.cutoffs_ms[i])];
        assert_same_bits(table.row(i), rebuilt.row(j), plan.feature_names(), entity);
        compared += 1;
    }
    assert!(
        compared >= SAMPLED_ROWS / 2,
        "only {compared} rows compared"
    );

    // The tampering is visible to rows at later cutoffs, or the test proves nothing.
    let later_changed = (0..table.n_rows()).any(|i| {
        let entity = table.entity_ids[i].as_str();
        tampered
            .get(entity)
            .is_some_and(|b| table.cutoffs_ms[i] > *b)
            && index
                .get(&(entity, table.cutoffs_ms[i]))
                .is_some_and(|&j| table.row(i) != rebuilt.row(j))
    });
    assert!(
        later_changed,
        "tampered events never showed up at later cutoffs"
    );
}

/// ROC AUC by the rank-sum formula, ties sharing their average rank.
fn roc_auc(scores: &[f64], labels: &[u8]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            if labels[k] == 1 {
                rank_sum_pos += average_rank;
            }
        }
        i = j + 1;
    }
    let n_pos = labels.iter().filter(|l| **l == 1).count() as f64;
    let n_neg = labels.len() as f64 - n_pos;
    (rank_sum_pos - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
}

#[test]
fn roc_auc_matches_hand_computed_values() {
    assert_eq!(roc_auc(&[0.1, 0.4, 0.35, 0.8], &[0, 0, 1, 1]), 0.75);
    assert_eq!(roc_auc(&[0.5, 0.5, 0.5, 0.5], &[0, 1, 0, 1]), 0.5);
    assert_eq!(roc_auc(&[0.9, 0.1], &[1, 0]), 1.0);
}

#[test]
fn logistic_regression_on_features_comes_near_the_ground_truth_auc() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(dir.path(), SyntheticKind::Leads, 6_000, 3);
    let Cutoffs::Calendar(cutoffs) = resolve_cutoffs(&data).unwrap() else {
        panic!("generator data has calendar cutoffs");
    };
    let last = *cutoffs.last().unwrap();
    // The plan sees only what was known before the validation cutoff.
    let plan = fit_plan(&data, Some(last)).unwrap();
    let table = build_features(&data, &plan, &Cutoffs::Calendar(cutoffs)).unwrap();
    let n = table.n_features();
    let (train, valid): (Vec<usize>, Vec<usize>) =
        (0..table.n_rows()).partition(|&i| table.cutoffs_ms[i] < last);

    // Standardise on the training rows; missing values become the mean.
    let mut mean = vec![0.0f64; n];
    let mut sd = vec![0.0f64; n];
    let mut count = vec![0usize; n];
    for &i in &train {
        for (j, v) in table.row(i).iter().enumerate() {
            if v.is_finite() {
                mean[j] += f64::from(*v);
                count[j] += 1;
            }
        }
    }
    for j in 0..n {
        mean[j] /= count[j].max(1) as f64;
    }
    for &i in &train {
        for (j, v) in table.row(i).iter().enumerate() {
            if v.is_finite() {
                sd[j] += (f64::from(*v) - mean[j]).powi(2);
            }
        }
    }
    for j in 0..n {
        sd[j] = (sd[j] / count[j].max(1) as f64).sqrt().max(1e-9);
    }
    let matrix = |rows: &[usize]| {
        let mut x = ndarray16::Array2::<f64>::zeros((rows.len(), n));
        for (r, &i) in rows.iter().enumerate() {
            for (j, v) in table.row(i).iter().enumerate() {
                x[[r, j]] = if v.is_finite() {
                    (f64::from(*v) - mean[j]) / sd[j]
                } else {
                    0.0
                };
            }
        }
        x
    };
    let y: ndarray16::Array1<bool> = train.iter().map(|&i| table.labels[i] == 1).collect();
    let dataset = linfa::Dataset::new(matrix(&train), y);
    use linfa::traits::Fit;
    let model = linfa_logistic::LogisticRegression::default()
        .alpha(1.0)
        .max_iterations(200)
        .fit(&dataset)
        .expect("logistic regression fits");
    let probabilities = model.predict_probabilities(&matrix(&valid));
    // linfa-logistic gives P(its positive class), which may be `false`.
    let positive_is_true = model.labels().pos.class;
    let scores: Vec<f64> = probabilities
        .iter()
        .map(|p| if positive_is_true { *p } else { 1.0 - *p })
        .collect();
    let labels: Vec<u8> = valid.iter().map(|&i| table.labels[i]).collect();
    let model_auc = roc_auc(&scores, &labels);

    // The generator's truth for the same (lead, cutoff) rows.
    let truth_file = std::fs::File::open(dir.path().join("truth.parquet")).unwrap();
    let truth = ParquetReader::new(truth_file)
        .finish()
        .unwrap()
        .lazy()
        .select([
            col("lead_id"),
            col("cutoff").cast(DataType::Int64),
            col("true_probability"),
            col("label").cast(DataType::UInt8),
        ])
        .filter(col("cutoff").eq(lit(last)))
        .collect()
        .unwrap();
    let ids = truth.column("lead_id").unwrap().str().unwrap();
    let p = truth.column("true_probability").unwrap().f64().unwrap();
    let truth_labels = truth.column("label").unwrap().u8().unwrap();
    let truth_by_id: HashMap<&str, (f64, u8)> = (0..truth.height())
        .map(|i| {
            (
                ids.get(i).unwrap(),
                (p.get(i).unwrap(), truth_labels.get(i).unwrap()),
            )
        })
        .collect();
    assert_eq!(
        truth_by_id.len(),
        valid.len(),
        "builder and generator disagree on who is at risk"
    );
    let mut truth_scores = Vec::new();
    for (&i, label) in valid.iter().zip(&labels) {
        let (p, truth_label) = truth_by_id[table.entity_ids[i].as_str()];
        assert_eq!(truth_label, *label, "label of {}", table.entity_ids[i]);
        truth_scores.push(p);
    }
    let truth_auc = roc_auc(&truth_scores, &labels);
    println!(
        "validation rows {}, positives {}, model AUC {model_auc:.4}, ground-truth AUC {truth_auc:.4}",
        labels.len(),
        labels.iter().filter(|l| **l == 1).count()
    );
    assert!(
        truth_auc > 0.6 && truth_auc < 0.99,
        "ground truth AUC {truth_auc}"
    );
    assert!(
        model_auc >= truth_auc - SIGNAL_AUC_TOLERANCE,
        "model AUC {model_auc:.4} is more than {SIGNAL_AUC_TOLERANCE} below the ground truth's {truth_auc:.4}"
    );
}

/// A small plan fitted by hand, with values computed by hand.
#[test]
fn kernel_values_match_hand_computation() {
    let options = FeatureOptions {
        windows_days: vec![7, 30],
        half_life_days: 10.0,
        min_level_count: 2,
        max_levels: 5,
        creation_calendar: false,
        whole_history: true,
    };
    let inputs = PlanInputs {
        form: Form::Events,
        profile: vec![
            ProfileInput {
                name: "industry".into(),
                kind: ColumnKind::Categorical,
                level_counts: [("Software".to_string(), 5), ("Retail".to_string(), 1)].into(),
            },
            ProfileInput {
                name: "employees".into(),
                kind: ColumnKind::Numeric,
                level_counts: HashMap::new(),
            },
        ],
        event_types: [
            ("email_open".to_string(), false),
            ("web_visit".to_string(), true),
        ]
        .into(),
        channels: vec!["web".into(), "email".into()],
    };
    let plan = FeaturePlanParams::new(options.clone())
        .fit(&inputs)
        .unwrap();
    let cutoff = 100 * DAY_MS;
    let event = |day: i64, t: &str, c: &str, v: Option<f64>| Event {
        ts_ms: day * DAY_MS,
        event_type: t.into(),
        channel: Some(c.into()),
        value: v,
    };
    let history = EntityHistory {
        created_at_ms: 40 * DAY_MS,
        // Retail is rarer than min_level_count: it becomes `other`.
        profile: vec![
            ProfileValue::Text("Retail".into()),
            ProfileValue::Number(120.0),
        ],
        events: vec![
            event(95, "web_visit", "web", Some(30.0)),
            event(80, "web_visit", "web", Some(12.0)),
            event(90, "email_open", "email", None),
            event(50, "email_open", "email", None),
            event(100, "web_visit", "web", Some(999.0)), // at the cutoff: not seen
            event(99, "webinar", "events", None),        // unknown type: ignored
        ],
    };
    let x = plan.compute(&history, cutoff).unwrap();
    let get = |name: &str| {
        let j = plan.feature_names().iter().position(|n| n == name);
        x[j.unwrap_or_else(|| panic!("no feature {name} in {:?}", plan.feature_names()))]
    };
    assert_eq!(get("industry=Software"), 0.0);
    assert_eq!(get("industry=<other>"), 1.0);
    assert_eq!(get("industry=<missing>"), 0.0);
    assert_eq!(get("employees"), 120.0);
    assert_eq!(get("tenure_days"), 60.0);
    assert_eq!(get("count_web_visit_7d"), 1.0);
    assert_eq!(get("count_web_visit_30d"), 2.0);
    assert_eq!(get("count_email_open_7d"), 0.0);
    assert_eq!(get("count_email_open_30d"), 1.0);
    assert_eq!(get("days_since_last_web_visit"), 5.0);
    assert_eq!(get("days_since_last_email_open"), 10.0);
    assert_eq!(get("value_sum_web_visit_30d"), 42.0);
    let decayed_web = 0.5f64.powf(5.0 / 10.0) + 0.5f64.powf(20.0 / 10.0);
    assert_eq!(get("decayed_web_visit"), decayed_web as f32);
    let decayed_all = decayed_web + 0.5f64.powf(10.0 / 10.0) + 0.5f64.powf(50.0 / 10.0);
    assert!((f64::from(get("decayed_engagement")) - decayed_all).abs() < 1e-6);
    assert_eq!(get("count_channel_web_30d"), 2.0);
    assert_eq!(get("count_channel_email_30d"), 1.0);
    assert_eq!(get("events_total_7d"), 1.0);
    assert_eq!(get("events_total_30d"), 3.0);
    assert_eq!(get("distinct_channels_30d"), 2.0);
    assert_eq!(get("days_since_last_event"), 5.0);
    // 3 events in the last 30 days, 1 in the 60 before: ln(4 / 1.5).
    assert!((f64::from(get("trend_30d_vs_prev_60d")) - (4.0f64 / 1.5).ln()).abs() < 1e-6);

    // The whole history: web visits on days 95 and 80, email opens on days 90 and 50.
    let ln = |x: f64| x.ln() as f32;
    assert_eq!(get("count_web_visit_lifetime"), 2.0);
    assert_eq!(get("active_days_web_visit_lifetime"), 2.0);
    assert_eq!(get("mean_gap_days_web_visit"), 15.0);
    assert_eq!(get("recency_vs_mean_gap_web_visit"), ln(6.0 / 16.0));
    assert_eq!(get("count_email_open_lifetime"), 2.0);
    assert_eq!(get("active_days_email_open_lifetime"), 2.0);
    assert_eq!(get("mean_gap_days_email_open"), 40.0);
    assert_eq!(get("recency_vs_mean_gap_email_open"), ln(11.0 / 41.0));
    assert_eq!(get("value_sum_web_visit_7d"), 30.0);
    assert_eq!(get("value_sum_web_visit_lifetime"), 42.0);
    assert_eq!(get("events_lifetime"), 4.0);
    assert_eq!(get("active_days_7d"), 1.0);
    assert_eq!(get("active_days_30d"), 3.0);
    assert_eq!(get("active_days_lifetime"), 4.0);
    assert_eq!(get("days_since_first_event"), 50.0);
    // Days 50, 80, 90, 95: (95 - 50) / 3 apart on average, 5 the last time.
    assert_eq!(get("mean_gap_days"), 15.0);
    assert_eq!(get("last_gap_days"), 5.0);
    assert_eq!(get("last_gap_vs_mean_gap"), ln(6.0 / 16.0));
    assert_eq!(get("recency_vs_mean_gap"), ln(6.0 / 16.0));

    // Two events on one UTC day are one active day; one active day has no gap (the cap).
    let same_day = EntityHistory {
        events: vec![
            Event {
                ts_ms: 90 * DAY_MS + 1_000,
                ..event(90, "web_visit", "web", Some(1.0))
            },
            event(90, "web_visit", "web", Some(2.0)),
        ],
        ..history.clone()
    };
    let y = plan.compute(&same_day, cutoff).unwrap();
    let at = |name: &str| {
        y[plan
            .feature_names()
            .iter()
            .position(|n| n == name)
            .expect(name)]
    };
    assert_eq!(at("count_web_visit_lifetime"), 2.0);
    assert_eq!(at("active_days_web_visit_lifetime"), 1.0);
    assert_eq!(at("active_days_lifetime"), 1.0);
    assert_eq!(at("mean_gap_days"), RECENCY_CAP_DAYS as f32);
    assert_eq!(at("last_gap_days"), RECENCY_CAP_DAYS as f32);
    // The last event is 10 days less a second before the cutoff.
    let recency = (10 * DAY_MS - 1_000) as f64 / DAY_MS as f64;
    assert_eq!(at("recency_vs_mean_gap"), ln((1.0 + recency) / 366.0));

    // Without the whole history (as every plan written before it), the plan has exactly the
    // other columns, first and with the same bits: the block only appends.
    let classic = FeaturePlanParams::new(FeatureOptions {
        whole_history: false,
        ..options
    })
    .fit(&inputs)
    .unwrap();
    let n = classic.n_features();
    assert_eq!(classic.feature_names(), &plan.feature_names()[..n]);
    assert!(
        plan.feature_names()[n..]
            .iter()
            .all(|name| name.contains("lifetime")
                || name.contains("gap")
                || name.contains("active_days")
                || name.contains("value_sum_")
                || name == "days_since_first_event"),
        "{:?}",
        &plan.feature_names()[n..]
    );
    let old = classic.compute(&history, cutoff).unwrap();
    assert_eq!(
        old.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        x[..n].iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    // Its stored form has no `whole_history` key, and a plan stored without one reads as
    // without the block.
    let classic_json = serde_json::to_string(&classic).unwrap();
    assert!(!classic_json.contains("whole_history"), "{classic_json}");
    let back: FeaturePlan = serde_json::from_str(&classic_json).unwrap();
    assert!(!back.data().whole_history);
    assert_eq!(back.n_features(), n);

    // No events at all: counts are zero and recency is capped.
    let empty = EntityHistory {
        events: Vec::new(),
        ..history.clone()
    };
    let x = plan.compute(&empty, cutoff).unwrap();
    let j = plan
        .feature_names()
        .iter()
        .position(|n| n == "days_since_last_event")
        .unwrap();
    assert_eq!(x[j], RECENCY_CAP_DAYS as f32);

    // A plan survives a JSON round trip with the same feature order and values.
    let json = serde_json::to_string(&plan).unwrap();
    let back: FeaturePlan = serde_json::from_str(&json).unwrap();
    assert_eq!(back.feature_names(), plan.feature_names());
    assert_eq!(
        back.compute(&history, cutoff).unwrap(),
        plan.compute(&history, cutoff).unwrap()
    );
    // A tampered feature list is refused.
    let tampered = json.replacen("count_web_visit_7d", "count_web_visit_8d", 1);
    assert!(serde_json::from_str::<FeaturePlan>(&tampered).is_err());
}

fn categorical_input(name: &str, levels: &[(&str, usize)]) -> ProfileInput {
    ProfileInput {
        name: name.into(),
        kind: ColumnKind::Categorical,
        level_counts: levels.iter().map(|(l, n)| (l.to_string(), *n)).collect(),
    }
}

/// Olist's `origin` has a real level `other`: it must not collide with the grouped levels.
#[test]
fn a_level_named_other_keeps_its_own_feature() {
    let plan = FeaturePlanParams::new(FeatureOptions::default())
        .fit(&PlanInputs {
            form: Form::Tabular,
            profile: vec![categorical_input(
                "origin",
                &[("other", 150), ("social", 300), ("rare", 1)],
            )],
            event_types: Default::default(),
            channels: Vec::new(),
        })
        .expect("plan fits");
    assert_eq!(
        plan.feature_names(),
        [
            "origin=other",
            "origin=social",
            "origin=<other>",
            "origin=<missing>"
        ]
    );
    let rare = EntityHistory {
        created_at_ms: 0,
        profile: vec![ProfileValue::Text("rare".into())],
        events: Vec::new(),
    };
    assert_eq!(plan.compute(&rare, 0).unwrap(), [0.0, 0.0, 1.0, 0.0]);
    let other = EntityHistory {
        profile: vec![ProfileValue::Text("other".into())],
        ..rare
    };
    assert_eq!(plan.compute(&other, 0).unwrap(), [1.0, 0.0, 0.0, 0.0]);
}

#[test]
fn a_profile_column_named_like_a_history_feature_is_refused() {
    let error = FeaturePlanParams::new(FeatureOptions::default())
        .fit(&PlanInputs {
            form: Form::Events,
            profile: vec![ProfileInput {
                name: "tenure_days".into(),
                kind: ColumnKind::Numeric,
                level_counts: HashMap::new(),
            }],
            event_types: Default::default(),
            channels: Vec::new(),
        })
        .expect_err("duplicate feature name");
    let message = error.to_string();
    assert!(
        message.contains("`tenure_days`") && message.contains("rename or exclude"),
        "{message}"
    );
}
