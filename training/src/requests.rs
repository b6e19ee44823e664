//! Score requests from a dataset: the JSON body the server's score route takes
//! (`POST /v1/score/{model}`) for some entities of a loaded dataset, at a moment the spec
//! scores them (the last calendar cut-off, or each entity's creation plus the spec's
//! offset), with its profile and the events before that moment only. What a CRM integration
//! would send; `scripts/real-data` uses it to score rows of the real exports through the
//! server.

use features::builder::Cutoffs;
use features::load::LoadedDataset;
use features::spec::ColumnKind;
use polars::prelude::*;
use serde_json::{Map, Value, json};

use crate::error::TrainError;

/// Most events sent for one entity (the most recent ones): keeps a body of a long-lived
/// customer under the server's size limit.
pub const MAX_EVENTS: usize = 500;

/// Requests for `limit` entities of `data` (spread evenly over its entities in order),
/// scored as `cutoffs` says. With calendar cut-offs, only entities created before the last
/// one are taken.
pub fn score_requests(
    data: &LoadedDataset,
    cutoffs: &Cutoffs,
    limit: usize,
) -> Result<Vec<Value>, TrainError> {
    let entities = &data.entities;
    let polars = |e: PolarsError| TrainError::Data(format!("entities: {e}"));
    let ids = entities
        .column("entity_id")
        .and_then(|c| c.str().cloned())
        .map_err(polars)?;
    let created = match cutoffs {
        Cutoffs::Tabular => None,
        _ => Some(
            entities
                .column("created_at")
                .and_then(|c| c.i64().cloned())
                .map_err(polars)?,
        ),
    };
    let as_of_of = |row: usize| -> Option<i64> {
        let created = created.as_ref()?.get(row)?;
        match cutoffs {
            Cutoffs::Calendar(dates) => dates.last().copied().filter(|&last| created < last),
            Cutoffs::AfterCreation { offset_ms } => Some(created + offset_ms),
            Cutoffs::Tabular => None,
        }
    };
    let eligible: Vec<usize> = (0..entities.height())
        .filter(|&row| matches!(cutoffs, Cutoffs::Tabular) || as_of_of(row).is_some())
        .collect();
    let step = (eligible.len() as f64 / limit.max(1) as f64).max(1.0);
    let chosen: Vec<usize> = (0..limit.min(eligible.len()))
        .map(|k| eligible[((k as f64) * step) as usize])
        .collect();

    let events = data.events.as_ref().map(events_by_entity).transpose()?;
    let mut requests = Vec::with_capacity(chosen.len());
    for row in chosen {
        let id = ids.get(row).unwrap_or_default().to_owned();
        let fields = profile_fields(data, row)?;
        let request = match (as_of_of(row), &created) {
            (Some(as_of), Some(created)) => {
                let entity_events: Vec<Value> = events
                    .as_ref()
                    .and_then(|by_id| by_id.get(&id))
                    .map(|list| {
                        let before: Vec<&(i64, Value)> =
                            list.iter().filter(|(ts, _)| *ts < as_of).collect();
                        let skip = before.len().saturating_sub(MAX_EVENTS);
                        before
                            .into_iter()
                            .skip(skip)
                            .map(|(_, e)| e.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                json!({
                    "id": id,
                    "as_of": as_of,
                    "created_at": created.get(row),
                    "profile": fields,
                    "events": entity_events,
                })
            }
            _ => json!({ "id": id, "row": fields }),
        };
        requests.push(request);
    }
    Ok(requests)
}

/// The profile columns of entity `row` by name, missing values left out.
fn profile_fields(data: &LoadedDataset, row: usize) -> Result<Map<String, Value>, TrainError> {
    let mut fields = Map::new();
    for column in &data.profile_columns {
        let series = data
            .entities
            .column(&column.name)
            .map_err(|e| TrainError::Data(format!("entities: {e}")))?;
        let value = match column.kind {
            ColumnKind::Numeric => series
                .f64()
                .ok()
                .and_then(|c| c.get(row))
                .filter(|v| v.is_finite())
                .map(|v| json!(v)),
            ColumnKind::Categorical => series.str().ok().and_then(|c| c.get(row)).map(|v| json!(v)),
        };
        if let Some(value) = value {
            fields.insert(column.name.clone(), value);
        }
    }
    Ok(fields)
}

/// Each entity's events as request JSON with their times, by time.
fn events_by_entity(
    frame: &DataFrame,
) -> Result<std::collections::HashMap<String, Vec<(i64, Value)>>, TrainError> {
    let polars = |e: PolarsError| TrainError::Data(format!("events: {e}"));
    let ids = frame
        .column("entity_id")
        .and_then(|c| c.str().cloned())
        .map_err(polars)?;
    let ts = frame
        .column("ts")
        .and_then(|c| c.i64().cloned())
        .map_err(polars)?;
    let kinds = frame
        .column("event_type")
        .and_then(|c| c.str().cloned())
        .map_err(polars)?;
    let channels = frame
        .column("channel")
        .and_then(|c| c.str().cloned())
        .map_err(polars)?;
    let values = frame
        .column("value")
        .and_then(|c| c.f64().cloned())
        .map_err(polars)?;
    let mut by_id: std::collections::HashMap<String, Vec<(i64, Value)>> = Default::default();
    for i in 0..frame.height() {
        let (Some(id), Some(at), Some(kind)) = (ids.get(i), ts.get(i), kinds.get(i)) else {
            continue;
        };
        let mut event = Map::new();
        event.insert("ts".into(), json!(at));
        event.insert("type".into(), json!(kind));
        if let Some(channel) = channels.get(i) {
            event.insert("channel".into(), json!(channel));
        }
        if let Some(value) = values.get(i).filter(|v| v.is_finite()) {
            event.insert("value".into(), json!(value));
        }
        by_id
            .entry(id.to_owned())
            .or_default()
            .push((at, Value::Object(event)));
    }
    for list in by_id.values_mut() {
        list.sort_by_key(|(at, _)| *at);
    }
    Ok(by_id)
}
