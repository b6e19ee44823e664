//! Synthetic CRM histories with a hidden ground truth, for tests, benchmarks and the demo.
//!
//! [`GeneratorParams::generate`] writes into one folder Parquet files that follow the data
//! contract, and a `spec.toml` ([`crate::DatasetSpec`]) that loads them:
//!
//! | file | [`SyntheticKind::Leads`] (propensity) | [`SyntheticKind::Customers`] (churn) |
//! |---|---|---|
//! | entities | `leads.parquet` | `customers.parquet` |
//! | event log | `events.parquet` | `events.parquet` |
//! | outcomes | `conversions.parquet` (`converted_at`) | `churn.parquet` (`churned_at`) |
//! | ground truth | `truth.parquet` | `truth.parquet` |
//!
//! Timestamps are polars `Datetime(ms)` without a time zone. Events of one entity are
//! contiguous and in time order; entities are in id order.
//!
//! # How a history is made
//!
//! Every entity gets a profile with skewed frequencies, a few levels rarer than 0.1 % (so that
//! rare-level grouping is exercised) and some missing values, and a *hidden* latent state that
//! drives its event rates and is observable only through its events:
//!
//! * **Leads**: a latent interest, correlated with how well the profile fits. Marketing emails
//!   about weekly (less often as the lead ages), each opened with a probability of about 25 %
//!   that grows with interest and fades with age; about one open in eight is clicked. Web visits
//!   are a self-exciting (Hawkes) process: a baseline rate that decays with the lead's age, and
//!   every click, visit, download or webinar attendance spawns bursts of follow-up visits.
//!   Visits lead to pricing-page views, downloads, form submits and, rarely and mostly for
//!   engaged leads after a pricing-page view, demo requests, which sales follows with calls.
//!   An unsubscribe, a bounce or eight unopened emails in a row stop the emails.
//! * **Customers**: a latent health, drifting week by week (AR(1) around a per-customer
//!   level). Logins and feature use follow health and seats; support tickets come more often
//!   when health is low and some are never resolved; monthly billing fails more often when
//!   health is low (with retries); plan upgrades, downgrades and seat removals follow health.
//!
//! # The ground truth
//!
//! The generator fixes calendar cutoffs `c_k = start + k * horizon_days` (k = 1, 2, ... while
//! `[c_k, c_k + horizon)` ends inside the span); they are the spec's `[label] cutoffs`. For each
//! entity created before `c` and without an outcome before `c`, it computes a probability from
//! *observables only* (the written profile and the events strictly before `c`):
//!
//! ```text
//! p = sigmoid(intercept + score(profile, events before c))
//! ```
//!
//! and draws the label from Bernoulli(p): when positive, the outcome time is uniform in
//! `[c, c + horizon)` and the entity's events stop there. With `E` the recency-weighted
//! engagement `sum over events before c of w(type) * 0.5^(age_days / 14)`:
//!
//! leads:
//!
//! ```text
//! score = fit + 0.8 ln(1+E) + 0.3 fit ln(1+E) - 0.3 ln(1 + lead_age_days/30)
//!         - 1.0 [unsubscribed] - 0.6 [bounced] + 0.5 [demo request in the last 30 days]
//! ```
//!
//! where `fit` is a sum of per-level effects of industry, employee band, country, seniority,
//! the job title's function and lead source, plus `0.25 tanh((ln revenue - ln 20) / 1.5)`;
//! customers:
//!
//! ```text
//! score = plan + 2 / (1 + ln(1 + U / (1 + 0.4 ln seats))) (1 + 0.2 [starter])
//!         + 0.5 [no login for 21 days] + 1.2 [last billing attempt failed]
//!         + 0.5 ln(1 + 3 F) + 0.35 min(open tickets, 5) + 0.9 D + 0.3 ln(1 + R) - 0.6 G
//!         - 0.25 ln(1 + tenure_months)
//! (the whole customer score times 1.6)
//! ```
//!
//! with `U` the decayed usage (logins and feature use), `F` decayed billing failures (10-day
//! half-life), `D`, `R` and `G` decayed downgrades, removed seats and upgrades (30, 30 and
//! 60-day half-lives).
//!
//! `truth.parquet` holds every (entity, cutoff) row at risk with `true_probability` and the
//! drawn `label`: no model can beat `AUC(true_probability, label)` in expectation. The intercept
//! is calibrated on a fixed pilot population so that about 2.5 % of leads at risk convert per
//! 30-day window (2 % of customers churn), and the behavioural rates are scaled so that the mean
//! number of events per entity is about [`GeneratorParams::events_per_entity`] (fixed-schedule
//! events such as monthly billing are not scaled). Both are written as comments in the spec.
//!
//! # Lead segments
//!
//! With [`GeneratorParams::segments`] set to [`Segments::Differ`] or [`Segments::Alike`], every
//! lead also gets a categorical profile field `segment`: `enterprise` (40 %) or `smb` (60 %),
//! independent of everything else. It is drawn after all the lead's other draws (profile,
//! events and label draws), so those stay what [`Segments::None`] gives; `leads.parquet` (after
//! the other profile columns) and `truth.parquet` (last) carry it as a column `segment`, and
//! the spec declares it.
//!
//! * `alike`: both segments use the score above with one intercept: the segment carries no
//!   signal at all, and the files are those of `none` plus the column.
//! * `differ`: smb leads use the score above; enterprise leads convert for other reasons, with
//!   `m = lead_age_days / 30`:
//!
//! ```text
//! score = fit_e + 1.2 ln(1+I) + 0.15 fit_e ln(1+I) - 2.5 ln(1+A) + 1.5 ln(1+m) - 0.25 m
//!         - 0.3 [unsubscribed] - 0.6 [bounced] + 0.6 [webinar attended in the last 60 days]
//! ```
//!
//! `fit_e` is `-2.5` times the industry and lead-source effects of `fit` (public sector and
//! outbound leads fit, software companies and referrals do not), plus other seniority effects
//! (C-level 0.9, VP 0.7, director 0.3, manager -0.2, individual contributor -0.7, student
//! -1.6) and job-function effects (IT 0.45, finance 0.35, operations 0.25, engineering 0.15;
//! sales -0.2, marketing and people -0.3; -0.3 without a title), plus a much stronger revenue
//! effect `0.9 tanh((ln revenue - ln 100) / 1.5)` (-0.3 when missing); country and employee
//! band do not count. `I` is the buying intent, recency-weighted with a 45-day half-life
//! (pricing-page view 6, webinar registration 2, webinar attendance 4 + minutes / 10, form
//! submit 1, demo request 15, sales call 2 + minutes / 10); `A` is the casual activity, with
//! the 14-day half-life (email open 1, click 2, web visit 0.5, download 1), which counts
//! *against* enterprise leads (newsletter readers research, buying committees ask for pricing
//! and demos). The lead age helps for about five months (long sales cycles) instead of hurting.
//!
//! With `differ` each segment has its own intercept, calibrated on its own pilot leads to the
//! same rate per window, so that the segment alone predicts nothing: it matters only through
//! how the other fields and the events act. On enterprise rows the two formulas' scores are
//! about uncorrelated and the smb formula ranks them little better than chance, so a model of
//! one segment beats a global gradient-boosted model (which must learn the interactions with
//! `segment`), clearly on enterprise leads and slightly on smb leads.
//!
//! # Determinism and scale
//!
//! Entity `i` draws from its own random generator seeded from `(seed, i)`, chunks of entities
//! are simulated in parallel (rayon, a bounded window of chunks in memory) and written in
//! order with polars' batched Parquet writer, so the same parameters give byte-identical
//! files whatever the number of threads. Files are written under a temporary name and renamed
//! when complete; `spec.toml` is renamed last, so an interrupted run leaves no file under a
//! final name that is partial.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{Datelike, Months, NaiveDate};
use polars::io::parquet::write::BatchedWriter;
use polars::prelude::{
    Column, DataFrame, Int64Chunked, IntoColumn, ParquetWriter, PolarsError, TimeUnit,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Poisson, StandardNormal};
use rayon::prelude::*;

use crate::error::DataError;
use crate::history::{DAY_MS, TimestampMs};

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

/// Which CRM history to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyntheticKind {
    /// B2B leads with marketing and sales events; outcome: conversion (task `propensity`).
    Leads,
    /// Subscription customers with usage, support and billing events; outcome: churn (task
    /// `churn`).
    Customers,
}

/// Whether leads come in segments, for testing models trained per segment (see "Lead segments"
/// in the [module documentation](self)). Leads only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Segments {
    /// No segments: no `segment` column, the same files as before segments existed.
    #[default]
    None,
    /// Every lead is `enterprise` (about 40 %) or `smb` (column `segment`); smb leads convert
    /// as without segments, enterprise leads for clearly different reasons, so that a model per
    /// segment beats a global one.
    Differ,
    /// Every lead is `enterprise` or `smb` as with [`Segments::Differ`], but both convert for
    /// the same reasons: the `segment` column carries no signal, and everything else is what
    /// [`Segments::None`] gives for the same seed.
    Alike,
}

impl Segments {
    /// The mode's name on the command line and in the spec's comments: `none`, `differ` or
    /// `alike`.
    pub fn as_str(self) -> &'static str {
        match self {
            Segments::None => "none",
            Segments::Differ => "differ",
            Segments::Alike => "alike",
        }
    }

    /// The mode named `text` ([`Segments::as_str`]'s names, exactly); `None` for anything else.
    pub fn parse(text: &str) -> Option<Segments> {
        match text {
            "none" => Some(Segments::None),
            "differ" => Some(Segments::Differ),
            "alike" => Some(Segments::Alike),
            _ => None,
        }
    }

    /// Whether leads get a `segment` field.
    fn is_on(self) -> bool {
        self != Segments::None
    }
}

impl std::fmt::Display for Segments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Segments {
    type Err = DataError;

    /// As [`Segments::parse`], with an error naming the accepted values.
    fn from_str(text: &str) -> Result<Segments, DataError> {
        Segments::parse(text).ok_or_else(|| {
            DataError::Invalid(format!(
                "synthetic data: segments must be none, differ or alike (got {text:?})"
            ))
        })
    }
}

/// Hyperparameters of the generator. Check them with [`GeneratorParams::check`] (done by
/// [`GeneratorParams::generate`]).
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratorParams {
    pub kind: SyntheticKind,
    /// Number of leads or customers.
    pub entities: usize,
    /// Same seed (and other parameters), same bytes.
    pub seed: u64,
    /// Label window, and spacing of the cutoffs, in days.
    pub horizon_days: u32,
    /// First simulated day (midnight). Leads and new customers arrive over the first 80 % of
    /// the span; 40 % of customers signed up in the two years before it.
    pub start: chrono::NaiveDate,
    /// Length of the simulated period in days; at least twice the horizon.
    pub span_days: u32,
    /// Target mean number of events per entity, used to scale the behavioural event rates.
    pub events_per_entity: f64,
    /// Entities simulated together by one task and written as one Parquet row group.
    pub chunk_size: usize,
    /// Lead segments ([`Segments::None`] by default). Only [`SyntheticKind::Leads`] may have
    /// segments.
    pub segments: Segments,
}

const DEFAULT_START: NaiveDate = match NaiveDate::from_ymd_opt(2025, 1, 1) {
    Some(date) => date,
    None => panic!("2025-01-01 is a valid date"),
};

impl Default for GeneratorParams {
    fn default() -> Self {
        GeneratorParams {
            kind: SyntheticKind::Leads,
            entities: 10_000,
            seed: 42,
            horizon_days: 30,
            start: DEFAULT_START,
            span_days: 365,
            events_per_entity: 20.0,
            chunk_size: 10_000,
            segments: Segments::None,
        }
    }
}

/// What [`GeneratorParams::generate`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedDataset {
    /// The dataset spec; the data files are next to it.
    pub spec_path: PathBuf,
    pub entities: usize,
    pub events: usize,
    /// Conversions or churns.
    pub outcomes: usize,
    /// Rows of `truth.parquet`: (entity, cutoff) pairs at risk.
    pub truth_rows: usize,
    /// The cutoffs of the spec, in order.
    pub cutoffs: Vec<chrono::NaiveDate>,
}

/// Ids are a letter and eight digits, so that text order is numeric order.
const MAX_ENTITIES: usize = 99_999_999;
const MAX_SPAN_DAYS: u32 = 36_500;
const MAX_EVENTS_PER_ENTITY: f64 = 10_000.0;
const MAX_CHUNK_SIZE: usize = 10_000_000;
/// Customers who signed up before the simulated period did so within this many days before it.
const CUSTOMER_HISTORY_DAYS: u32 = 730;

impl GeneratorParams {
    /// Checks the parameters; [`GeneratorParams::generate`] calls it first.
    pub fn check(&self) -> Result<(), DataError> {
        let invalid =
            |message: String| Err(DataError::Invalid(format!("synthetic data: {message}")));
        if self.entities == 0 || self.entities > MAX_ENTITIES {
            return invalid(format!(
                "entities must be between 1 and {MAX_ENTITIES} (got {})",
                self.entities
            ));
        }
        if self.horizon_days == 0 {
            return invalid("horizon_days must be at least 1".into());
        }
        if self.span_days > MAX_SPAN_DAYS
            || self.span_days < 2 * self.horizon_days.min(MAX_SPAN_DAYS)
        {
            return invalid(format!(
                "span_days must be at least twice horizon_days (so that one label window fits \
                 after the first cutoff) and at most {MAX_SPAN_DAYS} (got span {} and horizon {})",
                self.span_days, self.horizon_days
            ));
        }
        if !(self.events_per_entity.is_finite()
            && self.events_per_entity > 0.0
            && self.events_per_entity <= MAX_EVENTS_PER_ENTITY)
        {
            return invalid(format!(
                "events_per_entity must be a number in (0, {MAX_EVENTS_PER_ENTITY}] (got {})",
                self.events_per_entity
            ));
        }
        if self.chunk_size == 0 || self.chunk_size > MAX_CHUNK_SIZE {
            return invalid(format!(
                "chunk_size must be between 1 and {MAX_CHUNK_SIZE} (got {})",
                self.chunk_size
            ));
        }
        if self.kind == SyntheticKind::Customers && self.segments.is_on() {
            return invalid(format!(
                "segments = {} is for leads only: customer histories have no segments \
                 (use segments = none)",
                self.segments
            ));
        }
        let end = self
            .start
            .checked_add_days(chrono::Days::new(u64::from(self.span_days)));
        let history = self
            .start
            .checked_sub_days(chrono::Days::new(u64::from(CUSTOMER_HISTORY_DAYS)));
        if end.is_none() || history.is_none() {
            return invalid(format!(
                "start {} plus span_days is out of the date range",
                self.start
            ));
        }
        Ok(())
    }

    /// Generates the dataset into `out_dir` (created if missing), replacing files of an
    /// earlier run.
    pub fn generate(&self, out_dir: &Path) -> Result<GeneratedDataset, DataError> {
        self.check()?;
        let timeline = Timeline::new(self);
        match self.kind {
            SyntheticKind::Leads => run(&LeadModel::new(timeline, self.segments), self, out_dir),
            SyntheticKind::Customers => run(&CustomerModel::new(timeline), self, out_dir),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------------

/// The simulated period. Simulation times are `f64` days since `start` (midnight); they become
/// milliseconds with [`Timeline::ms`], which is monotone, so an event simulated after an
/// entity's creation is never stamped before it.
#[derive(Debug, Clone)]
struct Timeline {
    start_date: NaiveDate,
    start_ms: TimestampMs,
    span_days: f64,
    end_ms: TimestampMs,
    horizon_ms: TimestampMs,
    cutoff_dates: Vec<NaiveDate>,
    cutoffs_ms: Vec<TimestampMs>,
    /// Weekday of `start`, 0 = Monday.
    start_weekday: i64,
}

impl Timeline {
    fn new(params: &GeneratorParams) -> Timeline {
        let start_ms = params
            .start
            .and_hms_opt(0, 0, 0)
            .map_or(0, |moment| moment.and_utc().timestamp_millis());
        let horizon = i64::from(params.horizon_days);
        let span = i64::from(params.span_days);
        let cutoff_days: Vec<i64> = (1..)
            .map(|k| k * horizon)
            .take_while(|day| day + horizon <= span)
            .collect();
        Timeline {
            start_date: params.start,
            start_ms,
            span_days: span as f64,
            end_ms: start_ms + span * DAY_MS,
            horizon_ms: horizon * DAY_MS,
            cutoff_dates: cutoff_days
                .iter()
                .map(|&day| params.start + chrono::Duration::days(day))
                .collect(),
            cutoffs_ms: cutoff_days
                .iter()
                .map(|day| start_ms + day * DAY_MS)
                .collect(),
            start_weekday: i64::from(params.start.weekday().num_days_from_monday()),
        }
    }

    fn ms(&self, day: f64) -> TimestampMs {
        self.start_ms + (day * DAY_MS as f64).floor() as i64
    }

    fn is_weekend(&self, day: f64) -> bool {
        (self.start_weekday + day.floor() as i64).rem_euclid(7) >= 5
    }

    /// Day number (since start) of a calendar date.
    fn day_of(&self, date: NaiveDate) -> f64 {
        (date - self.start_date).num_days() as f64
    }

    fn date_of(&self, day: f64) -> NaiveDate {
        self.start_date + chrono::Duration::days(day.floor() as i64)
    }

    /// A moment in `[from, to)`, mostly on weekdays between 8:00 and 18:00.
    fn working_moment(&self, rng: &mut StdRng, from: f64, to: f64) -> f64 {
        for _ in 0..64 {
            let moment = uniform(rng, from, to);
            let hour = moment.fract() * 24.0;
            let mut keep = if self.is_weekend(moment) { 0.25 } else { 1.0 };
            if !(8.0..18.0).contains(&hour) {
                keep *= 0.2;
            }
            if chance(rng, keep) {
                return moment;
            }
        }
        uniform(rng, from, to)
    }

    /// The first weekday on or after `day` (its midnight).
    fn next_weekday(&self, day: f64) -> f64 {
        let mut midnight = day.floor();
        while self.is_weekend(midnight) {
            midnight += 1.0;
        }
        midnight
    }
}

fn days_between(from_ms: TimestampMs, to_ms: TimestampMs) -> f64 {
    (to_ms - from_ms) as f64 / DAY_MS as f64
}

/// `0.5^(age_days / half_life_days)`.
fn half_life_decay(age_days: f64, half_life_days: f64) -> f64 {
    (-std::f64::consts::LN_2 * age_days / half_life_days).exp()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn round_to(value: f64, decimals: i32) -> f64 {
    let factor = 10f64.powi(decimals);
    (value * factor).round() / factor
}

// ---------------------------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------------------------

fn splitmix64(mut state: u64) -> u64 {
    state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generator of entity `index`: independent of chunking and threads.
fn entity_rng(seed: u64, index: usize) -> StdRng {
    StdRng::seed_from_u64(splitmix64(splitmix64(seed) ^ index as u64))
}

fn uniform(rng: &mut StdRng, low: f64, high: f64) -> f64 {
    low + (high - low) * rng.random::<f64>()
}

fn chance(rng: &mut StdRng, probability: f64) -> bool {
    rng.random::<f64>() < probability
}

fn standard_normal(rng: &mut StdRng) -> f64 {
    rng.sample(StandardNormal)
}

fn log_normal(rng: &mut StdRng, median: f64, sigma: f64) -> f64 {
    median * (sigma * standard_normal(rng)).exp()
}

fn exponential(rng: &mut StdRng, mean: f64) -> f64 {
    -mean * (1.0 - rng.random::<f64>()).ln()
}

fn poisson(rng: &mut StdRng, mean: f64) -> u32 {
    if mean.is_nan() || mean <= 0.0 {
        return 0;
    }
    if mean < 20.0 {
        // Knuth: multiply uniforms until the product drops below e^-mean.
        let threshold = (-mean).exp();
        let mut product = rng.random::<f64>();
        let mut count = 0;
        while product > threshold {
            product *= rng.random::<f64>();
            count += 1;
        }
        return count;
    }
    match Poisson::new(mean) {
        Ok(distribution) => distribution.sample(rng).min(f64::from(u32::MAX)) as u32,
        Err(_) => mean.round().min(f64::from(u32::MAX)) as u32,
    }
}

/// Items drawn with fixed relative weights.
#[derive(Debug, Clone)]
struct WeightedTable<T: Copy> {
    items: Vec<T>,
    cumulative: Vec<f64>,
}

impl<T: Copy> WeightedTable<T> {
    fn new(entries: impl IntoIterator<Item = (T, f64)>) -> WeightedTable<T> {
        let mut items = Vec::new();
        let mut cumulative = Vec::new();
        let mut total = 0.0;
        for (item, weight) in entries {
            total += weight;
            items.push(item);
            cumulative.push(total);
        }
        WeightedTable { items, cumulative }
    }

    fn sample(&self, rng: &mut StdRng) -> T {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let target = rng.random::<f64>() * total;
        let index = self.cumulative.partition_point(|&edge| edge <= target);
        self.items[index.min(self.items.len() - 1)]
    }
}

/// A categorical level (`None`: missing) and its effect on the hidden score.
#[derive(Debug, Clone, Copy)]
struct Level {
    name: Option<&'static str>,
    effect: f64,
}

fn level_table(entries: &[(Option<&'static str>, f64, f64)]) -> WeightedTable<Level> {
    WeightedTable::new(
        entries
            .iter()
            .map(|&(name, share, effect)| (Level { name, effect }, share)),
    )
}

// ---------------------------------------------------------------------------------------------
// The model interface shared by leads and customers
// ---------------------------------------------------------------------------------------------

/// One simulated event; `kind` indexes the model's event names.
#[derive(Debug, Clone, Copy, PartialEq)]
struct SimEvent {
    ts_ms: TimestampMs,
    kind: u8,
    channel: Option<&'static str>,
    value: Option<f64>,
}

/// Names, files and calibration targets of one kind of history.
struct Naming {
    task: &'static str,
    dataset: &'static str,
    id_prefix: char,
    id_column: &'static str,
    entities_file: &'static str,
    outcomes_file: &'static str,
    outcome_column: &'static str,
    /// Profile columns and their kind in the spec (`numeric` or `categorical`).
    profile_columns: &'static [(&'static str, &'static str)],
    event_names: &'static [&'static str],
    /// Mean true probability per label window among entities at risk.
    target_window_rate: f64,
}

const EVENTS_FILE: &str = "events.parquet";
const TRUTH_FILE: &str = "truth.parquet";
const SPEC_FILE: &str = "spec.toml";

trait CrmModel: Sync {
    type Entity: Send + Sync;
    const NAMING: Naming;

    fn timeline(&self) -> &Timeline;
    fn sample_entity(&self, rng: &mut StdRng) -> Self::Entity;
    /// Draws what must not move any other draw of the entity (the lead's segment): called
    /// after its events and label draws, before its scores. Draws nothing by default.
    fn sample_late(&self, _entity: &mut Self::Entity, _rng: &mut StdRng) {}
    fn created_ms(&self, entity: &Self::Entity) -> TimestampMs;
    /// Appends the entity's events (any order, possibly past the span: the caller sorts and
    /// trims) as if it never reached its outcome.
    fn simulate_events(
        &self,
        entity: &Self::Entity,
        rate_scale: f64,
        rng: &mut StdRng,
        out: &mut Vec<SimEvent>,
    );
    /// The hidden score without the intercept, from the profile and `events_before` (the
    /// entity's events strictly before `cutoff_ms`, in time order) only.
    fn score(
        &self,
        entity: &Self::Entity,
        events_before: &[SimEvent],
        cutoff_ms: TimestampMs,
    ) -> f64;
    /// The entities frame: id column, `created_at`, then the profile columns
    /// ([`Naming::profile_columns`], then [`CrmModel::extra_profile_columns`]).
    fn entity_frame(
        &self,
        ids: Column,
        entities: &[Self::Entity],
    ) -> Result<DataFrame, PolarsError>;
    /// Profile columns written after [`Naming::profile_columns`] with these settings.
    fn extra_profile_columns(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    /// Whether entities have a segment: then `truth.parquet` has a `segment` column.
    fn has_segments(&self) -> bool {
        false
    }
    /// The entity's segment, when entities have one ([`CrmModel::has_segments`]).
    fn segment(&self, _entity: &Self::Entity) -> Option<&'static str> {
        None
    }
    /// Names of the groups of entities that get their own intercept, each calibrated to
    /// [`Naming::target_window_rate`]: one group (named `""`) unless segments differ.
    fn calibration_groups(&self) -> &'static [&'static str] {
        &[""]
    }
    /// The index in [`CrmModel::calibration_groups`] of the entity's group.
    fn calibration_group(&self, _entity: &Self::Entity) -> usize {
        0
    }
}

/// One cutoff of an entity with the random draws deciding its label.
#[derive(Debug, Clone, Copy)]
struct CutoffDraw {
    cutoff_ms: TimestampMs,
    score: f64,
    label_draw: f64,
    offset_draw: f64,
}

/// Multiplies the whole customer score: churn depends on observable behaviour strongly
/// enough that the best possible ROC AUC is about 0.8, as in real subscription data.
const CUSTOMER_SIGNAL_SCALE: f64 = 1.6;

/// A fully simulated entity before the intercept is applied.
struct SimulatedEntity<E> {
    entity: E,
    /// Sorted by time, within the span, as if the entity never reached its outcome.
    events: Vec<SimEvent>,
    draws: Vec<CutoffDraw>,
}

fn simulate_entity<M: CrmModel>(
    model: &M,
    rate_scale: f64,
    mut rng: StdRng,
) -> SimulatedEntity<M::Entity> {
    let mut entity = model.sample_entity(&mut rng);
    let mut events = Vec::new();
    model.simulate_events(&entity, rate_scale, &mut rng, &mut events);
    let timeline = model.timeline();
    let created_ms = model.created_ms(&entity);
    events.retain(|event| event.ts_ms >= created_ms && event.ts_ms < timeline.end_ms);
    events.sort_by_key(|event| (event.ts_ms, event.kind));
    // The label draws first (in cutoff order, label then offset), then the late draws, then
    // the scores, which draw nothing: a late draw moves no other draw.
    let label_draws: Vec<(TimestampMs, f64, f64)> = timeline
        .cutoffs_ms
        .iter()
        .filter(|&&cutoff_ms| created_ms < cutoff_ms)
        .map(|&cutoff_ms| {
            let label_draw = rng.random::<f64>();
            let offset_draw = rng.random::<f64>();
            (cutoff_ms, label_draw, offset_draw)
        })
        .collect();
    model.sample_late(&mut entity, &mut rng);
    let draws = label_draws
        .into_iter()
        .map(|(cutoff_ms, label_draw, offset_draw)| {
            let before = events.partition_point(|event| event.ts_ms < cutoff_ms);
            CutoffDraw {
                cutoff_ms,
                score: model.score(&entity, &events[..before], cutoff_ms),
                label_draw,
                offset_draw,
            }
        })
        .collect();
    SimulatedEntity {
        entity,
        events,
        draws,
    }
}

/// Walks the cutoffs in order: each is a truth row `(cutoff, p, label)` until the first
/// positive label. Returns the outcome time, if any.
fn walk_cutoffs(
    draws: &[CutoffDraw],
    intercept: f64,
    horizon_ms: TimestampMs,
    mut on_row: impl FnMut(TimestampMs, f64, bool),
) -> Option<TimestampMs> {
    for draw in draws {
        let probability = sigmoid(intercept + draw.score);
        let label = draw.label_draw < probability;
        on_row(draw.cutoff_ms, probability, label);
        if label {
            let offset = ((draw.offset_draw * horizon_ms as f64) as i64).min(horizon_ms - 1);
            return Some(draw.cutoff_ms + offset);
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Calibration
// ---------------------------------------------------------------------------------------------

const PILOT_ENTITIES: usize = 3_000;
const PILOT_SEED: u64 = 0x5EED_CA11_B4A7_E000;
const CALIBRATION_ROUNDS: usize = 4;
const RATE_SCALE_RANGE: (f64, f64) = (0.02, 50.0);
/// At most this many calibration groups ([`CrmModel::calibration_groups`]).
const MAX_CALIBRATION_GROUPS: usize = 2;

/// The intercepts and the rate scale, found on a pilot population that depends on the kind,
/// dates, targets and segments but not on the seed, so every seed shares one ground-truth
/// model.
#[derive(Debug, Clone, Copy)]
struct Calibration {
    rate_scale: f64,
    /// The intercept of each calibration group; only the model's groups are used.
    intercepts: [f64; MAX_CALIBRATION_GROUPS],
    pilot_events_per_entity: f64,
    /// Mean probability per window over all pilot rows.
    pilot_window_rate: f64,
}

impl Calibration {
    fn intercept(&self, group: usize) -> f64 {
        self.intercepts[group.min(MAX_CALIBRATION_GROUPS - 1)]
    }
}

fn calibrate<M: CrmModel>(model: &M, events_per_entity: f64) -> Calibration {
    let target_rate = M::NAMING.target_window_rate;
    let horizon_ms = model.timeline().horizon_ms;
    let groups = model
        .calibration_groups()
        .len()
        .clamp(1, MAX_CALIBRATION_GROUPS);
    let mut rate_scale = 1.0;
    let mut calibration = Calibration {
        rate_scale,
        intercepts: [0.0; MAX_CALIBRATION_GROUPS],
        pilot_events_per_entity: 0.0,
        pilot_window_rate: 0.0,
    };
    for round in 0..CALIBRATION_ROUNDS {
        let pilots: Vec<SimulatedEntity<M::Entity>> = (0..PILOT_ENTITIES)
            .into_par_iter()
            .map(|index| simulate_entity(model, rate_scale, entity_rng(PILOT_SEED, index)))
            .collect();
        let pilot_groups: Vec<usize> = pilots
            .iter()
            .map(|pilot| model.calibration_group(&pilot.entity).min(groups - 1))
            .collect();
        // Mean probability per window over the pilot rows of group `only` (all rows when
        // `None`), each entity at its group's intercept.
        let window_rate = |intercepts: [f64; MAX_CALIBRATION_GROUPS], only: Option<usize>| {
            let (mut probability_sum, mut rows) = (0.0, 0usize);
            for (pilot, &group) in pilots.iter().zip(&pilot_groups) {
                if only.is_some_and(|only| only != group) {
                    continue;
                }
                let intercept = intercepts[group];
                walk_cutoffs(&pilot.draws, intercept, horizon_ms, |_, probability, _| {
                    probability_sum += probability;
                    rows += 1;
                });
            }
            if rows == 0 {
                0.0
            } else {
                probability_sum / rows as f64
            }
        };
        let mut intercepts = [0.0; MAX_CALIBRATION_GROUPS];
        for (group, intercept) in intercepts.iter_mut().enumerate().take(groups) {
            let (mut low, mut high) = (-20.0, 10.0);
            for _ in 0..60 {
                let middle = 0.5 * (low + high);
                if window_rate([middle; MAX_CALIBRATION_GROUPS], Some(group)) < target_rate {
                    low = middle;
                } else {
                    high = middle;
                }
            }
            *intercept = 0.5 * (low + high);
        }
        let mut events = 0usize;
        for (pilot, &group) in pilots.iter().zip(&pilot_groups) {
            let intercept = intercepts[group];
            let outcome = walk_cutoffs(&pilot.draws, intercept, horizon_ms, |_, _, _| {});
            events += match outcome {
                Some(outcome_ms) => pilot
                    .events
                    .partition_point(|event| event.ts_ms < outcome_ms),
                None => pilot.events.len(),
            };
        }
        let measured = events as f64 / PILOT_ENTITIES as f64;
        calibration = Calibration {
            rate_scale,
            intercepts,
            pilot_events_per_entity: measured,
            pilot_window_rate: window_rate(intercepts, None),
        };
        if round + 1 < CALIBRATION_ROUNDS {
            let correction = if measured > 0.0 {
                events_per_entity / measured
            } else {
                4.0
            };
            rate_scale = (rate_scale * correction.clamp(0.25, 4.0))
                .clamp(RATE_SCALE_RANGE.0, RATE_SCALE_RANGE.1);
        }
    }
    calibration
}

// ---------------------------------------------------------------------------------------------
// Leads
// ---------------------------------------------------------------------------------------------

mod lead_event {
    pub const EMAIL_SENT: u8 = 0;
    pub const BOUNCE: u8 = 1;
    pub const EMAIL_OPEN: u8 = 2;
    pub const EMAIL_CLICK: u8 = 3;
    pub const UNSUBSCRIBE: u8 = 4;
    pub const WEB_VISIT: u8 = 5;
    pub const PRICING_PAGE_VIEW: u8 = 6;
    pub const CONTENT_DOWNLOAD: u8 = 7;
    pub const WEBINAR_REGISTRATION: u8 = 8;
    pub const WEBINAR_ATTENDANCE: u8 = 9;
    pub const FORM_SUBMIT: u8 = 10;
    pub const DEMO_REQUEST: u8 = 11;
    pub const SALES_CALL: u8 = 12;

    pub const NAMES: &[&str] = &[
        "email_sent",
        "bounce",
        "email_open",
        "email_click",
        "unsubscribe",
        "web_visit",
        "pricing_page_view",
        "content_download",
        "webinar_registration",
        "webinar_attendance",
        "form_submit",
        "demo_request",
        "sales_call",
    ];

    /// Weight of an event in the recency-weighted engagement of the ground truth.
    pub fn engagement_weight(kind: u8, value: Option<f64>) -> f64 {
        match kind {
            EMAIL_OPEN => 1.0,
            EMAIL_CLICK => 3.0,
            WEB_VISIT => 0.5 + value.unwrap_or(0.0).clamp(0.0, 300.0) / 300.0,
            PRICING_PAGE_VIEW => 4.0,
            CONTENT_DOWNLOAD => 2.0,
            WEBINAR_REGISTRATION => 2.0,
            WEBINAR_ATTENDANCE => 4.0,
            FORM_SUBMIT => 3.0,
            DEMO_REQUEST => 12.0,
            SALES_CALL => 5.0,
            _ => 0.0,
        }
    }

    /// Weight of an event in the buying intent of enterprise leads when segments differ:
    /// pricing, webinars, demos and sales calls count.
    pub fn enterprise_intent_weight(kind: u8, value: Option<f64>) -> f64 {
        match kind {
            PRICING_PAGE_VIEW => 6.0,
            WEBINAR_REGISTRATION => 2.0,
            WEBINAR_ATTENDANCE => 4.0 + value.unwrap_or(0.0).clamp(0.0, 60.0) / 10.0,
            FORM_SUBMIT => 1.0,
            DEMO_REQUEST => 15.0,
            SALES_CALL => 2.0 + value.unwrap_or(0.0).clamp(0.0, 120.0) / 10.0,
            _ => 0.0,
        }
    }

    /// Weight of an event in the casual activity of enterprise leads when segments differ
    /// (which counts against them): email opens and clicks, web visits, downloads.
    pub fn enterprise_activity_weight(kind: u8) -> f64 {
        match kind {
            EMAIL_OPEN => 1.0,
            EMAIL_CLICK => 2.0,
            WEB_VISIT => 0.5,
            CONTENT_DOWNLOAD => 1.0,
            _ => 0.0,
        }
    }
}

/// (level, share, effect on fit). `None` is a missing value.
const INDUSTRIES: &[(Option<&str>, f64, f64)] = &[
    (Some("Software"), 0.19, 0.35),
    (Some("Manufacturing"), 0.12, 0.05),
    (Some("Financial services"), 0.11, 0.25),
    (Some("Professional services"), 0.10, 0.15),
    (Some("Healthcare"), 0.09, 0.10),
    (Some("Retail"), 0.09, -0.05),
    (Some("Education"), 0.06, -0.40),
    (Some("Media"), 0.04, 0.0),
    (Some("Logistics"), 0.035, 0.05),
    (Some("Telecommunications"), 0.03, 0.10),
    (Some("Government"), 0.03, -0.35),
    (Some("Non-profit"), 0.025, -0.45),
    (Some("Energy"), 0.02, 0.05),
    (Some("Hospitality"), 0.015, -0.20),
    (Some("Aerospace"), 0.0009, 0.20),
    (Some("Mining"), 0.0007, 0.0),
    (Some("Fishing"), 0.0003, -0.20),
    (None, 0.03, -0.10),
];

const COUNTRIES: &[(Option<&str>, f64, f64)] = &[
    (Some("United States"), 0.38, 0.15),
    (Some("United Kingdom"), 0.10, 0.15),
    (Some("Germany"), 0.08, 0.05),
    (Some("Canada"), 0.06, 0.15),
    (Some("India"), 0.06, -0.30),
    (Some("France"), 0.05, 0.0),
    (Some("Australia"), 0.04, 0.10),
    (Some("Netherlands"), 0.03, 0.05),
    (Some("Brazil"), 0.03, -0.25),
    (Some("Spain"), 0.025, -0.05),
    (Some("Japan"), 0.02, -0.10),
    (Some("Italy"), 0.02, -0.05),
    (Some("Sweden"), 0.015, 0.05),
    (Some("Singapore"), 0.015, 0.10),
    (Some("Mexico"), 0.015, -0.20),
    (Some("Ireland"), 0.01, 0.10),
    (Some("South Africa"), 0.01, -0.15),
    (Some("Poland"), 0.01, -0.10),
    (Some("Luxembourg"), 0.0008, 0.20),
    (Some("Iceland"), 0.0006, 0.0),
    (Some("Malta"), 0.0004, 0.0),
    (None, 0.03, -0.10),
];

/// (band, share, effect on fit, median annual revenue in M USD).
const EMPLOYEE_BANDS: &[(Option<&str>, f64, f64, f64)] = &[
    (Some("1-10"), 0.22, -0.80, 0.8),
    (Some("11-50"), 0.28, -0.30, 4.0),
    (Some("51-200"), 0.22, 0.20, 20.0),
    (Some("201-1000"), 0.15, 0.50, 90.0),
    (Some("1001-5000"), 0.08, 0.40, 500.0),
    (Some("5000+"), 0.05, 0.10, 3000.0),
    (None, 0.02, -0.20, 15.0),
];

const SENIORITIES: &[(&str, f64, f64)] = &[
    ("C-level", 0.07, 0.35),
    ("VP", 0.08, 0.50),
    ("Director", 0.15, 0.45),
    ("Manager", 0.27, 0.20),
    ("Individual contributor", 0.40, -0.20),
    ("Student", 0.03, -1.60),
];
const C_LEVEL: usize = 0;
const STUDENT: usize = 5;
/// Effect of the seniority (as in `SENIORITIES`) on the enterprise fit when segments differ:
/// seniority matters more, C-level most.
const ENTERPRISE_SENIORITY_EFFECTS: [f64; 6] = [0.90, 0.70, 0.30, -0.20, -0.70, -1.60];

/// Job functions (visible through the job title) and their effect on fit.
const FUNCTIONS: &[(f64, f64)] = &[
    (0.30, 0.30),  // marketing
    (0.18, 0.20),  // sales
    (0.16, 0.10),  // IT
    (0.12, 0.0),   // operations
    (0.08, 0.0),   // finance
    (0.10, -0.10), // engineering
    (0.06, -0.20), // people
];
/// Effect of the job function (as in `FUNCTIONS`) on the enterprise fit when segments differ:
/// IT, finance and operations buy; marketing and sales do not.
const ENTERPRISE_FUNCTION_EFFECTS: [f64; 7] = [-0.30, -0.20, 0.45, 0.25, 0.35, 0.15, -0.30];
/// Effect of a missing job title on the enterprise fit.
const ENTERPRISE_MISSING_TITLE_EFFECT: f64 = -0.30;
/// Effect of a missing revenue on the enterprise fit.
const ENTERPRISE_MISSING_REVENUE_EFFECT: f64 = -0.30;
/// The enterprise fit's industry and lead-source effects are those of `INDUSTRIES` and
/// `LEAD_SOURCES` times this.
const ENTERPRISE_REVERSAL: f64 = -2.5;

/// Job titles by seniority (rows, as in `SENIORITIES`) and function (columns).
const JOB_TITLES: [[&str; 7]; 6] = [
    [
        "Chief Marketing Officer",
        "Chief Revenue Officer",
        "Chief Information Officer",
        "Chief Operating Officer",
        "Chief Financial Officer",
        "Chief Technology Officer",
        "Chief People Officer",
    ],
    [
        "VP Marketing",
        "VP Sales",
        "VP IT",
        "VP Operations",
        "VP Finance",
        "VP Engineering",
        "VP People",
    ],
    [
        "Marketing Director",
        "Sales Director",
        "IT Director",
        "Operations Director",
        "Finance Director",
        "Engineering Director",
        "HR Director",
    ],
    [
        "Marketing Manager",
        "Sales Manager",
        "IT Manager",
        "Operations Manager",
        "Finance Manager",
        "Engineering Manager",
        "HR Manager",
    ],
    [
        "Marketing Specialist",
        "Account Executive",
        "Systems Administrator",
        "Operations Analyst",
        "Accountant",
        "Software Engineer",
        "Recruiter",
    ],
    ["Student"; 7],
];
/// Titles each rarer than 0.1 %; their function is unknown, so they carry no function effect.
const RARE_JOB_TITLES: &[&str] = &[
    "Chief Happiness Officer",
    "Growth Hacker",
    "Head of Digital Transformation",
    "Webmaster",
];
const RARE_TITLE_SHARE: f64 = 0.003;
const JOB_TITLE_MISSING_SHARE: f64 = 0.03;
const REVENUE_MISSING_SHARE: f64 = 0.05;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeadSource {
    OrganicSearch,
    PaidSearch,
    Referral,
    Webinar,
    TradeShow,
    ContentSyndication,
    Partner,
    ColdOutbound,
    Podcast,
}

/// (source, name, share, effect on fit).
const LEAD_SOURCES: &[(LeadSource, &str, f64, f64)] = &[
    (LeadSource::OrganicSearch, "organic search", 0.26, 0.10),
    (LeadSource::PaidSearch, "paid search", 0.20, 0.0),
    (
        LeadSource::ContentSyndication,
        "content syndication",
        0.14,
        -0.30,
    ),
    (LeadSource::ColdOutbound, "cold outbound", 0.13, -0.40),
    (LeadSource::Webinar, "webinar", 0.09, 0.30),
    (LeadSource::Referral, "referral", 0.07, 0.70),
    (LeadSource::TradeShow, "trade show", 0.05, 0.20),
    (LeadSource::Partner, "partner", 0.05, 0.50),
    (LeadSource::Podcast, "podcast", 0.0008, 0.0),
];

const LEAD_PROFILE_COLUMNS: &[(&str, &str)] = &[
    ("industry", "categorical"),
    ("employee_band", "categorical"),
    ("country", "categorical"),
    ("job_title", "categorical"),
    ("seniority", "categorical"),
    ("lead_source", "categorical"),
    ("annual_revenue_musd", "numeric"),
];
/// The profile column added when leads have segments.
const SEGMENT_COLUMNS: &[(&str, &str)] = &[("segment", "categorical")];
/// Share of enterprise leads when leads have segments.
const ENTERPRISE_SHARE: f64 = 0.4;

/// A lead's segment ([`Segments`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeadSegment {
    Enterprise,
    Smb,
}

impl LeadSegment {
    fn name(self) -> &'static str {
        match self {
            LeadSegment::Enterprise => "enterprise",
            LeadSegment::Smb => "smb",
        }
    }
}

#[derive(Debug, Clone)]
struct Lead {
    created_day: f64,
    created_ms: TimestampMs,
    industry: Option<&'static str>,
    employee_band: Option<&'static str>,
    country: Option<&'static str>,
    job_title: Option<&'static str>,
    seniority: Option<&'static str>,
    source: LeadSource,
    lead_source: &'static str,
    annual_revenue_musd: Option<f64>,
    /// Observable part of the score: a function of the written profile only.
    fit: f64,
    /// The same for enterprise leads when segments differ (other effects of the same fields).
    enterprise_fit: f64,
    /// Hidden multiplier of engagement rates (log-normal, correlated with fit).
    interest: f64,
    /// Set by [`CrmModel::sample_late`] when leads have segments.
    segment: Option<LeadSegment>,
}

/// Fraction of the span over which leads (and new customers) arrive.
const ARRIVAL_SHARE_OF_SPAN: f64 = 0.8;

struct LeadModel {
    timeline: Timeline,
    segments: Segments,
    industries: WeightedTable<Level>,
    countries: WeightedTable<Level>,
    bands: WeightedTable<(Level, f64)>,
    seniorities: WeightedTable<usize>,
    functions: WeightedTable<usize>,
    sources: WeightedTable<usize>,
    /// Webinars every two weeks, Thursdays 16:00.
    webinar_days: Vec<f64>,
}

impl LeadModel {
    fn new(timeline: Timeline, segments: Segments) -> LeadModel {
        let first_thursday = (0..7)
            .map(f64::from)
            .find(|&day| (timeline.start_weekday + day as i64).rem_euclid(7) == 3)
            .unwrap_or(0.0);
        let webinar_days = (0..)
            .map(|k| first_thursday + 14.0 * f64::from(k) + 16.0 / 24.0)
            .take_while(|&day| day < timeline.span_days)
            .collect();
        LeadModel {
            segments,
            industries: level_table(INDUSTRIES),
            countries: level_table(COUNTRIES),
            bands: WeightedTable::new(
                EMPLOYEE_BANDS
                    .iter()
                    .map(|&(name, share, effect, revenue)| {
                        ((Level { name, effect }, revenue), share)
                    }),
            ),
            seniorities: WeightedTable::new(SENIORITIES.iter().enumerate().map(|(i, s)| (i, s.1))),
            functions: WeightedTable::new(FUNCTIONS.iter().enumerate().map(|(i, f)| (i, f.0))),
            sources: WeightedTable::new(LEAD_SOURCES.iter().enumerate().map(|(i, s)| (i, s.2))),
            webinar_days,
            timeline,
        }
    }

    fn arrival_day(&self, rng: &mut StdRng) -> f64 {
        let last = self.timeline.span_days * ARRIVAL_SHARE_OF_SPAN;
        let mut day = uniform(rng, 0.0, last).floor();
        for _ in 0..16 {
            if !self.timeline.is_weekend(day) || chance(rng, 0.3) {
                break;
            }
            day = uniform(rng, 0.0, last).floor();
        }
        let hour = if chance(rng, 0.75) {
            uniform(rng, 8.0, 18.0)
        } else {
            uniform(rng, 0.0, 24.0)
        };
        day + hour / 24.0
    }
}

impl CrmModel for LeadModel {
    type Entity = Lead;
    const NAMING: Naming = Naming {
        task: "propensity",
        dataset: "synthetic-leads",
        id_prefix: 'L',
        id_column: "lead_id",
        entities_file: "leads.parquet",
        outcomes_file: "conversions.parquet",
        outcome_column: "converted_at",
        profile_columns: LEAD_PROFILE_COLUMNS,
        event_names: lead_event::NAMES,
        target_window_rate: 0.025,
    };

    fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    fn sample_entity(&self, rng: &mut StdRng) -> Lead {
        let created_day = self.arrival_day(rng);
        let (band, revenue_median) = self.bands.sample(rng);
        let industry = self.industries.sample(rng);
        let country = self.countries.sample(rng);
        let source_index = self.sources.sample(rng);
        let (source, lead_source, _, source_effect) = LEAD_SOURCES[source_index];
        let mut seniority_index = self.seniorities.sample(rng);
        if band.name == Some("1-10") && chance(rng, 0.25) {
            seniority_index = C_LEVEL; // founders
        }
        let function_index = self.functions.sample(rng);
        let enterprise_seniority_effect = ENTERPRISE_SENIORITY_EFFECTS[seniority_index];
        let (job_title, seniority, title_effect, enterprise_title_effect) =
            if chance(rng, JOB_TITLE_MISSING_SHARE) {
                (None, None, -0.10, ENTERPRISE_MISSING_TITLE_EFFECT)
            } else if seniority_index != STUDENT && chance(rng, RARE_TITLE_SHARE) {
                let title = RARE_JOB_TITLES[rng.random_range(0..RARE_JOB_TITLES.len())];
                let (name, _, effect) = SENIORITIES[seniority_index];
                (Some(title), Some(name), effect, enterprise_seniority_effect)
            } else {
                let (name, _, effect) = SENIORITIES[seniority_index];
                let title = JOB_TITLES[seniority_index][function_index];
                (
                    Some(title),
                    Some(name),
                    effect + FUNCTIONS[function_index].1,
                    enterprise_seniority_effect + ENTERPRISE_FUNCTION_EFFECTS[function_index],
                )
            };
        let annual_revenue_musd = if chance(rng, REVENUE_MISSING_SHARE) {
            None
        } else {
            let sigma = if band.name.is_some() { 0.8 } else { 1.5 };
            Some(round_to(
                log_normal(rng, revenue_median, sigma).max(0.01),
                2,
            ))
        };
        let revenue_effect = annual_revenue_musd.map_or(0.0, |revenue| {
            0.25 * ((revenue.ln() - 20f64.ln()) / 1.5).tanh()
        });
        let fit = industry.effect
            + band.effect
            + country.effect
            + source_effect
            + title_effect
            + revenue_effect;
        // Enterprise buyers: industry and source effects reversed and stronger, other
        // seniorities and functions, revenue much stronger, no country or band effect.
        let enterprise_revenue_effect = annual_revenue_musd
            .map_or(ENTERPRISE_MISSING_REVENUE_EFFECT, |revenue| {
                0.9 * ((revenue.ln() - 100f64.ln()) / 1.5).tanh()
            });
        let enterprise_fit = ENTERPRISE_REVERSAL * (industry.effect + source_effect)
            + enterprise_title_effect
            + enterprise_revenue_effect;
        let latent = 0.45 * fit + 0.9 * standard_normal(rng);
        Lead {
            created_day,
            created_ms: self.timeline.ms(created_day),
            industry: industry.name,
            employee_band: band.name,
            country: country.name,
            job_title,
            seniority,
            source,
            lead_source,
            annual_revenue_musd,
            fit,
            enterprise_fit,
            interest: (0.7 * latent).exp(),
            segment: None,
        }
    }

    fn sample_late(&self, lead: &mut Lead, rng: &mut StdRng) {
        if self.segments.is_on() {
            lead.segment = Some(if chance(rng, ENTERPRISE_SHARE) {
                LeadSegment::Enterprise
            } else {
                LeadSegment::Smb
            });
        }
    }

    fn created_ms(&self, lead: &Lead) -> TimestampMs {
        lead.created_ms
    }

    fn simulate_events(
        &self,
        lead: &Lead,
        rate_scale: f64,
        rng: &mut StdRng,
        out: &mut Vec<SimEvent>,
    ) {
        let mut simulation = LeadSimulation {
            model: self,
            lead,
            rate_scale,
            rng,
            out,
            pending_visits: BinaryHeap::new(),
            visits: 0,
            demo_requests: 0,
            last_demo_day: f64::NEG_INFINITY,
            sequence: 0,
        };
        simulation.run();
    }

    fn score(&self, lead: &Lead, events_before: &[SimEvent], cutoff_ms: TimestampMs) -> f64 {
        let formula = match (self.segments, lead.segment) {
            (Segments::Differ, Some(LeadSegment::Enterprise)) => LeadSegment::Enterprise,
            _ => LeadSegment::Smb,
        };
        lead_score(formula, lead, events_before, cutoff_ms)
    }

    fn entity_frame(&self, ids: Column, leads: &[Lead]) -> Result<DataFrame, PolarsError> {
        let text = |name: &str, values: Vec<Option<&'static str>>| Column::new(name.into(), values);
        let mut columns = vec![
            ids,
            datetime_column(
                "created_at",
                leads.iter().map(|lead| lead.created_ms).collect(),
            ),
            text("industry", leads.iter().map(|lead| lead.industry).collect()),
            text(
                "employee_band",
                leads.iter().map(|lead| lead.employee_band).collect(),
            ),
            text("country", leads.iter().map(|lead| lead.country).collect()),
            text(
                "job_title",
                leads.iter().map(|lead| lead.job_title).collect(),
            ),
            text(
                "seniority",
                leads.iter().map(|lead| lead.seniority).collect(),
            ),
            text(
                "lead_source",
                leads.iter().map(|lead| Some(lead.lead_source)).collect(),
            ),
            Column::new(
                "annual_revenue_musd".into(),
                leads
                    .iter()
                    .map(|lead| lead.annual_revenue_musd)
                    .collect::<Vec<_>>(),
            ),
        ];
        if self.segments.is_on() {
            columns.push(text(
                "segment",
                leads
                    .iter()
                    .map(|lead| lead.segment.map(LeadSegment::name))
                    .collect(),
            ));
        }
        DataFrame::new_infer_height(columns)
    }

    fn extra_profile_columns(&self) -> &'static [(&'static str, &'static str)] {
        if self.segments.is_on() {
            SEGMENT_COLUMNS
        } else {
            &[]
        }
    }

    fn has_segments(&self) -> bool {
        self.segments.is_on()
    }

    fn segment(&self, lead: &Lead) -> Option<&'static str> {
        lead.segment.map(LeadSegment::name)
    }

    fn calibration_groups(&self) -> &'static [&'static str] {
        match self.segments {
            Segments::Differ => &["smb", "enterprise"],
            Segments::None | Segments::Alike => &[""],
        }
    }

    fn calibration_group(&self, lead: &Lead) -> usize {
        match (self.segments, lead.segment) {
            (Segments::Differ, Some(LeadSegment::Enterprise)) => 1,
            _ => 0,
        }
    }
}

/// The hidden score of a lead (without the intercept) by the formula of `formula`'s segment,
/// whatever the lead's own segment: [`LeadSegment::Smb`] is the formula of leads without
/// segments, [`LeadSegment::Enterprise`] that of enterprise leads when segments differ.
fn lead_score(
    formula: LeadSegment,
    lead: &Lead,
    events_before: &[SimEvent],
    cutoff_ms: TimestampMs,
) -> f64 {
    match formula {
        LeadSegment::Smb => smb_lead_score(lead, events_before, cutoff_ms),
        LeadSegment::Enterprise => enterprise_lead_score(lead, events_before, cutoff_ms),
    }
}

/// The score of leads without segments (and of smb leads).
fn smb_lead_score(lead: &Lead, events_before: &[SimEvent], cutoff_ms: TimestampMs) -> f64 {
    let mut engagement = 0.0;
    let mut unsubscribed = false;
    let mut bounced = false;
    let mut recent_demo = false;
    for event in events_before {
        let age_days = days_between(event.ts_ms, cutoff_ms);
        engagement += lead_event::engagement_weight(event.kind, event.value)
            * half_life_decay(age_days, ENGAGEMENT_HALF_LIFE_DAYS);
        match event.kind {
            lead_event::UNSUBSCRIBE => unsubscribed = true,
            lead_event::BOUNCE => bounced = true,
            lead_event::DEMO_REQUEST if age_days < 30.0 => recent_demo = true,
            _ => {}
        }
    }
    let log_engagement = engagement.ln_1p();
    let lead_age_days = days_between(lead.created_ms, cutoff_ms);
    lead.fit + 0.8 * log_engagement + 0.3 * lead.fit * log_engagement
        - 0.3 * (lead_age_days / 30.0).ln_1p()
        - if unsubscribed { 1.0 } else { 0.0 }
        - if bounced { 0.6 } else { 0.0 }
        + if recent_demo { 0.5 } else { 0.0 }
}

/// The score of enterprise leads when segments differ (see the module documentation).
fn enterprise_lead_score(lead: &Lead, events_before: &[SimEvent], cutoff_ms: TimestampMs) -> f64 {
    let mut intent = 0.0;
    let mut activity = 0.0;
    let mut unsubscribed = false;
    let mut bounced = false;
    let mut recent_webinar = false;
    for event in events_before {
        let age_days = days_between(event.ts_ms, cutoff_ms);
        intent += lead_event::enterprise_intent_weight(event.kind, event.value)
            * half_life_decay(age_days, ENTERPRISE_ENGAGEMENT_HALF_LIFE_DAYS);
        activity += lead_event::enterprise_activity_weight(event.kind)
            * half_life_decay(age_days, ENGAGEMENT_HALF_LIFE_DAYS);
        match event.kind {
            lead_event::UNSUBSCRIBE => unsubscribed = true,
            lead_event::BOUNCE => bounced = true,
            lead_event::WEBINAR_ATTENDANCE if age_days < 60.0 => recent_webinar = true,
            _ => {}
        }
    }
    let log_intent = intent.ln_1p();
    let lead_months = days_between(lead.created_ms, cutoff_ms) / 30.0;
    let fit = lead.enterprise_fit;
    fit + 1.2 * log_intent + 0.15 * fit * log_intent - 2.5 * activity.ln_1p()
        + 1.5 * lead_months.ln_1p()
        - 0.25 * lead_months
        - if unsubscribed { 0.3 } else { 0.0 }
        - if bounced { 0.6 } else { 0.0 }
        + if recent_webinar { 0.6 } else { 0.0 }
}

/// Half-life of the recency weighting of engagement in the ground truth.
const ENGAGEMENT_HALF_LIFE_DAYS: f64 = 14.0;
/// The same for enterprise leads when segments differ: longer buying cycles.
const ENTERPRISE_ENGAGEMENT_HALF_LIFE_DAYS: f64 = 45.0;
/// Half-life of a lead's engagement as it ages.
const LEAD_INTEREST_HALF_LIFE_DAYS: f64 = 45.0;
/// Consecutive unopened emails after which marketing stops emailing a lead.
const SUNSET_AFTER_UNOPENED: u32 = 8;
/// Safety cap on a lead's web visits (the branching ratio is below one, so bursts end).
const MAX_VISITS_PER_LEAD: u32 = 400;
const MINUTE_DAYS: f64 = 1.0 / 1440.0;
const SECOND_DAYS: f64 = 1.0 / 86_400.0;

/// A web visit waiting to be simulated, ordered by time (then creation order).
#[derive(Debug, Clone, Copy)]
struct PendingVisit {
    day: f64,
    sequence: u64,
    channel: &'static str,
}

impl PartialEq for PendingVisit {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for PendingVisit {}
impl PartialOrd for PendingVisit {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for PendingVisit {
    /// Reversed, so that `BinaryHeap` pops the earliest visit first.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .day
            .total_cmp(&self.day)
            .then(other.sequence.cmp(&self.sequence))
    }
}

struct LeadSimulation<'a> {
    model: &'a LeadModel,
    lead: &'a Lead,
    rate_scale: f64,
    rng: &'a mut StdRng,
    out: &'a mut Vec<SimEvent>,
    pending_visits: BinaryHeap<PendingVisit>,
    visits: u32,
    demo_requests: u32,
    last_demo_day: f64,
    sequence: u64,
}

impl LeadSimulation<'_> {
    fn run(&mut self) {
        self.creation_event();
        let emails_until = self.emails();
        self.webinars(emails_until);
        self.baseline_visits();
        self.process_visits();
    }

    fn push(&mut self, day: f64, kind: u8, channel: Option<&'static str>, value: Option<f64>) {
        if day < self.lead.created_day || day >= self.model.timeline.span_days {
            return;
        }
        self.out.push(SimEvent {
            ts_ms: self.model.timeline.ms(day),
            kind,
            channel,
            value,
        });
    }

    fn schedule_visit(&mut self, day: f64, channel: &'static str) {
        if day < self.model.timeline.span_days {
            self.sequence += 1;
            self.pending_visits.push(PendingVisit {
                day,
                sequence: self.sequence,
                channel,
            });
        }
    }

    /// Spawns `mean` follow-up visits on average, each after an exponential delay.
    fn spawn_visits(&mut self, day: f64, mean: f64, mean_delay_days: f64) {
        let children = poisson(self.rng, mean);
        for _ in 0..children {
            let delay = exponential(self.rng, mean_delay_days);
            self.schedule_visit(day + delay, "web");
        }
    }

    /// Engagement multiplier falling from 1 as the lead ages, to a floor of 0.15.
    fn age_factor(&self, day: f64) -> f64 {
        let age = (day - self.lead.created_day).max(0.0);
        0.15 + 0.85 * half_life_decay(age, LEAD_INTEREST_HALF_LIFE_DAYS)
    }

    fn call_minutes(&mut self, median: f64) -> Option<f64> {
        Some(round_to(
            log_normal(self.rng, median, 0.5).clamp(1.0, 120.0),
            1,
        ))
    }

    /// The event that created the lead, by source.
    fn creation_event(&mut self) {
        let day = self.lead.created_day + uniform(self.rng, 0.0, 60.0) * SECOND_DAYS;
        match self.lead.source {
            LeadSource::OrganicSearch
            | LeadSource::Referral
            | LeadSource::Partner
            | LeadSource::Podcast => {
                self.push(day, lead_event::FORM_SUBMIT, Some("web"), None);
            }
            LeadSource::PaidSearch => {
                self.push(day, lead_event::FORM_SUBMIT, Some("paid_search"), None)
            }
            // Downloaded on a third-party site: no channel of ours.
            LeadSource::ContentSyndication => {
                self.push(day, lead_event::CONTENT_DOWNLOAD, None, None)
            }
            LeadSource::Webinar => {
                self.push(day, lead_event::WEBINAR_REGISTRATION, Some("events"), None)
            }
            LeadSource::ColdOutbound => {
                let minutes = self.call_minutes(4.0);
                self.push(day, lead_event::SALES_CALL, Some("sales"), minutes);
            }
            LeadSource::TradeShow => {
                if chance(self.rng, 0.5) {
                    let timeline = &self.model.timeline;
                    let from = self.lead.created_day + 1.0;
                    let call_day = timeline.working_moment(self.rng, from, from + 5.0);
                    let minutes = self.call_minutes(12.0);
                    self.push(call_day, lead_event::SALES_CALL, Some("sales"), minutes);
                }
            }
        }
    }

    /// The marketing email stream; returns the day emails stop.
    fn emails(&mut self) -> f64 {
        let timeline = &self.model.timeline;
        let span = timeline.span_days;
        let interest = self.lead.interest;
        let mut send_day = self.lead.created_day + uniform(self.rng, 0.02, 1.0);
        let mut sends = 0u32;
        let mut unopened_in_a_row = 0u32;
        while send_day < span {
            self.push(send_day, lead_event::EMAIL_SENT, Some("email"), None);
            let bounce_probability = if sends == 0 { 0.025 } else { 0.0008 };
            if chance(self.rng, bounce_probability) {
                let bounce_day = send_day + uniform(self.rng, 1.0, 300.0) * SECOND_DAYS;
                self.push(bounce_day, lead_event::BOUNCE, Some("email"), None);
                return send_day;
            }
            let open_probability =
                (0.24 * interest.powf(0.8) * self.age_factor(send_day).sqrt()).clamp(0.01, 0.85);
            if chance(self.rng, open_probability) {
                unopened_in_a_row = 0;
                let open_day = send_day + log_normal(self.rng, 2.0 / 24.0, 1.3).min(5.0);
                self.push(open_day, lead_event::EMAIL_OPEN, Some("email"), None);
                if chance(self.rng, (0.12 * interest.sqrt()).clamp(0.0, 0.6)) {
                    let click_day = open_day + uniform(self.rng, 5.0, 180.0) * SECOND_DAYS;
                    self.push(click_day, lead_event::EMAIL_CLICK, Some("email"), None);
                    let landing_day = click_day + uniform(self.rng, 2.0, 30.0) * SECOND_DAYS;
                    self.schedule_visit(landing_day, "email");
                }
                if chance(self.rng, (0.01 / interest.powf(0.7)).min(0.1)) {
                    let unsubscribe_day = open_day + uniform(self.rng, 0.5, 5.0) * MINUTE_DAYS;
                    self.push(
                        unsubscribe_day,
                        lead_event::UNSUBSCRIBE,
                        Some("email"),
                        None,
                    );
                    return send_day;
                }
            } else {
                unopened_in_a_row += 1;
                if unopened_in_a_row >= SUNSET_AFTER_UNOPENED {
                    return send_day;
                }
            }
            sends += 1;
            // Weekly at first, less often as the lead ages.
            let age = send_day - self.lead.created_day;
            let interval = (7.0 * (1.0 + age / 90.0) / self.rate_scale).max(1.0);
            let next_day =
                timeline.next_weekday(send_day + interval * uniform(self.rng, 0.85, 1.15));
            send_day = next_day + uniform(self.rng, 9.0, 12.0) / 24.0;
        }
        span
    }

    /// Webinar invitations go out by email while the lead receives emails.
    fn webinars(&mut self, emails_until: f64) {
        let interest = self.lead.interest;
        let created = self.lead.created_day;
        let mut registered_at_creation = self.lead.source == LeadSource::Webinar;
        for index in 0..self.model.webinar_days.len() {
            let webinar_day = self.model.webinar_days[index];
            if webinar_day <= created {
                continue;
            }
            let registered = if registered_at_creation {
                registered_at_creation = false;
                true
            } else {
                let invited = webinar_day - 10.0 > created && webinar_day - 10.0 < emails_until;
                let probability = (0.035 * interest * self.age_factor(webinar_day - 5.0)).min(0.5);
                if invited && chance(self.rng, probability) {
                    let day = webinar_day - uniform(self.rng, 0.2, 9.0);
                    self.push(day, lead_event::WEBINAR_REGISTRATION, Some("email"), None);
                    true
                } else {
                    false
                }
            };
            if registered && chance(self.rng, (0.4 * interest.powf(0.3)).min(0.8)) {
                let day = webinar_day + uniform(self.rng, 0.0, 10.0) * MINUTE_DAYS;
                let minutes = round_to(log_normal(self.rng, 35.0, 0.4).min(60.0), 0);
                self.push(
                    day,
                    lead_event::WEBINAR_ATTENDANCE,
                    Some("events"),
                    Some(minutes),
                );
                self.spawn_visits(day, 0.8, 1.0);
            }
        }
    }

    /// Visits not triggered by our events: an inhomogeneous Poisson process (by thinning)
    /// following the lead's interest, its age and office hours.
    fn baseline_visits(&mut self) {
        let timeline = &self.model.timeline;
        let peak_rate = 0.08 * self.rate_scale * self.lead.interest;
        if peak_rate.is_nan() || peak_rate <= 0.0 {
            return;
        }
        let mut day = self.lead.created_day;
        loop {
            day += exponential(self.rng, 1.0 / peak_rate);
            if day >= timeline.span_days {
                return;
            }
            let hour = day.fract() * 24.0;
            let office = if timeline.is_weekend(day) { 0.35 } else { 1.0 }
                * if (8.0..19.0).contains(&hour) {
                    1.0
                } else {
                    0.25
                };
            if chance(self.rng, self.age_factor(day) * office) {
                let channel = match self.rng.random::<f64>() {
                    u if u < 0.55 => "web",
                    u if u < 0.80 => "paid_search",
                    _ => "social",
                };
                self.schedule_visit(day, channel);
            }
        }
    }

    /// Visits in time order; each may lead to more events and spawns follow-up visits
    /// (the self-exciting part).
    fn process_visits(&mut self) {
        let interest = self.lead.interest;
        let branching = (0.45 * interest.powf(0.3)).min(0.85);
        while let Some(visit) = self.pending_visits.pop() {
            if self.visits >= MAX_VISITS_PER_LEAD {
                break;
            }
            self.visits += 1;
            let day = visit.day;
            let seconds = round_to(
                log_normal(self.rng, 40.0 * interest.powf(0.3), 1.1).clamp(1.0, 3600.0),
                0,
            );
            self.push(
                day,
                lead_event::WEB_VISIT,
                Some(visit.channel),
                Some(seconds),
            );
            let within_visit =
                |rng: &mut StdRng| day + uniform(rng, 3.0, seconds.max(4.0)) * SECOND_DAYS;
            let saw_pricing = chance(self.rng, (0.07 * interest.powf(0.8)).min(0.5));
            if saw_pricing {
                let at = within_visit(self.rng);
                self.push(at, lead_event::PRICING_PAGE_VIEW, Some("web"), None);
            }
            if chance(self.rng, (0.04 * interest.sqrt()).min(0.3)) {
                let at = within_visit(self.rng);
                self.push(at, lead_event::CONTENT_DOWNLOAD, Some("web"), None);
                self.spawn_visits(at, 0.5, 0.5);
            }
            if chance(self.rng, (0.012 * interest).min(0.2)) {
                let at = within_visit(self.rng);
                self.push(at, lead_event::FORM_SUBMIT, Some("web"), None);
            }
            let demo_base = if saw_pricing { 0.05 } else { 0.003 };
            if self.demo_requests < 2
                && day - self.last_demo_day > 21.0
                && chance(self.rng, (demo_base * interest.powf(1.2)).min(0.4))
            {
                let at = within_visit(self.rng);
                self.push(at, lead_event::DEMO_REQUEST, Some("web"), None);
                self.demo_requests += 1;
                self.last_demo_day = at;
                self.sales_follow_up(at);
            }
            self.spawn_visits(day, branching, 0.2);
        }
    }

    fn sales_follow_up(&mut self, demo_day: f64) {
        let timeline = &self.model.timeline;
        if chance(self.rng, 0.9) {
            let after = demo_day + log_normal(self.rng, 1.0, 0.6);
            let first_call = timeline.working_moment(self.rng, after, after + 1.0);
            let minutes = self.call_minutes(30.0);
            self.push(first_call, lead_event::SALES_CALL, Some("sales"), minutes);
            if chance(self.rng, 0.55) {
                let after = first_call + uniform(self.rng, 3.0, 14.0);
                let second_call = timeline.working_moment(self.rng, after, after + 1.0);
                let minutes = self.call_minutes(40.0);
                self.push(second_call, lead_event::SALES_CALL, Some("sales"), minutes);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Customers
// ---------------------------------------------------------------------------------------------

mod customer_event {
    pub const LOGIN: u8 = 0;
    pub const FEATURE_USE: u8 = 1;
    pub const SUPPORT_TICKET: u8 = 2;
    pub const TICKET_RESOLVED: u8 = 3;
    pub const BILLING_PAID: u8 = 4;
    pub const BILLING_FAILED: u8 = 5;
    pub const PLAN_UPGRADE: u8 = 6;
    pub const PLAN_DOWNGRADE: u8 = 7;
    pub const SEAT_REMOVED: u8 = 8;

    pub const NAMES: &[&str] = &[
        "login",
        "feature_use",
        "support_ticket",
        "ticket_resolved",
        "billing_paid",
        "billing_failed",
        "plan_upgrade",
        "plan_downgrade",
        "seat_removed",
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Plan {
    Starter,
    Pro,
    Enterprise,
}

impl Plan {
    fn name(self) -> &'static str {
        match self {
            Plan::Starter => "starter",
            Plan::Pro => "pro",
            Plan::Enterprise => "enterprise",
        }
    }

    fn price_per_seat(self) -> f64 {
        match self {
            Plan::Starter => 12.0,
            Plan::Pro => 29.0,
            Plan::Enterprise => 55.0,
        }
    }

    /// Monthly fee with a volume discount, to the cent.
    fn monthly_fee(self, seats: i64) -> f64 {
        let seats = seats.max(1) as f64;
        round_to(seats * self.price_per_seat() * seats.powf(-0.05), 2)
    }

    fn upgraded(self) -> Plan {
        match self {
            Plan::Starter => Plan::Pro,
            Plan::Pro | Plan::Enterprise => Plan::Enterprise,
        }
    }

    fn downgraded(self) -> Plan {
        match self {
            Plan::Enterprise => Plan::Pro,
            Plan::Pro | Plan::Starter => Plan::Starter,
        }
    }
}

const CUSTOMER_PROFILE_COLUMNS: &[(&str, &str)] = &[
    ("plan", "categorical"),
    ("industry", "categorical"),
    ("country", "categorical"),
    ("seats", "numeric"),
    ("monthly_fee", "numeric"),
];
const PREEXISTING_CUSTOMER_SHARE: f64 = 0.4;

#[derive(Debug, Clone)]
struct Customer {
    created_day: f64,
    created_ms: TimestampMs,
    plan: Plan,
    industry: Option<&'static str>,
    country: Option<&'static str>,
    seats: i64,
    monthly_fee: f64,
    /// Hidden long-run health level; weekly health drifts around it.
    health_level: f64,
}

struct CustomerModel {
    timeline: Timeline,
    plans: WeightedTable<Plan>,
    industries: WeightedTable<Level>,
    countries: WeightedTable<Level>,
}

impl CustomerModel {
    fn new(timeline: Timeline) -> CustomerModel {
        CustomerModel {
            timeline,
            plans: WeightedTable::new([
                (Plan::Starter, 0.58),
                (Plan::Pro, 0.32),
                (Plan::Enterprise, 0.10),
            ]),
            industries: level_table(INDUSTRIES),
            countries: level_table(COUNTRIES),
        }
    }

    /// Billing days (since start) from the month after signup, on the signup day of month
    /// (at most the 28th), inside `[from, span)`.
    fn billing_days(&self, customer: &Customer, from: f64) -> Vec<f64> {
        let timeline = &self.timeline;
        let signup = timeline.date_of(customer.created_day);
        let day_of_month = signup.day().min(28);
        let Some(first_of_month) = signup.with_day(1) else {
            return Vec::new();
        };
        let mut days = Vec::new();
        for months in 1u32.. {
            let Some(date) = first_of_month
                .checked_add_months(Months::new(months))
                .and_then(|month| month.with_day(day_of_month))
            else {
                break;
            };
            let day = timeline.day_of(date) + BILLING_HOUR / 24.0;
            if day >= timeline.span_days {
                break;
            }
            if day >= from {
                days.push(day);
            }
        }
        days
    }
}

/// Billing runs start at 03:00.
const BILLING_HOUR: f64 = 3.0;

/// A customer's changing account state during its simulation.
struct Account {
    plan: Plan,
    seats: i64,
    fee: f64,
}

impl CrmModel for CustomerModel {
    type Entity = Customer;
    const NAMING: Naming = Naming {
        task: "churn",
        dataset: "synthetic-customers",
        id_prefix: 'C',
        id_column: "customer_id",
        entities_file: "customers.parquet",
        outcomes_file: "churn.parquet",
        outcome_column: "churned_at",
        profile_columns: CUSTOMER_PROFILE_COLUMNS,
        event_names: customer_event::NAMES,
        target_window_rate: 0.02,
    };

    fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    fn sample_entity(&self, rng: &mut StdRng) -> Customer {
        let timeline = &self.timeline;
        let signup_window = if chance(rng, PREEXISTING_CUSTOMER_SHARE) {
            -f64::from(CUSTOMER_HISTORY_DAYS)..0.0
        } else {
            0.0..timeline.span_days * ARRIVAL_SHARE_OF_SPAN
        };
        let created_day = timeline.working_moment(rng, signup_window.start, signup_window.end);
        let plan = self.plans.sample(rng);
        let seats = match plan {
            Plan::Starter => (1.0 + log_normal(rng, 1.5, 0.7)).clamp(1.0, 10.0),
            Plan::Pro => log_normal(rng, 12.0, 0.7).clamp(3.0, 250.0),
            Plan::Enterprise => log_normal(rng, 150.0, 0.9).clamp(25.0, 20_000.0),
        }
        .floor() as i64;
        let plan_level = match plan {
            Plan::Starter => 0.0,
            Plan::Pro => 0.2,
            Plan::Enterprise => 0.4,
        };
        Customer {
            created_day,
            created_ms: timeline.ms(created_day),
            plan,
            industry: self.industries.sample(rng).name,
            country: self.countries.sample(rng).name,
            seats,
            monthly_fee: plan.monthly_fee(seats),
            health_level: plan_level + 0.6 * standard_normal(rng),
        }
    }

    fn created_ms(&self, customer: &Customer) -> TimestampMs {
        customer.created_ms
    }

    fn simulate_events(
        &self,
        customer: &Customer,
        rate_scale: f64,
        rng: &mut StdRng,
        out: &mut Vec<SimEvent>,
    ) {
        let first_day = customer.created_day.max(0.0);
        let mut simulation = CustomerSimulation {
            timeline: &self.timeline,
            first_day,
            rate_scale,
            rng,
            out,
            account: Account {
                plan: customer.plan,
                seats: customer.seats,
                fee: customer.monthly_fee,
            },
            health: 0.0,
            shock: 0.0,
        };
        simulation.run(customer, &self.billing_days(customer, first_day));
    }

    fn score(
        &self,
        customer: &Customer,
        events_before: &[SimEvent],
        cutoff_ms: TimestampMs,
    ) -> f64 {
        use customer_event::*;
        let mut usage = 0.0;
        let mut last_login_ms = None;
        let mut billing_failures = 0.0;
        let mut last_billing_failed = false;
        let mut tickets = 0i64;
        let mut resolved = 0i64;
        let mut downgrades = 0.0;
        let mut seats_removed = 0.0;
        let mut upgrades = 0.0;
        for event in events_before {
            let age_days = days_between(event.ts_ms, cutoff_ms);
            match event.kind {
                LOGIN => {
                    usage += half_life_decay(age_days, ENGAGEMENT_HALF_LIFE_DAYS);
                    last_login_ms = Some(event.ts_ms);
                }
                FEATURE_USE => usage += 0.5 * half_life_decay(age_days, ENGAGEMENT_HALF_LIFE_DAYS),
                SUPPORT_TICKET => tickets += 1,
                TICKET_RESOLVED => resolved += 1,
                BILLING_PAID => last_billing_failed = false,
                BILLING_FAILED => {
                    last_billing_failed = true;
                    billing_failures += half_life_decay(age_days, 10.0);
                }
                PLAN_DOWNGRADE => downgrades += half_life_decay(age_days, 30.0),
                PLAN_UPGRADE => upgrades += half_life_decay(age_days, 60.0),
                SEAT_REMOVED => {
                    seats_removed += event.value.unwrap_or(1.0) * half_life_decay(age_days, 30.0);
                }
                _ => {}
            }
        }
        let timeline = &self.timeline;
        // Without a login in the export, inactivity counts from the export's start.
        let inactive_since = last_login_ms.unwrap_or(customer.created_ms.max(timeline.start_ms));
        let inactive = days_between(inactive_since, cutoff_ms) > 21.0;
        let relative_usage = usage / (1.0 + 0.4 * (customer.seats.max(1) as f64).ln());
        let low_usage_risk = 2.0 / (1.0 + relative_usage.ln_1p());
        let plan_effect = match customer.plan {
            Plan::Starter => 0.2 * low_usage_risk,
            Plan::Pro => -0.2,
            Plan::Enterprise => -0.6,
        };
        let open_tickets = (tickets - resolved).clamp(0, 5) as f64;
        let tenure_months = days_between(customer.created_ms, cutoff_ms) / 30.44;
        CUSTOMER_SIGNAL_SCALE
            * (plan_effect
                + low_usage_risk
                + if inactive { 0.5 } else { 0.0 }
                + if last_billing_failed { 1.2 } else { 0.0 }
                + 0.5 * (3.0 * billing_failures).ln_1p()
                + 0.35 * open_tickets
                + 0.9 * downgrades
                + 0.3 * seats_removed.ln_1p()
                - 0.6 * upgrades
                - 0.25 * tenure_months.ln_1p())
    }

    fn entity_frame(&self, ids: Column, customers: &[Customer]) -> Result<DataFrame, PolarsError> {
        DataFrame::new_infer_height(vec![
            ids,
            datetime_column(
                "created_at",
                customers.iter().map(|c| c.created_ms).collect(),
            ),
            Column::new(
                "plan".into(),
                customers.iter().map(|c| c.plan.name()).collect::<Vec<_>>(),
            ),
            Column::new(
                "industry".into(),
                customers.iter().map(|c| c.industry).collect::<Vec<_>>(),
            ),
            Column::new(
                "country".into(),
                customers.iter().map(|c| c.country).collect::<Vec<_>>(),
            ),
            Column::new(
                "seats".into(),
                customers.iter().map(|c| c.seats).collect::<Vec<_>>(),
            ),
            Column::new(
                "monthly_fee".into(),
                customers.iter().map(|c| c.monthly_fee).collect::<Vec<_>>(),
            ),
        ])
    }
}

/// A customer's weekly health path and the events it drives.
struct CustomerSimulation<'a> {
    timeline: &'a Timeline,
    /// Events are logged from the later of signup and the export's start.
    first_day: f64,
    rate_scale: f64,
    rng: &'a mut StdRng,
    out: &'a mut Vec<SimEvent>,
    account: Account,
    /// This week's health.
    health: f64,
    /// Transient health loss after a failed payment.
    shock: f64,
}

impl CustomerSimulation<'_> {
    fn run(&mut self, customer: &Customer, billing_days: &[f64]) {
        let span = self.timeline.span_days;
        let mut next_billing = 0;
        let mut drift = 0.7 * standard_normal(self.rng);
        let mut week_start = self.first_day;
        while week_start < span {
            drift = 0.97 * drift + 0.17 * standard_normal(self.rng);
            self.shock *= 0.85;
            self.health = customer.health_level + drift + self.shock;
            let week_end = week_start + 7.0;
            while next_billing < billing_days.len() && billing_days[next_billing] < week_end {
                self.renewal(billing_days[next_billing]);
                next_billing += 1;
            }
            self.usage(week_start, week_end);
            let seats_factor = 1.0 + 0.25 * (self.account.seats as f64).ln();
            let tickets_per_day = 0.012 * seats_factor * (-0.5 * self.health).exp();
            for _ in 0..poisson(self.rng, 7.0 * tickets_per_day) {
                let day = self.timeline.working_moment(self.rng, week_start, week_end);
                let priority = match self.rng.random::<f64>() {
                    u if u < 0.5 => 1,
                    u if u < 0.85 => 2,
                    _ => 3,
                };
                self.support_ticket(day, priority);
            }
            week_start = week_end;
        }
    }

    fn push(&mut self, day: f64, kind: u8, channel: Option<&'static str>, value: Option<f64>) {
        if day >= self.first_day && day < self.timeline.span_days {
            self.out.push(SimEvent {
                ts_ms: self.timeline.ms(day),
                kind,
                channel,
                value,
            });
        }
    }

    /// Logins (more with seats and health), each followed by some feature use.
    fn usage(&mut self, week_start: f64, week_end: f64) {
        let seats_factor = 1.0 + 0.4 * (self.account.seats as f64).ln();
        let logins_per_day = self.rate_scale * 0.5 * seats_factor * (0.9 * self.health - 0.4).exp();
        for _ in 0..poisson(self.rng, 7.0 * logins_per_day) {
            let day = self.timeline.working_moment(self.rng, week_start, week_end);
            let channel = if chance(self.rng, 0.75) {
                "web"
            } else {
                "mobile"
            };
            self.push(day, customer_event::LOGIN, Some(channel), None);
            for _ in 0..poisson(self.rng, 0.9) {
                let use_day = day + uniform(self.rng, 1.0, 60.0) * MINUTE_DAYS;
                let minutes = round_to(log_normal(self.rng, 8.0, 0.9).min(480.0), 1);
                self.push(
                    use_day,
                    customer_event::FEATURE_USE,
                    Some(channel),
                    Some(minutes),
                );
            }
        }
    }

    /// Monthly billing (failing more often when health is low, with up to three retries) and
    /// the plan and seat changes made around it.
    fn renewal(&mut self, billing_day: f64) {
        use customer_event::{
            BILLING_FAILED, BILLING_PAID, PLAN_DOWNGRADE, PLAN_UPGRADE, SEAT_REMOVED,
        };
        let health = self.health;
        let day = billing_day + uniform(self.rng, 0.0, 1.0) / 24.0;
        let fee = Some(self.account.fee);
        if chance(self.rng, 0.02 + 0.10 * sigmoid(-2.0 * health - 2.0)) {
            self.push(day, BILLING_FAILED, None, fee);
            self.shock -= 0.2;
            if chance(self.rng, 0.3) {
                let ticket_day = day + uniform(self.rng, 0.1, 2.0);
                self.support_ticket(ticket_day, 2);
            }
            let retry_success = if health < -1.0 { 0.35 } else { 0.6 };
            let mut retry_day = day;
            for _ in 0..3 {
                retry_day += 3.0;
                if chance(self.rng, retry_success) {
                    self.push(retry_day, BILLING_PAID, None, fee);
                    break;
                }
                self.push(retry_day, BILLING_FAILED, None, fee);
            }
        } else {
            self.push(day, BILLING_PAID, None, fee);
        }
        let change_day = self.timeline.working_moment(self.rng, day + 0.3, day + 3.0);
        let plan = self.account.plan;
        if plan != Plan::Enterprise && chance(self.rng, 0.012 * (0.7 * health).exp()) {
            let channel = if plan == Plan::Starter {
                "web"
            } else {
                "sales"
            };
            self.account.plan = plan.upgraded();
            self.account.seats = self.account.seats.max(3);
            self.account.fee = self.account.plan.monthly_fee(self.account.seats);
            self.push(
                change_day,
                PLAN_UPGRADE,
                Some(channel),
                Some(self.account.fee),
            );
        } else if plan != Plan::Starter && chance(self.rng, 0.008 * (-0.9 * health).exp()) {
            self.account.plan = plan.downgraded();
            self.account.fee = self.account.plan.monthly_fee(self.account.seats);
            self.push(
                change_day,
                PLAN_DOWNGRADE,
                Some("web"),
                Some(self.account.fee),
            );
        }
        let seats = self.account.seats;
        if seats > 1 && chance(self.rng, (0.03 * (-0.6 * health).exp()).min(0.5)) {
            let most = ((seats as f64 * 0.2).ceil() as i64).clamp(1, seats - 1);
            let removed = self.rng.random_range(1..=most);
            self.account.seats -= removed;
            self.account.fee = self.account.plan.monthly_fee(self.account.seats);
            self.push(change_day, SEAT_REMOVED, Some("web"), Some(removed as f64));
        }
    }

    /// A ticket, resolved later unless it stays open (more often when health is low).
    fn support_ticket(&mut self, day: f64, priority: u8) {
        let channel = match self.rng.random::<f64>() {
            u if u < 0.5 => "email",
            u if u < 0.85 => "chat",
            _ => "phone",
        };
        self.push(
            day,
            customer_event::SUPPORT_TICKET,
            Some(channel),
            Some(f64::from(priority)),
        );
        let resolve_probability = if self.health < -1.0 { 0.7 } else { 0.88 };
        if chance(self.rng, resolve_probability) {
            let median_days = match priority {
                3 => 0.3,
                2 => 1.0,
                _ => 3.0,
            };
            let resolved_day = day + log_normal(self.rng, median_days, 0.8);
            self.push(
                resolved_day,
                customer_event::TICKET_RESOLVED,
                Some(channel),
                None,
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Chunks: simulation and frames
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct RunSettings {
    seed: u64,
    calibration: Calibration,
}

/// The four frames of one chunk of entities.
struct ChunkFrames {
    entities: DataFrame,
    events: DataFrame,
    outcomes: DataFrame,
    truth: DataFrame,
}

fn datetime_column(name: &str, milliseconds: Vec<TimestampMs>) -> Column {
    Int64Chunked::from_vec(name.into(), milliseconds)
        .into_datetime(TimeUnit::Milliseconds, None)
        .into_column()
}

fn simulate_chunk<M: CrmModel>(
    model: &M,
    settings: &RunSettings,
    indices: Range<usize>,
) -> Result<ChunkFrames, DataError> {
    let naming = &M::NAMING;
    let timeline = model.timeline();
    let count = indices.len();
    let mut ids = Vec::with_capacity(count);
    let mut entities = Vec::with_capacity(count);
    let mut event_owner = Vec::new();
    let mut event_ts = Vec::new();
    let mut event_type = Vec::new();
    let mut event_channel = Vec::new();
    let mut event_value = Vec::new();
    let mut outcome_owner = Vec::new();
    let mut outcome_ts = Vec::new();
    let mut truth_owner = Vec::new();
    let mut truth_cutoff = Vec::new();
    let mut truth_probability = Vec::new();
    let mut truth_label = Vec::new();
    let mut truth_segment = Vec::new();
    for (local, index) in indices.enumerate() {
        let simulated = simulate_entity(
            model,
            settings.calibration.rate_scale,
            entity_rng(settings.seed, index),
        );
        let segment = model.segment(&simulated.entity);
        let outcome = walk_cutoffs(
            &simulated.draws,
            settings
                .calibration
                .intercept(model.calibration_group(&simulated.entity)),
            timeline.horizon_ms,
            |cutoff_ms, probability, label| {
                truth_owner.push(local);
                truth_cutoff.push(cutoff_ms);
                truth_probability.push(probability);
                truth_label.push(u8::from(label));
                if let Some(segment) = segment {
                    truth_segment.push(segment);
                }
            },
        );
        let kept = match outcome {
            Some(outcome_ms) => {
                outcome_owner.push(local);
                outcome_ts.push(outcome_ms);
                simulated
                    .events
                    .partition_point(|event| event.ts_ms < outcome_ms)
            }
            None => simulated.events.len(),
        };
        for event in &simulated.events[..kept] {
            event_owner.push(local);
            event_ts.push(event.ts_ms);
            event_type.push(naming.event_names[usize::from(event.kind)]);
            event_channel.push(event.channel);
            event_value.push(event.value);
        }
        ids.push(format!("{}{:08}", naming.id_prefix, index + 1));
        entities.push(simulated.entity);
    }
    let id_column = |owners: &[usize]| {
        Column::new(
            naming.id_column.into(),
            owners
                .iter()
                .map(|&owner| ids[owner].as_str())
                .collect::<Vec<_>>(),
        )
    };
    let frames = (|| {
        let all: Vec<usize> = (0..count).collect();
        let entities = model.entity_frame(id_column(&all), &entities)?;
        let events = DataFrame::new_infer_height(vec![
            id_column(&event_owner),
            datetime_column("ts", event_ts),
            Column::new("event_type".into(), event_type),
            Column::new("channel".into(), event_channel),
            Column::new("value".into(), event_value),
        ])?;
        let outcomes = DataFrame::new_infer_height(vec![
            id_column(&outcome_owner),
            datetime_column(naming.outcome_column, outcome_ts),
        ])?;
        let mut truth_columns = vec![
            id_column(&truth_owner),
            datetime_column("cutoff", truth_cutoff),
            Column::new("true_probability".into(), truth_probability),
            Column::new("label".into(), truth_label),
        ];
        if model.has_segments() {
            truth_columns.push(Column::new("segment".into(), truth_segment));
        }
        let truth = DataFrame::new_infer_height(truth_columns)?;
        Ok::<_, PolarsError>(ChunkFrames {
            entities,
            events,
            outcomes,
            truth,
        })
    })();
    frames.map_err(|error| DataError::Invalid(format!("synthetic data: building a chunk: {error}")))
}

// ---------------------------------------------------------------------------------------------
// Output files
// ---------------------------------------------------------------------------------------------

/// A `Write` handle to a buffered file that stays reachable after polars' writer is done with
/// it, so the final flush can report its error.
#[derive(Clone)]
struct SharedFile(Arc<Mutex<BufWriter<File>>>);

impl Write for SharedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("output file lock poisoned"))?
            .write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("output file lock poisoned"))?
            .write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("output file lock poisoned"))?
            .flush()
    }
}

fn temporary_path(final_path: &Path) -> PathBuf {
    let name = final_path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    final_path.with_file_name(format!(".{name}.partial"))
}

fn io_error(path: &Path, source: std::io::Error) -> DataError {
    DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn polars_io_error(path: &Path, error: PolarsError) -> DataError {
    io_error(
        path,
        std::io::Error::other(format!("writing Parquet: {error}")),
    )
}

/// One Parquet file written chunk by chunk under a temporary name.
struct ParquetSink {
    final_path: PathBuf,
    temporary_path: PathBuf,
    file: SharedFile,
    /// Created with the first chunk's schema.
    writer: Option<BatchedWriter<SharedFile>>,
    rows: usize,
}

impl ParquetSink {
    fn create(final_path: PathBuf) -> Result<ParquetSink, DataError> {
        let temporary_path = temporary_path(&final_path);
        let file =
            File::create(&temporary_path).map_err(|source| io_error(&temporary_path, source))?;
        Ok(ParquetSink {
            final_path,
            temporary_path,
            file: SharedFile(Arc::new(Mutex::new(BufWriter::with_capacity(
                1 << 20,
                file,
            )))),
            writer: None,
            rows: 0,
        })
    }

    fn write(&mut self, frame: &DataFrame) -> Result<(), DataError> {
        let path = &self.temporary_path;
        let writer = match &mut self.writer {
            Some(writer) => writer,
            None => {
                let writer = ParquetWriter::new(self.file.clone())
                    .batched(frame.schema())
                    .map_err(|error| polars_io_error(path, error))?;
                self.writer.insert(writer)
            }
        };
        writer
            .write_batch(frame)
            .map_err(|error| polars_io_error(path, error))?;
        self.rows += frame.height();
        Ok(())
    }

    /// Writes the footer, flushes and syncs the temporary file.
    fn finish(self) -> Result<(PathBuf, PathBuf, usize), DataError> {
        let path = self.temporary_path;
        let Some(writer) = self.writer else {
            return Err(DataError::Invalid(format!(
                "synthetic data: nothing was written to {}",
                path.display()
            )));
        };
        writer
            .finish()
            .map_err(|error| polars_io_error(&path, error))?;
        drop(writer);
        let shared = Arc::try_unwrap(self.file.0)
            .map_err(|_| io_error(&path, std::io::Error::other("output file still in use")))?;
        let buffered = shared
            .into_inner()
            .map_err(|_| io_error(&path, std::io::Error::other("output file lock poisoned")))?;
        let file = buffered
            .into_inner()
            .map_err(|error| io_error(&path, error.into_error()))?;
        file.sync_all().map_err(|source| io_error(&path, source))?;
        Ok((path, self.final_path, self.rows))
    }
}

/// Removes the temporary files on drop unless they were all renamed (an error or a panic
/// leaves nothing behind but the files of an earlier complete run).
struct TemporaryFiles(Vec<PathBuf>);

impl Drop for TemporaryFiles {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

struct OutputSinks {
    entities: ParquetSink,
    events: ParquetSink,
    outcomes: ParquetSink,
    truth: ParquetSink,
}

impl OutputSinks {
    fn write(&mut self, chunks: Vec<ChunkFrames>) -> Result<(), DataError> {
        for chunk in chunks {
            self.entities.write(&chunk.entities)?;
            self.events.write(&chunk.events)?;
            self.outcomes.write(&chunk.outcomes)?;
            self.truth.write(&chunk.truth)?;
        }
        Ok(())
    }
}

fn run<M: CrmModel>(
    model: &M,
    params: &GeneratorParams,
    out_dir: &Path,
) -> Result<GeneratedDataset, DataError> {
    let naming = &M::NAMING;
    std::fs::create_dir_all(out_dir).map_err(|source| io_error(out_dir, source))?;
    let calibration = calibrate(model, params.events_per_entity);
    let settings = RunSettings {
        seed: params.seed,
        calibration,
    };

    let final_paths = [
        naming.entities_file,
        EVENTS_FILE,
        naming.outcomes_file,
        TRUTH_FILE,
        SPEC_FILE,
    ]
    .map(|name| out_dir.join(name));
    let mut temporary = TemporaryFiles(
        final_paths
            .iter()
            .map(|path| temporary_path(path))
            .collect(),
    );
    let [
        entities_path,
        events_path,
        outcomes_path,
        truth_path,
        spec_path,
    ] = final_paths;
    let mut sinks = OutputSinks {
        entities: ParquetSink::create(entities_path)?,
        events: ParquetSink::create(events_path)?,
        outcomes: ParquetSink::create(outcomes_path)?,
        truth: ParquetSink::create(truth_path)?,
    };

    // Simulate a window of chunks in parallel while the previous window is written.
    let chunk_count = params.entities.div_ceil(params.chunk_size);
    let window = (2 * rayon::current_num_threads()).max(2);
    let chunk_range = |chunk: usize| {
        chunk * params.chunk_size..((chunk + 1) * params.chunk_size).min(params.entities)
    };
    let mut next_chunk = 0;
    let mut simulated: Vec<ChunkFrames> = Vec::new();
    while next_chunk < chunk_count || !simulated.is_empty() {
        let chunks = next_chunk..(next_chunk + window).min(chunk_count);
        next_chunk = chunks.end;
        let to_write = std::mem::take(&mut simulated);
        let (written, next) = rayon::join(
            || sinks.write(to_write),
            || {
                chunks
                    .into_par_iter()
                    .map(|chunk| simulate_chunk(model, &settings, chunk_range(chunk)))
                    .collect::<Result<Vec<_>, DataError>>()
            },
        );
        written?;
        simulated = next?;
    }

    let OutputSinks {
        entities,
        events,
        outcomes,
        truth,
    } = sinks;
    let finished = [
        entities.finish()?,
        events.finish()?,
        outcomes.finish()?,
        truth.finish()?,
    ];
    let [entity_rows, event_rows, outcome_rows, truth_rows] =
        finished.each_ref().map(|(_, _, rows)| *rows);

    let spec_text = spec_toml(model, params, &calibration);
    let spec_temporary = temporary_path(&spec_path);
    std::fs::write(&spec_temporary, spec_text)
        .map_err(|source| io_error(&spec_temporary, source))?;

    // A spec never points at a mix of old and new files: drop the old spec first, rename the
    // data files, then the spec.
    match std::fs::remove_file(&spec_path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(io_error(&spec_path, source)),
    }
    for (from, to, _) in &finished {
        std::fs::rename(from, to).map_err(|source| io_error(to, source))?;
    }
    std::fs::rename(&spec_temporary, &spec_path).map_err(|source| io_error(&spec_path, source))?;
    temporary.0.clear();

    Ok(GeneratedDataset {
        spec_path,
        entities: entity_rows,
        events: event_rows,
        outcomes: outcome_rows,
        truth_rows,
        cutoffs: model.timeline().cutoff_dates.clone(),
    })
}

/// The dataset spec of the generated files, with the generator's settings as comments.
fn spec_toml<M: CrmModel>(
    model: &M,
    params: &GeneratorParams,
    calibration: &Calibration,
) -> String {
    let naming = &M::NAMING;
    let timeline = model.timeline();
    let mut text = String::new();
    let cutoffs: Vec<String> = timeline
        .cutoff_dates
        .iter()
        .map(|date| format!("\"{}\"", date.format("%Y-%m-%d")))
        .collect();
    // Writing to a String cannot fail.
    let _ = writeln!(
        text,
        "# Synthetic CRM history written by leadscore's features::synthetic."
    );
    let _ = writeln!(
        text,
        "# entities = {}, seed = {}, start = {}, span_days = {}, horizon_days = {}, events_per_entity = {}",
        params.entities,
        params.seed,
        params.start,
        params.span_days,
        params.horizon_days,
        params.events_per_entity
    );
    match params.segments {
        Segments::None => {}
        Segments::Differ => {
            let _ = writeln!(
                text,
                "# segments = differ: enterprise and smb leads convert for different reasons \
                 (see features::synthetic)"
            );
        }
        Segments::Alike => {
            let _ = writeln!(
                text,
                "# segments = alike: enterprise and smb leads convert for the same reasons \
                 (the segment column carries no signal)"
            );
        }
    }
    let groups = model.calibration_groups();
    let intercepts = if groups.len() <= 1 {
        format!("intercept = {:.6}", calibration.intercept(0))
    } else {
        let each: Vec<String> = groups
            .iter()
            .enumerate()
            .map(|(group, name)| format!("{:.6} ({name})", calibration.intercept(group)))
            .collect();
        format!("intercepts = {}", each.join(", "))
    };
    let _ = writeln!(
        text,
        "# Hidden ground truth in {TRUTH_FILE}: {intercepts}, rate_scale = {:.6} \
         (pilot: {:.2} events per entity, {:.4} mean probability per window).",
        calibration.rate_scale, calibration.pilot_events_per_entity, calibration.pilot_window_rate
    );
    let _ = writeln!(text);
    let _ = writeln!(text, "name = \"{}\"", naming.dataset);
    let _ = writeln!(text, "task = \"{}\"", naming.task);
    let _ = writeln!(text);
    let _ = writeln!(text, "[entities]");
    let _ = writeln!(text, "path = \"{}\"", naming.entities_file);
    let _ = writeln!(text, "id = \"{}\"", naming.id_column);
    let _ = writeln!(text, "created_at = \"created_at\"");
    let _ = writeln!(text);
    let _ = writeln!(text, "[entities.columns]");
    for (column, kind) in naming
        .profile_columns
        .iter()
        .chain(model.extra_profile_columns())
    {
        let _ = writeln!(text, "{column} = \"{kind}\"");
    }
    let _ = writeln!(text);
    let _ = writeln!(text, "[events]");
    let _ = writeln!(text, "path = \"{EVENTS_FILE}\"");
    let _ = writeln!(text, "entity_id = \"{}\"", naming.id_column);
    let _ = writeln!(text, "timestamp = \"ts\"");
    let _ = writeln!(text, "event_type = \"event_type\"");
    let _ = writeln!(text, "channel = \"channel\"");
    let _ = writeln!(text, "value = \"value\"");
    let _ = writeln!(text);
    let _ = writeln!(text, "[outcomes]");
    let _ = writeln!(text, "path = \"{}\"", naming.outcomes_file);
    let _ = writeln!(text, "entity_id = \"{}\"", naming.id_column);
    let _ = writeln!(text, "timestamp = \"{}\"", naming.outcome_column);
    let _ = writeln!(text);
    let _ = writeln!(text, "[label]");
    let _ = writeln!(text, "horizon_days = {}", params.horizon_days);
    let _ = writeln!(text, "cutoffs = {{ dates = [{}] }}", cutoffs.join(", "));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(segments: Segments, entities: usize) -> GeneratorParams {
        GeneratorParams {
            entities,
            seed: 7,
            chunk_size: 500,
            segments,
            ..GeneratorParams::default()
        }
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

    fn correlation(a: &[f64], b: &[f64]) -> f64 {
        let n = a.len() as f64;
        let (mean_a, mean_b) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
        let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
        for (x, y) in a.iter().zip(b) {
            ab += (x - mean_a) * (y - mean_b);
            aa += (x - mean_a).powi(2);
            bb += (y - mean_b).powi(2);
        }
        ab / (aa * bb).sqrt()
    }

    #[test]
    fn segments_names_round_trip_and_none_is_the_default() {
        assert_eq!(Segments::default(), Segments::None);
        assert_eq!(GeneratorParams::default().segments, Segments::None);
        for segments in [Segments::None, Segments::Differ, Segments::Alike] {
            assert_eq!(Segments::parse(segments.as_str()), Some(segments));
            assert_eq!(segments.as_str().parse::<Segments>().ok(), Some(segments));
            assert_eq!(segments.to_string(), segments.as_str());
        }
        assert_eq!(Segments::parse("Differ"), None);
        assert_eq!(Segments::parse(""), None);
        match "both".parse::<Segments>() {
            Err(DataError::Invalid(message)) => {
                assert!(message.contains("none, differ or alike"), "{message}")
            }
            other => panic!("expected an invalid-value error, got {other:?}"),
        }
    }

    #[test]
    fn segments_are_for_leads_only() {
        for segments in [Segments::Differ, Segments::Alike] {
            let customers = GeneratorParams {
                kind: SyntheticKind::Customers,
                segments,
                ..GeneratorParams::default()
            };
            match customers.check() {
                Err(DataError::Invalid(message)) => {
                    assert!(message.contains("leads only"), "{message}")
                }
                other => panic!("{segments}: customers with segments accepted: {other:?}"),
            }
            let dir = tempfile::tempdir().expect("temporary folder");
            assert!(customers.generate(dir.path()).is_err());
            let leads = GeneratorParams {
                segments,
                ..GeneratorParams::default()
            };
            assert!(leads.check().is_ok(), "{segments}: leads may have segments");
        }
    }

    /// Without segments the generator writes what it wrote before segments existed: the same
    /// calibrated ground truth (which fingerprints the whole simulation of the pilot
    /// population) and no `segment` anywhere.
    /// With `Differ`, each lead's score is its segment's formula, and on enterprise leads the
    /// smb formula (the one of `None` and `Alike`) is a poor guide: the scores are weakly
    /// correlated and the smb formula ranks the enterprise labels far worse.
    #[test]
    fn differ_enterprise_leads_follow_another_formula() {
        let params = params(Segments::Differ, 3_000);
        let model = LeadModel::new(Timeline::new(&params), Segments::Differ);
        let calibration = calibrate(&model, params.events_per_entity);
        assert_eq!(
            model.calibration_groups().to_vec(),
            vec!["smb", "enterprise"]
        );
        let (mut own, mut smb_formula, mut outcomes) = (Vec::new(), Vec::new(), Vec::new());
        let mut smb_rows = 0;
        for index in 0..params.entities {
            let simulated = simulate_entity(
                &model,
                calibration.rate_scale,
                entity_rng(params.seed, index),
            );
            let lead = &simulated.entity;
            let segment = lead
                .segment
                .unwrap_or_else(|| panic!("lead {index} has no segment"));
            let intercept = calibration.intercept(model.calibration_group(lead));
            let mut rows = Vec::new();
            walk_cutoffs(
                &simulated.draws,
                intercept,
                model.timeline.horizon_ms,
                |cutoff_ms, _, label| rows.push((cutoff_ms, label)),
            );
            for (draw, (cutoff_ms, label)) in simulated.draws.iter().zip(rows) {
                assert_eq!(draw.cutoff_ms, cutoff_ms);
                let before = simulated
                    .events
                    .partition_point(|event| event.ts_ms < cutoff_ms);
                let events = &simulated.events[..before];
                assert_eq!(draw.score, lead_score(segment, lead, events, cutoff_ms));
                match segment {
                    LeadSegment::Enterprise => {
                        own.push(draw.score);
                        smb_formula.push(lead_score(LeadSegment::Smb, lead, events, cutoff_ms));
                        outcomes.push(u8::from(label));
                    }
                    LeadSegment::Smb => smb_rows += 1,
                }
            }
        }
        assert!(
            own.len() > 2_000 && smb_rows > 2_000,
            "rows of both segments"
        );
        let r = correlation(&own, &smb_formula);
        assert!(
            r < 0.5,
            "enterprise rows: correlation {r:.3} of the two formulas"
        );
        let (own_auc, smb_auc) = (auc(&own, &outcomes), auc(&smb_formula, &outcomes));
        assert!(
            own_auc > 0.75,
            "enterprise AUC of the true score {own_auc:.3}"
        );
        assert!(
            own_auc - smb_auc > 0.15,
            "enterprise AUC: true score {own_auc:.3}, smb formula {smb_auc:.3}"
        );
    }
}
