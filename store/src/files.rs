//! The entity store and the files the trainer reads, both ways.
//!
//! * [`import`]: a dataset spec's history (a CRM export) bulk-loaded into a store, so the
//!   sales queue is right the day the server starts. Each entity's events get the ids
//!   `import-0`, `import-1`, ... in time order, so importing the same files again stores
//!   nothing twice.
//! * [`export`]: what a store holds written back as entities, events and outcomes files
//!   (Parquet) with a dataset spec that `train` reads unchanged; outcomes posted through the
//!   server are the labels. Given the spec the model was trained from (`like`), the export
//!   keeps its label, cutoffs, feature options and column kinds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::{
    EntityStore, EntityWithEvents, EntityWrite, Kind, NewEvent, Outcome, RedbStore, WriteBatch,
};
use features::history::{ProfileValue, TimestampMs};
use features::load::{CHANNEL, CREATED_AT, ENTITY_ID, EVENT_TYPE, OUTCOME_AT, TS, VALUE};
use features::spec::{
    ColumnKind, CutoffSpec, DatasetSpec, EntitiesSpec, EventsSpec, FileOptions, LabelKind,
    LabelSpec, OutcomesSpec, Task,
};
use polars::prelude::*;

/// An import or export that could not be done; the message names the file or column.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct FilesError(pub String);

impl From<features::DataError> for FilesError {
    fn from(e: features::DataError) -> Self {
        FilesError(e.to_string())
    }
}

/// Events written to the store in one transaction during an import.
pub const IMPORT_CHUNK_EVENTS: usize = 200_000;

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImportReport {
    pub entities: usize,
    pub events: usize,
    /// Events already stored (an import run twice).
    pub duplicates: usize,
    pub outcomes: usize,
    /// Reading and checking the files.
    pub load_seconds: f64,
    /// Writing to the store, durably.
    pub write_seconds: f64,
}

fn invalid(message: String) -> FilesError {
    FilesError(message)
}

fn polars_err(what: &str, e: PolarsError) -> FilesError {
    invalid(format!("{what}: {e}"))
}

/// Loads `spec`'s history into `store`: each entity with its kind (a propensity dataset's
/// entities are leads, a churn dataset's customers), creation time, profile, events and
/// outcome (converted or churned).
pub fn import(spec: &DatasetSpec, store: &RedbStore) -> Result<ImportReport, FilesError> {
    let start = Instant::now();
    let data = features::load::load_dataset(spec)?;
    let kind = match spec.task {
        Task::Propensity => Kind::Lead,
        Task::Churn => Kind::Customer,
    };
    let closing = kind.closing_outcome();
    let entities = &data.entities;
    let ids = entities
        .column(ENTITY_ID)
        .and_then(|c| c.str().cloned())
        .map_err(|e| polars_err("entities", e))?;
    let created = entities
        .column(CREATED_AT)
        .ok()
        .map(|c| c.i64().cloned())
        .transpose()
        .map_err(|e| polars_err("entities", e))?;
    let mut profile_columns = Vec::with_capacity(data.profile_columns.len());
    for column in &data.profile_columns {
        let c = entities
            .column(&column.name)
            .map_err(|e| polars_err("entities", e))?;
        profile_columns.push((column.name.clone(), column.kind, c.clone()));
    }
    let mut writes: Vec<EntityWrite> = Vec::with_capacity(ids.len());
    let mut index: std::collections::HashMap<String, usize> =
        std::collections::HashMap::with_capacity(ids.len());
    for (row, id) in ids.iter().enumerate() {
        let Some(id) = id else { continue };
        let mut profile = Vec::with_capacity(profile_columns.len());
        for (name, kind, column) in &profile_columns {
            let value = match kind {
                ColumnKind::Numeric => column
                    .f64()
                    .map_err(|e| polars_err(name, e))?
                    .get(row)
                    .map_or(ProfileValue::Missing, ProfileValue::Number),
                ColumnKind::Categorical => column
                    .str()
                    .map_err(|e| polars_err(name, e))?
                    .get(row)
                    .map_or(ProfileValue::Missing, |t| ProfileValue::Text(t.to_owned())),
            };
            if value != ProfileValue::Missing {
                profile.push((name.clone(), value));
            }
        }
        index.insert(id.to_owned(), writes.len());
        writes.push(EntityWrite {
            id: id.to_owned(),
            kind: Some(kind),
            created_at_ms: created.as_ref().and_then(|c| c.get(row)),
            profile,
            ..Default::default()
        });
    }
    let mut n_events = 0;
    if let Some(events) = &data.events {
        let col = |name: &str| events.column(name).map_err(|e| polars_err("events", e));
        let entity = col(ENTITY_ID)?
            .str()
            .map_err(|e| polars_err("events", e))?
            .clone();
        let ts = col(TS)?.i64().map_err(|e| polars_err("events", e))?.clone();
        let types = col(EVENT_TYPE)?
            .str()
            .map_err(|e| polars_err("events", e))?
            .clone();
        let channels = col(CHANNEL)?
            .str()
            .map_err(|e| polars_err("events", e))?
            .clone();
        let values = col(VALUE)?
            .f64()
            .map_err(|e| polars_err("events", e))?
            .clone();
        for i in 0..events.height() {
            let (Some(id), Some(t), Some(event_type)) = (entity.get(i), ts.get(i), types.get(i))
            else {
                continue;
            };
            let Some(&w) = index.get(id) else { continue };
            writes[w].events.push(NewEvent {
                id: None,
                ts_ms: t,
                event_type: event_type.to_owned(),
                channel: channels.get(i).map(str::to_owned),
                value: values.get(i),
            });
            n_events += 1;
        }
    }
    let mut n_outcomes = 0;
    if let Some(outcomes) = &data.outcomes {
        let entity = outcomes
            .column(ENTITY_ID)
            .and_then(|c| c.str().cloned())
            .map_err(|e| polars_err("outcomes", e))?;
        let at = outcomes
            .column(OUTCOME_AT)
            .and_then(|c| c.i64().cloned())
            .map_err(|e| polars_err("outcomes", e))?;
        for (id, at) in entity.iter().zip(at.iter()) {
            if let (Some(id), Some(at_ms)) = (id, at)
                && let Some(&w) = index.get(id)
            {
                writes[w].outcomes.push(Outcome {
                    kind: closing,
                    at_ms,
                });
                n_outcomes += 1;
            }
        }
    }
    // Ids in time order per entity: the same files give the same ids.
    for write in &mut writes {
        write.events.sort_by_key(|e| e.ts_ms);
        for (n, event) in write.events.iter_mut().enumerate() {
            event.id = Some(format!("import-{n}"));
        }
    }
    let load_seconds = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let n_entities = writes.len();
    let mut duplicates = 0;
    let mut chunk = Vec::new();
    let mut chunk_events = 0;
    let mut flush = |chunk: &mut Vec<EntityWrite>| -> Result<(), FilesError> {
        if chunk.is_empty() {
            return Ok(());
        }
        let written = store
            .write_now(WriteBatch {
                entities: std::mem::take(chunk),
                now_ms,
            })
            .map_err(|e| invalid(e.to_string()))?;
        duplicates += written.iter().map(|w| w.duplicates as usize).sum::<usize>();
        Ok(())
    };
    for write in writes {
        chunk_events += write.events.len();
        chunk.push(write);
        if chunk_events >= IMPORT_CHUNK_EVENTS {
            flush(&mut chunk)?;
            chunk_events = 0;
        }
    }
    flush(&mut chunk)?;
    Ok(ImportReport {
        entities: n_entities,
        events: n_events,
        duplicates,
        outcomes: n_outcomes,
        load_seconds,
        write_seconds: start.elapsed().as_secs_f64(),
    })
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportReport {
    pub entities: usize,
    pub events: usize,
    pub outcomes: usize,
    pub spec: PathBuf,
}

/// Entities read from the store at a time.
const EXPORT_PAGE: usize = 1000;

/// The export's file names.
pub const ENTITIES_FILE: &str = "entities.parquet";
pub const EVENTS_FILE: &str = "events.parquet";
pub const OUTCOMES_FILE: &str = "outcomes.parquet";
pub const SPEC_FILE: &str = "spec.toml";

/// Writes the entities of `task`'s kind held in `store` (leads for propensity, customers
/// for churn) to `out` as Parquet files and `spec.toml`. With `like`, the spec keeps its
/// name, label, cutoffs, feature options and the kinds of its profile columns; without, a
/// field whose stored values are all numbers is numeric, any other categorical, and the
/// label is an outcome within 30 days at six monthly cutoffs.
pub async fn export(
    store: &dyn EntityStore,
    out: &Path,
    task: Task,
    like: Option<&DatasetSpec>,
) -> Result<ExportReport, FilesError> {
    let kind = match task {
        Task::Propensity => Kind::Lead,
        Task::Churn => Kind::Customer,
    };
    let closing = kind.closing_outcome();
    let mut entities: Vec<EntityWithEvents> = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .scan(after.clone(), EXPORT_PAGE)
            .await
            .map_err(|e| invalid(e.to_string()))?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        entities.extend(page.into_iter().filter(|e| e.record.kind == kind));
    }
    let declared: BTreeMap<String, ColumnKind> = like
        .and_then(|s| s.entities.as_ref())
        .map(|e| e.columns.clone())
        .unwrap_or_default();
    // Columns in the order the fields were first sent (a feature plan follows the file's
    // column order).
    let mut names: Vec<&str> = Vec::new();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for name in entities.iter().flat_map(|e| e.record.profile.keys()) {
        if seen.insert(name.as_str()) {
            names.push(name.as_str());
        }
    }
    let mut columns: Vec<(String, ColumnKind)> = Vec::with_capacity(names.len());
    for name in names {
        let kind = declared.get(name).copied().unwrap_or_else(|| {
            let numeric = entities.iter().all(|e| {
                matches!(
                    e.record.profile.get(name),
                    None | Some(ProfileValue::Number(_) | ProfileValue::Missing)
                )
            });
            if numeric {
                ColumnKind::Numeric
            } else {
                ColumnKind::Categorical
            }
        });
        columns.push((name.to_owned(), kind));
    }
    std::fs::create_dir_all(out)
        .map_err(|e| invalid(format!("cannot create {}: {e}", out.display())))?;

    // Entities.
    let ids: Vec<&str> = entities.iter().map(|e| e.id.as_str()).collect();
    let created: Vec<TimestampMs> = entities.iter().map(|e| e.record.created_at_ms).collect();
    let mut frame_columns = vec![
        Column::new(ENTITY_ID.into(), &ids),
        datetime(CREATED_AT, created),
    ];
    for (name, kind) in &columns {
        let values = entities.iter().map(|e| e.record.profile.get(name));
        frame_columns.push(match kind {
            ColumnKind::Numeric => Column::new(
                name.as_str().into(),
                values
                    .map(|v| match v {
                        Some(ProfileValue::Number(n)) => Some(*n),
                        Some(ProfileValue::Text(t)) => t.trim().parse::<f64>().ok(),
                        _ => None,
                    })
                    .collect::<Vec<Option<f64>>>(),
            ),
            ColumnKind::Categorical => Column::new(
                name.as_str().into(),
                values
                    .map(|v| match v {
                        Some(ProfileValue::Text(t)) => Some(t.clone()),
                        Some(ProfileValue::Number(n)) => Some(features::plan::number_as_level(*n)),
                        _ => None,
                    })
                    .collect::<Vec<Option<String>>>(),
            ),
        });
    }
    let mut frame =
        DataFrame::new(entities.len(), frame_columns).map_err(|e| polars_err("entities", e))?;
    write_parquet(&mut frame, &out.join(ENTITIES_FILE))?;

    // Events.
    let n_events: usize = entities.iter().map(|e| e.events.len()).sum();
    let mut entity = Vec::with_capacity(n_events);
    let mut ts = Vec::with_capacity(n_events);
    let mut types = Vec::with_capacity(n_events);
    let mut channels = Vec::with_capacity(n_events);
    let mut values = Vec::with_capacity(n_events);
    for e in &entities {
        for ev in &e.events {
            entity.push(e.id.as_str());
            ts.push(ev.ts_ms);
            types.push(ev.event_type.as_str());
            channels.push(ev.channel.as_deref());
            values.push(ev.value);
        }
    }
    let mut frame = DataFrame::new(
        n_events,
        vec![
            Column::new(ENTITY_ID.into(), &entity),
            datetime(TS, ts),
            Column::new(EVENT_TYPE.into(), &types),
            Column::new(CHANNEL.into(), &channels),
            Column::new(VALUE.into(), &values),
        ],
    )
    .map_err(|e| polars_err("events", e))?;
    write_parquet(&mut frame, &out.join(EVENTS_FILE))?;

    // Outcomes: the closing one of each entity (the earliest counts, as in any export).
    let mut outcome_ids = Vec::new();
    let mut outcome_at = Vec::new();
    for e in &entities {
        for o in e.record.outcomes.iter().filter(|o| o.kind == closing) {
            outcome_ids.push(e.id.as_str());
            outcome_at.push(o.at_ms);
        }
    }
    let n_outcomes = outcome_ids.len();
    let mut frame = DataFrame::new(
        n_outcomes,
        vec![
            Column::new(ENTITY_ID.into(), &outcome_ids),
            datetime(OUTCOME_AT, outcome_at),
        ],
    )
    .map_err(|e| polars_err("outcomes", e))?;
    write_parquet(&mut frame, &out.join(OUTCOMES_FILE))?;

    let spec = DatasetSpec {
        name: like.map_or_else(|| format!("store-{}", task.as_str()), |s| s.name.clone()),
        task,
        entities: Some(EntitiesSpec {
            path: Some(PathBuf::from(ENTITIES_FILE)),
            from_events: false,
            profile_from_events: Vec::new(),
            id: ENTITY_ID.into(),
            created_at: Some(CREATED_AT.into()),
            columns: columns.into_iter().collect(),
            exclude: Vec::new(),
            file: FileOptions::default(),
        }),
        events: Some(EventsSpec {
            path: PathBuf::from(EVENTS_FILE),
            entity_id: ENTITY_ID.into(),
            timestamp: TS.into(),
            event_type: Some(EVENT_TYPE.into()),
            constant_event_type: None,
            channel: Some(CHANNEL.into()),
            value: Some(VALUE.into()),
            value_product: Vec::new(),
            rules: Vec::new(),
            file: FileOptions::default(),
        }),
        outcomes: Some(OutcomesSpec {
            path: PathBuf::from(OUTCOMES_FILE),
            entity_id: ENTITY_ID.into(),
            timestamp: OUTCOME_AT.into(),
            before_creation: like
                .and_then(|s| s.outcomes.as_ref())
                .map(|o| o.before_creation)
                .unwrap_or_default(),
            file: FileOptions::default(),
        }),
        table: None,
        label: Some(like.and_then(|s| s.label.clone()).unwrap_or(LabelSpec {
            horizon_days: 30,
            kind: LabelKind::OutcomeWithin,
            inactivity_event_types: Vec::new(),
            active_within_days: None,
            cutoffs: CutoffSpec::Every {
                every_days: 30,
                count: Some(6),
                start: None,
                start_after_first_days: None,
            },
        })),
        features: like.map(|s| s.features.clone()).unwrap_or_default(),
        base_dir: out.to_path_buf(),
    };
    let text = toml::to_string(&spec).map_err(|e| invalid(format!("the export's spec: {e}")))?;
    let spec_path = out.join(SPEC_FILE);
    std::fs::write(
        &spec_path,
        format!(
            "# Written by `leadscore-train export` from an entity store: the files beside it \
             hold what the store held.\n{text}"
        ),
    )
    .map_err(|e| invalid(format!("cannot write {}: {e}", spec_path.display())))?;
    Ok(ExportReport {
        entities: entities.len(),
        events: n_events,
        outcomes: n_outcomes,
        spec: spec_path,
    })
}

fn datetime(name: &str, milliseconds: Vec<TimestampMs>) -> Column {
    Int64Chunked::from_vec(name.into(), milliseconds)
        .into_datetime(TimeUnit::Milliseconds, None)
        .into_column()
}

fn write_parquet(frame: &mut DataFrame, path: &Path) -> Result<(), FilesError> {
    let file = std::fs::File::create(path)
        .map_err(|e| invalid(format!("cannot create {}: {e}", path.display())))?;
    ParquetWriter::new(file)
        .finish(frame)
        .map_err(|e| invalid(format!("cannot write {}: {e}", path.display())))?;
    Ok(())
}
