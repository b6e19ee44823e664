//! Event form: entities (from their own file or derived from the event log), the event log
//! after its row rules, and the earliest outcome of each entity.

use std::collections::{HashMap, HashSet};

use polars::prelude::*;

use super::source::SourceFile;
use super::{
    CHANNEL, CREATED_AT, ENTITY_ID, EVENT_TYPE, LoadedDataset, OUTCOME_AT, ProfileColumn, TS,
    VALUE, check_named_columns_exist, check_no_missing_id, check_unique_ids, profile_columns,
    values,
};
use crate::error::DataError;
use crate::spec::{
    BeforeCreation, DatasetSpec, EntitiesSpec, EventsSpec, OutcomesSpec, RuleAction,
};

/// Scratch column: a row's position in the filtered event log.
const POSITION: &str = "__leadscore_position";

/// Loads `[entities]`, `[events]` and `[outcomes]` and checks they agree.
pub(super) fn load(
    spec: &DatasetSpec,
    entities_spec: &EntitiesSpec,
) -> Result<LoadedDataset, DataError> {
    let events = match &spec.events {
        Some(events_spec) => Some(EventLog::read(spec, events_spec, entities_spec)?),
        None => None,
    };
    let entities = match (&events, entities_spec.from_events) {
        (Some(events), true) => Entities::from_events(events, entities_spec)?,
        (None, true) => {
            return Err(DataError::Invalid(
                "[entities] from_events = true needs an [events] section".into(),
            ));
        }
        (_, false) => Entities::read(spec, entities_spec)?,
    };
    if let Some(events) = &events
        && !entities_spec.from_events
    {
        events.check_known_entities(&entities)?;
    }
    let outcomes = match &spec.outcomes {
        Some(outcomes_spec) => Some(read_outcomes(spec, outcomes_spec, &entities)?),
        None => None,
    };
    Ok(LoadedDataset {
        spec: spec.clone(),
        entities: entities.frame,
        profile_columns: entities.profile_columns,
        events: events.map(|events| events.frame),
        outcomes,
        warnings: entities.warnings,
    })
}

/// The canonical entities frame and its profile columns.
struct Entities {
    frame: DataFrame,
    profile_columns: Vec<ProfileColumn>,
    warnings: Vec<String>,
}

impl Entities {
    /// Reads the entities file: unique ids, creation times, profile columns.
    fn read(spec: &DatasetSpec, entities_spec: &EntitiesSpec) -> Result<Entities, DataError> {
        let (Some(path), Some(created_at)) = (&entities_spec.path, &entities_spec.created_at)
        else {
            return Err(DataError::Invalid(
                "[entities] needs `path` and `created_at` unless `from_events = true`".into(),
            ));
        };
        let source = SourceFile::read(&spec.resolve(path), &entities_spec.file, None)?;
        let id = &entities_spec.id;
        source.require_column(id)?;
        source.require_column(created_at)?;
        check_named_columns_exist(
            &source,
            entities_spec
                .exclude
                .iter()
                .chain(entities_spec.columns.keys()),
        )?;

        let ids = values::id_values(&source, id)?;
        check_no_missing_id(&source, &ids, id, "missing entity id")?;
        check_unique_ids(&source, &ids, id)?;
        let created = values::timestamp_values(
            &source,
            created_at,
            entities_spec.file.timestamp_format.as_deref(),
        )?;
        if let Some(position) = first_null(&created) {
            return Err(source.bad_value(position, created_at, "", "missing creation time"));
        }

        let profile_names: Vec<String> = source
            .all_columns
            .iter()
            .filter(|name| {
                *name != id && *name != created_at && !entities_spec.exclude.contains(name)
            })
            .cloned()
            .collect();
        let mut warnings = Vec::new();
        let (profile, profile_columns) = profile_columns(
            &source,
            &profile_names,
            &entities_spec.columns,
            &mut warnings,
        )?;
        let frame = entity_frame(ids, created, profile).map_err(|e| source.polars_error(e))?;
        Ok(Entities {
            frame,
            profile_columns,
            warnings,
        })
    }

    /// One entity per distinct id of the event log, created at its first event, with the
    /// `profile_from_events` columns of that event (ties: the earlier row).
    fn from_events(events: &EventLog, entities_spec: &EntitiesSpec) -> Result<Entities, DataError> {
        let source = &events.source;
        check_named_columns_exist(source, entities_spec.exclude.iter())?;
        let profile_names: Vec<String> = entities_spec
            .profile_from_events
            .iter()
            .filter(|name| !entities_spec.exclude.contains(name))
            .cloned()
            .collect();
        if let Some(stray) = entities_spec
            .columns
            .keys()
            .find(|name| !profile_names.contains(name))
        {
            source.require_column(stray)?;
            return Err(DataError::Invalid(format!(
                "[entities] `columns` types `{stray}`, which is not in `profile_from_events`"
            )));
        }

        let firsts = events
            .frame
            .clone()
            .lazy()
            .select([col(ENTITY_ID), col(TS)])
            .with_row_index(POSITION, None)
            .group_by_stable([col(ENTITY_ID)])
            .agg([
                col(TS).min().alias(CREATED_AT),
                col(POSITION)
                    .filter(col(TS).eq(col(TS).min()))
                    .min()
                    .alias(POSITION),
            ])
            .collect()
            .map_err(|e| source.polars_error(e))?;
        let column = |name: &str| firsts.column(name).map_err(|e| source.polars_error(e));
        let ids = column(ENTITY_ID)?
            .str()
            .map_err(|e| source.polars_error(e))?
            .clone();
        let created = column(CREATED_AT)?
            .i64()
            .map_err(|e| source.polars_error(e))?
            .clone();
        let positions = column(POSITION)?
            .idx()
            .map_err(|e| source.polars_error(e))?
            .clone();

        let first_events = source.take_rows(&positions)?;
        let mut warnings = Vec::new();
        let (profile, profile_columns) = profile_columns(
            &first_events,
            &profile_names,
            &entities_spec.columns,
            &mut warnings,
        )?;
        let frame = entity_frame(ids, created, profile).map_err(|e| source.polars_error(e))?;
        Ok(Entities {
            frame,
            profile_columns,
            warnings,
        })
    }

    fn ids(&self) -> Result<&StringChunked, DataError> {
        self.frame
            .column(ENTITY_ID)
            .and_then(|ids| ids.str())
            .map_err(|e| DataError::Invalid(e.to_string()))
    }

    fn created_at(&self) -> Result<&Int64Chunked, DataError> {
        self.frame
            .column(CREATED_AT)
            .and_then(|created| created.i64())
            .map_err(|e| DataError::Invalid(e.to_string()))
    }
}

fn entity_frame(
    ids: StringChunked,
    created: Int64Chunked,
    profile: Vec<Column>,
) -> PolarsResult<DataFrame> {
    let height = ids.len();
    let mut columns = Vec::with_capacity(profile.len() + 2);
    columns.push(ids.with_name(ENTITY_ID.into()).into_column());
    columns.push(created.with_name(CREATED_AT.into()).into_column());
    columns.extend(profile);
    DataFrame::new(height, columns)
}

fn first_null<T: PolarsDataType>(values: &ChunkedArray<T>) -> Option<usize>
where
    for<'a> T::Physical<'a>: Sized,
{
    if values.null_count() == 0 {
        return None;
    }
    values
        .is_null()
        .iter()
        .position(|is_null| is_null == Some(true))
}

/// The event log: the raw rows kept by the rules (for error locations and profile values)
/// and the canonical frame.
struct EventLog {
    source: SourceFile,
    entity_id_column: String,
    frame: DataFrame,
}

impl EventLog {
    fn read(
        spec: &DatasetSpec,
        events_spec: &EventsSpec,
        entities_spec: &EntitiesSpec,
    ) -> Result<EventLog, DataError> {
        let mut wanted = vec![events_spec.entity_id.clone(), events_spec.timestamp.clone()];
        wanted.extend(events_spec.event_type.iter().cloned());
        wanted.extend(events_spec.channel.iter().cloned());
        wanted.extend(events_spec.value.iter().cloned());
        wanted.extend(events_spec.value_product.iter().cloned());
        wanted.extend(events_spec.rules.iter().map(|rule| rule.column.clone()));
        if entities_spec.from_events {
            wanted.extend(entities_spec.profile_from_events.iter().cloned());
        }
        let mut source = SourceFile::read(
            &spec.resolve(&events_spec.path),
            &events_spec.file,
            Some(&wanted),
        )?;

        let event_types = apply_rules(&mut source, events_spec)?;

        let entity_id = &events_spec.entity_id;
        let ids = values::id_values(&source, entity_id)?;
        let problem = "missing entity id (a rule `{ column = \"...\", is_missing = true, \
                       action = \"drop\" }` skips such rows)";
        check_no_missing_id(&source, &ids, entity_id, problem)?;

        let timestamp = &events_spec.timestamp;
        let ts = values::timestamp_values(
            &source,
            timestamp,
            events_spec.file.timestamp_format.as_deref(),
        )?;
        if let Some(position) = first_null(&ts) {
            return Err(source.bad_value(position, timestamp, "", "missing timestamp"));
        }

        let height = source.height();
        let event_type = match event_types {
            EventTypes::Constant(event_type) => Column::new_scalar(
                EVENT_TYPE.into(),
                Scalar::new(DataType::String, AnyValue::StringOwned(event_type.into())),
                height,
            ),
            EventTypes::PerRow(event_types) => {
                if let Some(position) = first_null(&event_types) {
                    let column = events_spec.event_type.as_deref().unwrap_or(EVENT_TYPE);
                    return Err(source.bad_value(position, column, "", "missing event type"));
                }
                event_types.with_name(EVENT_TYPE.into()).into_column()
            }
        };
        let channel = match &events_spec.channel {
            Some(channel) => values::text_values(&source, channel)?.into_column(),
            None => Column::full_null(CHANNEL.into(), height, &DataType::String),
        };
        let value = event_values(&source, events_spec)?;

        let frame = DataFrame::new(
            height,
            vec![
                ids.with_name(ENTITY_ID.into()).into_column(),
                ts.with_name(TS.into()).into_column(),
                event_type,
                channel.with_name(CHANNEL.into()),
                value.with_name(VALUE.into()),
            ],
        )
        .map_err(|e| source.polars_error(e))?;
        Ok(EventLog {
            source,
            entity_id_column: entity_id.clone(),
            frame,
        })
    }

    /// Fails on the first event whose entity is not in `entities`.
    fn check_known_entities(&self, entities: &Entities) -> Result<(), DataError> {
        let known: HashSet<&str> = entities.ids()?.iter().flatten().collect();
        let event_ids = self
            .frame
            .column(ENTITY_ID)
            .and_then(|ids| ids.str())
            .map_err(|e| self.source.polars_error(e))?;
        for (position, id) in event_ids.iter().enumerate() {
            if let Some(id) = id
                && !known.contains(id)
            {
                return Err(DataError::UnknownEntity {
                    at: self.source.at(position, &self.entity_id_column),
                    id: id.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// Event types before the canonical frame is built.
enum EventTypes {
    /// `constant_event_type` and no rule changed it.
    Constant(String),
    PerRow(StringChunked),
}

/// Applies the `rules` in order: drops rows (from `source`) and sets event types. Returns
/// the event types of the kept rows.
fn apply_rules(source: &mut SourceFile, events_spec: &EventsSpec) -> Result<EventTypes, DataError> {
    let height = source.height();
    let mut event_types = match (&events_spec.event_type, &events_spec.constant_event_type) {
        (Some(column), _) => EventTypes::PerRow(values::text_values(source, column)?),
        (None, Some(constant)) => EventTypes::Constant(constant.clone()),
        (None, None) => {
            return Err(DataError::Invalid(
                "[events] needs `event_type` (a column) or `constant_event_type`".into(),
            ));
        }
    };
    let mut keep: Option<BooleanChunked> = None;
    for rule in &events_spec.rules {
        let matches: BooleanChunked = match &rule.starts_with {
            Some(prefix) => values::text_values(source, &rule.column)?
                .iter()
                .map(|value| value.is_some_and(|value| value.starts_with(prefix.as_str())))
                .collect(),
            None => source.column(&rule.column)?.is_null(),
        };
        match &rule.action {
            RuleAction::Drop => {
                let dropped_or_kept = match keep {
                    Some(keep) => &keep & &!&matches,
                    None => !&matches,
                };
                keep = Some(dropped_or_kept);
            }
            RuleAction::SetEventType(event_type) => {
                let current = match event_types {
                    EventTypes::PerRow(current) => current,
                    EventTypes::Constant(constant) => {
                        StringChunked::full(EVENT_TYPE.into(), &constant, height)
                    }
                };
                let set = StringChunked::full(EVENT_TYPE.into(), event_type, height);
                let updated = set
                    .zip_with(&matches, &current)
                    .map_err(|e| source.polars_error(e))?;
                event_types = EventTypes::PerRow(updated);
            }
        }
    }
    if let Some(keep) = keep {
        source.keep_rows(&keep)?;
        if let EventTypes::PerRow(all_rows) = event_types {
            let kept = all_rows.filter(&keep).map_err(|e| source.polars_error(e))?;
            event_types = EventTypes::PerRow(kept);
        }
    }
    Ok(event_types)
}

/// The `value` column, the product of the `value_product` columns, or all null.
fn event_values(source: &SourceFile, events_spec: &EventsSpec) -> Result<Column, DataError> {
    let problem = "not a number";
    if let Some(value) = &events_spec.value {
        return Ok(values::number_values(source, value, problem)?.into_column());
    }
    let mut product: Option<Float64Chunked> = None;
    for factor in &events_spec.value_product {
        let factor = values::number_values(source, factor, problem)?;
        product = Some(match product {
            Some(product) => &product * &factor,
            None => factor,
        });
    }
    Ok(match product {
        Some(product) => product.into_column(),
        None => Column::full_null(VALUE.into(), source.height(), &DataType::Float64),
    })
}

/// Reads the outcomes: known entities, never before creation (unless the spec's
/// `before_creation` says otherwise), the earliest per entity, in entity order. Rows with
/// no outcome time are skipped (an export may list every lead with an empty date).
fn read_outcomes(
    spec: &DatasetSpec,
    outcomes_spec: &OutcomesSpec,
    entities: &Entities,
) -> Result<DataFrame, DataError> {
    let wanted = [
        outcomes_spec.entity_id.clone(),
        outcomes_spec.timestamp.clone(),
    ];
    let source = SourceFile::read(
        &spec.resolve(&outcomes_spec.path),
        &outcomes_spec.file,
        Some(&wanted),
    )?;
    let (id_column, ts_column) = (&outcomes_spec.entity_id, &outcomes_spec.timestamp);
    let ids = values::id_values(&source, id_column)?;
    let times = values::timestamp_values(
        &source,
        ts_column,
        outcomes_spec.file.timestamp_format.as_deref(),
    )?;

    let entity_ids = entities.ids()?;
    let created_at: HashMap<&str, i64> = entity_ids
        .iter()
        .zip(entities.created_at()?.iter())
        .filter_map(|(id, created)| Some((id?, created?)))
        .collect();
    let mut earliest: HashMap<&str, i64> = HashMap::new();
    for (position, (id, outcome)) in ids.iter().zip(times.iter()).enumerate() {
        let Some(id) = id else {
            return Err(source.bad_value(position, id_column, "", "missing entity id"));
        };
        let Some(mut outcome) = outcome else { continue };
        let Some((&known_id, &created)) = created_at.get_key_value(id) else {
            return Err(DataError::UnknownEntity {
                at: source.at(position, id_column),
                id: id.to_string(),
            });
        };
        if outcome < created {
            match outcomes_spec.before_creation {
                BeforeCreation::Error => {
                    return Err(DataError::OutcomeBeforeCreation {
                        at: source.at(position, ts_column),
                        id: id.to_string(),
                        outcome: values::format_timestamp(outcome),
                        created: values::format_timestamp(created),
                    });
                }
                BeforeCreation::Drop => continue,
                BeforeCreation::Clamp => outcome = created,
            }
        }
        earliest
            .entry(known_id)
            .and_modify(|time| *time = (*time).min(outcome))
            .or_insert(outcome);
    }

    let (outcome_ids, outcome_times): (Vec<&str>, Vec<i64>) = entity_ids
        .iter()
        .flatten()
        .filter_map(|id| Some((id, *earliest.get(id)?)))
        .unzip();
    let height = outcome_ids.len();
    DataFrame::new(
        height,
        vec![
            StringChunked::from_slice(ENTITY_ID.into(), &outcome_ids).into_column(),
            Int64Chunked::from_vec(OUTCOME_AT.into(), outcome_times).into_column(),
        ],
    )
    .map_err(|e| source.polars_error(e))
}
