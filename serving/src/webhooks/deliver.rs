//! The delivery worker: one task that sends each endpoint's deliveries (filed by the store in
//! the commits of their transitions), at least once and in outbox order per entity.
//!
//! Per endpoint, every entity with pending deliveries has a lane: its deliveries in outbox
//! order, of which only the first (the head) is attempted, so a retried message holds back
//! the later messages of its entity and of no other. Heads wait in a queue by next attempt
//! time; at most [`DeliverySettings::concurrency`] attempts per endpoint are in flight.
//!
//! An attempt reads its delivery from the store (an entity erased since has none left),
//! renders the body once (kept for the retries: every attempt sends the same bytes, with
//! the same `webhook-id`), signs it, sends it with the endpoint's client (timeout, no
//! redirects, guarded resolver) and records the outcome in the store before the lane moves
//! on: delivered, retried at the next time of the schedule (with jitter, or what
//! `Retry-After` says on 429 and 503), or dead once the schedule is exhausted. A 410 Gone
//! disables the endpoint (in the configuration file; its deliveries wait until it is
//! enabled again). The receiver's answer body is read and dropped, never logged.
//!
//! **Invariant:** the next message of an entity is attempted only once the outcome of the
//! one before is durable, so a crash never sends an older message after a newer one was
//! taken (it may send the last one taken again: at least once).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use rand::Rng;
use serde_json::json;
use store::{Attempt, Delivery, EntityStore, Message};
use tokio::sync::mpsc;

use super::endpoints::Endpoint;
use super::sign::signature_header;
use super::{DeliverySettings, Webhooks};

/// Deliveries read per page when the worker starts.
const LOAD_PAGE: usize = 1024;

/// How often the worker looks for deliveries no worker holds.
const ADOPT_EVERY: Duration = Duration::from_secs(2);
/// The largest body sent: past it, the reasons are left out.
pub const MAX_BODY_BYTES: usize = 20_000;
/// The most of a receiver's answer read (then dropped) so its connection can be reused.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Starts the worker.
pub fn spawn(hub: Arc<Webhooks>, store: Arc<dyn EntityStore>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(hub, store))
}

/// A rendered body, shared by the attempts of a delivery.
type Body = Arc<Vec<u8>>;

/// A head taken for an attempt.
struct Due {
    entity: String,
    seq: u64,
    attempts: u32,
    body: Option<Body>,
}

/// A pending delivery in its lane.
#[derive(Debug)]
struct Pending {
    seq: u64,
    attempts: u32,
    next_at_ms: i64,
    in_flight: bool,
    /// The body, once rendered.
    body: Option<Body>,
}

/// One endpoint's lanes.
#[derive(Debug, Default)]
struct Lanes {
    by_entity: HashMap<String, VecDeque<Pending>>,
    /// Heads not in flight: (next attempt, sequence, entity).
    due: BTreeSet<(i64, u64, String)>,
    in_flight: usize,
    count: usize,
}

impl Lanes {
    /// Files `d` in its entity's lane, in outbox order (a replayed message may be older
    /// than those pending; it goes after a head in flight).
    fn add(&mut self, entity: &str, p: Pending) {
        let lane = self.by_entity.entry(entity.to_owned()).or_default();
        if lane.iter().any(|x| x.seq == p.seq) {
            return;
        }
        let mut at = lane
            .iter()
            .position(|x| x.seq > p.seq)
            .unwrap_or(lane.len());
        if at == 0 && lane.front().is_some_and(|h| h.in_flight) {
            at = 1;
        }
        if at == 0 {
            if let Some(old) = lane.front() {
                self.due
                    .remove(&(old.next_at_ms, old.seq, entity.to_owned()));
            }
            self.due.insert((p.next_at_ms, p.seq, entity.to_owned()));
        }
        lane.insert(at, p);
        self.count += 1;
    }

    /// The first head due at `now_ms`, marked in flight.
    fn take_due(&mut self, now_ms: i64) -> Option<Due> {
        let first = self.due.first()?;
        if first.0 > now_ms {
            return None;
        }
        let (_, seq, entity) = self.due.pop_first()?;
        let head = self.by_entity.get_mut(&entity)?.front_mut()?;
        head.in_flight = true;
        self.in_flight += 1;
        Some(Due {
            attempts: head.attempts,
            body: head.body.clone(),
            entity,
            seq,
        })
    }

    /// The head of `entity`'s lane is done (delivered, dead, gone): the next one is due.
    fn done(&mut self, entity: &str) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let Some(lane) = self.by_entity.get_mut(entity) else {
            return;
        };
        lane.pop_front();
        self.count = self.count.saturating_sub(1);
        match lane.front() {
            Some(next) => {
                self.due
                    .insert((next.next_at_ms, next.seq, entity.to_owned()));
            }
            None => {
                self.by_entity.remove(entity);
            }
        }
    }

    /// The head of `entity`'s lane is to be tried again at `next_at_ms`.
    fn again(&mut self, entity: &str, attempts: u32, next_at_ms: i64, body: Option<Body>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let Some(head) = self.by_entity.get_mut(entity).and_then(|l| l.front_mut()) else {
            return;
        };
        head.in_flight = false;
        head.attempts = attempts;
        head.next_at_ms = next_at_ms;
        head.body = body;
        self.due.insert((next_at_ms, head.seq, entity.to_owned()));
    }

    fn next_due(&self) -> Option<i64> {
        self.due.first().map(|(t, _, _)| *t)
    }
}

/// What an attempt came to, as the worker's lanes see it.
enum Finished {
    /// Delivered, dead, or no longer pending.
    Done,
    Again {
        attempts: u32,
        next_at_ms: i64,
        body: Option<Body>,
        /// The endpoint answered 410 Gone: disable it.
        gone: bool,
    },
    /// The store could not record the outcome: the attempt is made again later.
    Unrecorded { body: Option<Body> },
}

struct Report {
    endpoint: String,
    entity: String,
    finished: Finished,
}

async fn run(hub: Arc<Webhooks>, store: Arc<dyn EntityStore>) {
    let signal = store.outbox_signal();
    let (tx, mut rx) = mpsc::unbounded_channel::<Report>();
    let mut lanes: HashMap<String, Lanes> = HashMap::new();
    adopt(&store, &mut lanes).await;
    let mut next_adopt = tokio::time::Instant::now() + ADOPT_EVERY;
    loop {
        // Deliveries no worker holds (a replica sharing the store stopped): adopted.
        if tokio::time::Instant::now() >= next_adopt {
            adopt(&store, &mut lanes).await;
            next_adopt = tokio::time::Instant::now() + ADOPT_EVERY;
        }
        while let Ok(report) = rx.try_recv() {
            finish(&hub, &mut lanes, report);
        }
        // After the reports: an endpoint one of them disabled is seen disabled.
        let endpoints = hub.endpoints();
        for d in hub.take_replayed() {
            let (endpoint, entity, p) = pending(d);
            lanes.entry(endpoint).or_default().add(&entity, p);
        }
        // Deliveries the store filed since the last look (in the commits of their
        // transitions, for the endpoints in force then).
        for d in store.take_new() {
            let (endpoint, entity, p) = pending(d);
            lanes.entry(endpoint).or_default().add(&entity, p);
        }
        let now = now_ms();
        let mut next_due: Option<i64> = None;
        for endpoint in endpoints.iter().filter(|e| !e.config.disabled) {
            let Some(l) = lanes.get_mut(endpoint.key()) else {
                continue;
            };
            while l.in_flight < hub.settings().concurrency.max(1) {
                let Some(Due {
                    entity,
                    seq,
                    attempts,
                    body,
                }) = l.take_due(now)
                else {
                    break;
                };
                let job = Job {
                    store: Arc::clone(&store),
                    settings: hub.settings().clone(),
                    endpoint: Arc::clone(endpoint),
                    metrics: hub.metrics(endpoint.key()),
                    seq,
                    attempts,
                    body,
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let endpoint = job.endpoint.key().to_owned();
                    let finished = job.run().await;
                    let _ = tx.send(Report {
                        endpoint,
                        entity,
                        finished,
                    });
                });
            }
            if l.in_flight < hub.settings().concurrency.max(1)
                && let Some(t) = l.next_due()
            {
                next_due = Some(next_due.map_or(t, |n| n.min(t)));
            }
        }
        for (key, l) in &lanes {
            hub.metrics(key)
                .pending
                .store(l.count as u64, Ordering::Relaxed);
        }
        let until_adopt = next_adopt
            .saturating_duration_since(tokio::time::Instant::now())
            .as_millis();
        let until_adopt = i64::try_from(until_adopt).unwrap_or(i64::MAX).max(1);
        let wait_ms = next_due
            .map_or(60_000, |t| (t - now).clamp(1, 60_000))
            .min(until_adopt);
        tokio::select! {
            _ = signal.notified() => {}
            _ = hub.wake.notified() => {}
            Some(report) = rx.recv() => finish(&hub, &mut lanes, report),
            _ = tokio::time::sleep(Duration::from_millis(wait_ms as u64)) => {}
        }
    }
}

fn pending(d: Delivery) -> (String, String, Pending) {
    (
        d.endpoint,
        d.message.entity,
        Pending {
            seq: d.message.seq,
            attempts: d.attempts,
            next_at_ms: d.next_at_ms,
            in_flight: false,
            body: None,
        },
    )
}

/// Files the pending deliveries no worker holds in their lanes: at start, those pending from
/// before a restart; later, those a stopped replica sharing the store left.
async fn adopt(store: &Arc<dyn EntityStore>, lanes: &mut HashMap<String, Lanes>) {
    let mut n = 0;
    loop {
        match store.adopt(LOAD_PAGE).await {
            Ok(page) => {
                let full = page.len() == LOAD_PAGE;
                n += page.len();
                for d in page {
                    let (endpoint, entity, p) = pending(d);
                    lanes.entry(endpoint).or_default().add(&entity, p);
                }
                if !full {
                    break;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot adopt the pending webhook deliveries; trying again later");
                break;
            }
        }
    }
    if n > 0 {
        tracing::info!(
            deliveries = n,
            "webhook deliveries adopted (pending from before a restart, or left by a stopped replica)"
        );
    }
}

fn finish(hub: &Arc<Webhooks>, lanes: &mut HashMap<String, Lanes>, report: Report) {
    let Some(l) = lanes.get_mut(&report.endpoint) else {
        return;
    };
    match report.finished {
        Finished::Done => l.done(&report.entity),
        Finished::Again {
            attempts,
            next_at_ms,
            body,
            gone,
        } => {
            l.again(&report.entity, attempts, next_at_ms, body);
            if gone {
                hub.disable_gone(&report.endpoint);
            }
        }
        Finished::Unrecorded { body } => {
            // The attempt stands as it was in the store; try again in a while.
            let attempts = l
                .by_entity
                .get(&report.entity)
                .and_then(|lane| lane.front())
                .map_or(0, |h| h.attempts);
            l.again(&report.entity, attempts, now_ms() + 5_000, body);
        }
    }
}

/// One attempt of one delivery.
struct Job {
    store: Arc<dyn EntityStore>,
    settings: DeliverySettings,
    endpoint: Arc<Endpoint>,
    metrics: Arc<super::EndpointMetrics>,
    seq: u64,
    attempts: u32,
    body: Option<Body>,
}

/// How a receiver answered.
enum Answer {
    Taken,
    Refused {
        error: String,
        retry_after: Option<Duration>,
        gone: bool,
    },
}

impl Job {
    async fn run(self) -> Finished {
        let key = self.endpoint.key().to_owned();
        let delivery = match self.store.delivery(&key, self.seq).await {
            Ok(Some(d)) => d,
            // Delivered, dead or erased meanwhile.
            Ok(None) => return Finished::Done,
            Err(e) => {
                tracing::error!(error = %e, "cannot read a webhook delivery");
                return Finished::Unrecorded { body: self.body };
            }
        };
        let body = match self.body.clone() {
            Some(b) => b,
            None => Arc::new(body(&delivery.message)),
        };
        let answer = send(&self.endpoint, &delivery.message.id, &body).await;
        let m = &self.metrics;
        let now = now_ms();
        let attempts = self.attempts.saturating_add(1);
        let (record, finished) = match answer {
            Answer::Taken => {
                m.delivered.fetch_add(1, Ordering::Relaxed);
                let seconds = (now - delivery.message.at_ms).max(0) as f64 / 1000.0;
                m.latency.observe(seconds);
                (Attempt::Delivered, Finished::Done)
            }
            Answer::Refused {
                error,
                retry_after,
                gone,
            } => {
                m.failed.fetch_add(1, Ordering::Relaxed);
                let wait = if gone {
                    // The endpoint is disabled (the worker holds its deliveries until it is
                    // enabled again); the attempt is not counted against the message.
                    Some(Duration::ZERO)
                } else {
                    self.settings
                        .schedule
                        .get(usize::try_from(attempts - 1).unwrap_or(usize::MAX))
                        .map(|w| retry_after.unwrap_or_else(|| jittered(*w, self.settings.jitter)))
                };
                match wait {
                    Some(wait) => {
                        m.retried.fetch_add(1, Ordering::Relaxed);
                        let next_at_ms = now + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
                        let attempts = if gone { self.attempts } else { attempts };
                        tracing::info!(endpoint = %key, message = %delivery.message.id, attempts, %error, "webhook attempt failed; scheduled again");
                        (
                            Attempt::Retry {
                                attempts,
                                next_at_ms,
                                error,
                            },
                            Finished::Again {
                                attempts,
                                next_at_ms,
                                body: Some(Arc::clone(&body)),
                                gone,
                            },
                        )
                    }
                    None => {
                        m.dead_lettered.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(endpoint = %key, message = %delivery.message.id, attempts, %error, "webhook schedule exhausted: dead letter");
                        (
                            Attempt::Dead {
                                attempts,
                                at_ms: now,
                                error,
                            },
                            Finished::Done,
                        )
                    }
                }
            }
        };
        // Durable before the lane moves on (the module's invariant).
        match self.store.record_attempt(key, self.seq, record).await {
            Ok(()) => finished,
            Err(e) => {
                tracing::error!(error = %e, "cannot record a webhook attempt");
                Finished::Unrecorded { body: Some(body) }
            }
        }
    }
}

/// `wait` stretched or shortened at random by up to `jitter` of itself.
fn jittered(wait: Duration, jitter: f64) -> Duration {
    if jitter <= 0.0 {
        return wait;
    }
    let factor = rand::rng().random_range((1.0 - jitter).max(0.0)..=(1.0 + jitter));
    wait.mul_f64(factor)
}

/// Sends one signed message; the answer's body is read (up to a limit) and dropped.
async fn send(endpoint: &Endpoint, id: &str, body: &Arc<Vec<u8>>) -> Answer {
    let now = Utc::now();
    let timestamp = now.timestamp();
    let signature = signature_header(&endpoint.signing_secrets(now), id, timestamp, body);
    let request = endpoint
        .client
        .post(endpoint.url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body.as_ref().clone());
    let mut response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            return Answer::Refused {
                error: describe(&e),
                retry_after: None,
                gone: false,
            };
        }
    };
    let status = response.status();
    let retry_after = if matches!(status.as_u16(), 429 | 503) {
        response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after)
    } else {
        None
    };
    let mut read = 0usize;
    while read < MAX_ANSWER_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => read += chunk.len(),
            _ => break,
        }
    }
    if status.is_success() {
        Answer::Taken
    } else {
        Answer::Refused {
            error: format!("HTTP {}", status.as_u16()),
            retry_after,
            gone: status == reqwest::StatusCode::GONE,
        }
    }
}

/// What went wrong with a request, without anything the receiver sent.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_redirect() {
        "redirect (not followed)"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

/// `Retry-After` as seconds or an HTTP date, capped at a day.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let wait = match value.trim().parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(value.trim()).ok()?;
            (at.with_timezone(&Utc) - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

fn rfc3339(ms: i64) -> Option<String> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// A message's body as sent: `{type, timestamp, data}`, the same bytes at every attempt.
/// The reasons are those given with the score (`null` when its writer had none, as a sweep
/// that found no transition coming); a body past [`MAX_BODY_BYTES`] goes without them.
pub fn body(message: &Message) -> Vec<u8> {
    let full = render(message, message.reasons.as_ref());
    if full.len() <= MAX_BODY_BYTES {
        return full;
    }
    render(message, None)
}

fn render(message: &Message, reasons: Option<&serde_json::Value>) -> Vec<u8> {
    let s = &message.score;
    let value = json!({
        "type": message.transition.as_str(),
        "timestamp": rfc3339(message.at_ms),
        "data": {
            "id": message.entity,
            "kind": message.kind.as_str(),
            "model": s.model,
            "version": s.version,
            "probability": s.probability,
            "score": s.score,
            "grade": s.grade,
            "previous_grade": message.previous_grade,
            "sales_ready": s.sales_ready,
            "reasons": reasons,
            "scored_at": rfc3339(s.scored_at_ms),
        }
    });
    serde_json::to_vec(&value).unwrap_or_default()
}

fn now_ms() -> i64 {
    crate::http::now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(seq: u64, next_at_ms: i64) -> Pending {
        Pending {
            seq,
            attempts: 0,
            next_at_ms,
            in_flight: false,
            body: None,
        }
    }

    #[test]
    fn a_lane_sends_its_head_only_and_moves_on_when_it_is_done() {
        let mut l = Lanes::default();
        l.add("A", p(1, 0));
        l.add("A", p(3, 0));
        l.add("B", p(2, 0));
        l.add("A", p(1, 0));
        assert_eq!(l.count, 3, "a delivery is filed once");
        let d = l.take_due(10).unwrap();
        assert_eq!((d.entity.as_str(), d.seq), ("A", 1));
        let d = l.take_due(10).unwrap();
        assert_eq!((d.entity.as_str(), d.seq), ("B", 2));
        assert!(l.take_due(10).is_none(), "A's second waits for its first");
        l.again("A", 1, 50, None);
        assert!(l.take_due(10).is_none(), "not before its next attempt");
        assert_eq!(l.next_due(), Some(50));
        let d = l.take_due(50).unwrap();
        assert_eq!((d.entity.as_str(), d.seq, d.attempts), ("A", 1, 1));
        l.done("A");
        let d = l.take_due(50).unwrap();
        assert_eq!((d.entity.as_str(), d.seq), ("A", 3));
        // A replayed older message goes after the head in flight.
        l.add("A", p(0, 0));
        l.done("A");
        assert_eq!(l.take_due(50).unwrap().seq, 0);
        l.done("A");
        l.done("B");
        assert_eq!((l.count, l.in_flight), (0, 0));
        assert!(l.by_entity.is_empty());
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("999999999"), Some(MAX_RETRY_AFTER));
        let soon = (Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let wait = parse_retry_after(&soon).unwrap();
        assert!(wait <= Duration::from_secs(30) && wait >= Duration::from_secs(25));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        for _ in 0..100 {
            let w = jittered(Duration::from_secs(10), 0.2);
            assert!(
                w >= Duration::from_secs(8) && w <= Duration::from_secs(12),
                "{w:?}"
            );
        }
        assert_eq!(
            jittered(Duration::from_secs(10), 0.0),
            Duration::from_secs(10)
        );
    }
}
