//! Load for the entity store's benchmark (`scripts/bench-store`): plain HTTP/1.1 keep-alive
//! connections, one thread each, every request a different body (new events for many
//! entities), so the store really writes. Prints one JSON line of figures per run.
//!
//! * `seed`: `--entities` leads of `--events` events each, recent, through `POST /v1/events`.
//! * `ingest`: closed loop, `--batch` new events a request for random entities.
//! * `single`: one new event a request (rescored, score returned); with `--rate`, an open
//!   loop at that many requests a second, latency counted from when each request was due if
//!   its connection was still busy then (else from when it was sent).
//! * `by-id`: `GET /v1/entities/{id}/score/propensity` of seeded leads (closed loop).
//! * `stateless`: `POST /v1/score/propensity` of the same leads given in full (closed loop).
//! * `webhooks`: the `single` open loop at `--rate`, every `--hot-every`th event the first of
//!   a new lead on a strong profile, with a webhook receiver on `--receiver` in this process
//!   that checks each message's signature (`--secret`): for every new lead the answer says is
//!   sales-ready, the time from its event's request (counted as in `single`) to the receiver
//!   holding its verified `lead.sales_ready`. With `--events`, first seeds `--entities`
//!   leads (as `seed`) with the receiver up.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use clap::Parser;

#[derive(Debug, Clone, Parser)]
struct Args {
    /// `seed`, `ingest`, `single`, `by-id` or `stateless`.
    mode: String,
    #[arg(long)]
    addr: String,
    #[arg(long)]
    key: String,
    #[arg(long, default_value_t = 32)]
    connections: usize,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Entities: seeded, or drawn from.
    #[arg(long, default_value_t = 1000)]
    entities: usize,
    /// Events per seeded entity.
    #[arg(long, default_value_t = 200)]
    events: usize,
    /// Events per `ingest` request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Requests a second (`single`): an open loop at this rate.
    #[arg(long)]
    rate: Option<f64>,
    /// Id prefix of the entities written or read.
    #[arg(long, default_value = "B")]
    prefix: String,
    /// `webhooks`: where the receiver listens (the server's endpoint points there).
    #[arg(long)]
    receiver: Option<String>,
    /// `webhooks`: the endpoint's secret.
    #[arg(long)]
    secret: Option<String>,
    /// `webhooks`: one event in this many is a new hot lead's first.
    #[arg(long, default_value_t = 10)]
    hot_every: u64,
}

const DAY_MS: i64 = 86_400_000;
const TYPES: [(&str, &str); 8] = [
    ("email_open", "email"),
    ("email_click", "email"),
    ("web_visit", "web"),
    ("pricing_page_view", "web"),
    ("content_download", "web"),
    ("webinar_registration", "email"),
    ("form_submit", "paid_search"),
    ("demo_request", "web"),
];
const PROFILE: &str = r#"{"industry": "Software", "employee_band": "51-200", "country": "United Kingdom", "job_title": "VP Marketing", "seniority": "VP", "lead_source": "webinar", "annual_revenue_musd": 12.5}"#;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Event `j` of seeded entity `k`: spread over the last 80 days, the same every time.
fn seeded_event(k: usize, j: usize, n: usize, base: i64) -> (i64, &'static str, &'static str) {
    let (t, c) = TYPES[(k + j) % TYPES.len()];
    let ts = base - 80 * DAY_MS + (j as i64 * 80 * DAY_MS) / n as i64 + (k as i64 % 1000);
    (ts, t, c)
}

/// One keep-alive connection.
struct Conn {
    addr: String,
    key: String,
    reader: Option<BufReader<TcpStream>>,
}

impl Conn {
    fn new(addr: &str, key: &str) -> Self {
        Conn {
            addr: addr.to_owned(),
            key: key.to_owned(),
            reader: None,
        }
    }

    /// Sends one request and reads the answer; the status and body.
    fn send(&mut self, method: &str, path: &str, body: &str) -> Result<(u16, Vec<u8>)> {
        if self.reader.is_none() {
            let stream = TcpStream::connect(&self.addr).context("connect")?;
            stream.set_nodelay(true)?;
            self.reader = Some(BufReader::new(stream));
        }
        let reader = self.reader.as_mut().context("connection")?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            self.key,
            body.len()
        );
        reader.get_mut().write_all(request.as_bytes())?;
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("no status in {line:?}"))?;
        let mut length = 0usize;
        let mut close = false;
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let lower = header.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse()?;
            } else if lower == "connection: close" {
                close = true;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        if close {
            self.reader = None;
        }
        Ok((status, body))
    }
}

/// Latencies (µs) and counts of one thread.
#[derive(Default)]
struct Tally {
    latencies: Vec<u64>,
    errors: u64,
    events: u64,
    first_error: Option<String>,
    /// `webhooks`: new leads answered sales-ready, with when their request began.
    hot: Vec<(String, Instant)>,
}

/// What the webhook receiver saw.
#[derive(Default)]
struct Inbox {
    /// `lead.sales_ready` messages by entity: when they arrived (the first time).
    ready: std::sync::Mutex<std::collections::HashMap<String, Instant>>,
    verified: std::sync::atomic::AtomicU64,
    bad: std::sync::atomic::AtomicU64,
}

async fn receive(
    axum::extract::State((inbox, secret)): axum::extract::State<(
        Arc<Inbox>,
        Arc<serving::webhooks::sign::Secret>,
    )>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    let arrived = Instant::now();
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (id, timestamp) = (header("webhook-id"), header("webhook-timestamp"));
    let expected = timestamp
        .parse::<i64>()
        .map(|ts| secret.signature(id, ts, &body))
        .unwrap_or_default();
    if !header("webhook-signature")
        .split(' ')
        .any(|s| s == expected)
    {
        inbox.bad.fetch_add(1, Ordering::Relaxed);
        return axum::http::StatusCode::UNAUTHORIZED;
    }
    inbox.verified.fetch_add(1, Ordering::Relaxed);
    if let Ok(message) = serde_json::from_slice::<serde_json::Value>(&body)
        && message["type"] == "lead.sales_ready"
        && let Some(entity) = message["data"]["id"].as_str()
    {
        inbox
            .ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(entity.to_owned())
            .or_insert(arrived);
    }
    axum::http::StatusCode::NO_CONTENT
}

/// Starts the receiver on `addr`, on a runtime of its own (kept running by the handle).
fn start_receiver(addr: &str, secret: &str) -> Result<(tokio::runtime::Runtime, Arc<Inbox>)> {
    let secret = serving::webhooks::sign::Secret::parse(secret).map_err(anyhow::Error::msg)?;
    let inbox = Arc::new(Inbox::default());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(addr))
        .with_context(|| format!("receiver on {addr}"))?;
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state((Arc::clone(&inbox), Arc::new(secret)));
    runtime.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((runtime, inbox))
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() -> Result<()> {
    let args = Args::parse();
    let base = now_ms();
    if args.mode == "seed" {
        return seed(&args, base);
    }
    let receiver = match (args.mode.as_str(), &args.receiver, &args.secret) {
        ("webhooks", Some(addr), Some(secret)) => Some(start_receiver(addr, secret)?),
        ("webhooks", _, _) => bail!("webhooks: give --receiver and --secret"),
        _ => None,
    };
    if receiver.is_some() && args.events > 0 {
        // The leads the load adds events to, seeded with the receiver up (their grade
        // changes are delivered meanwhile, not retried during the load).
        seed(
            &Args {
                connections: 8,
                ..args.clone()
            },
            base,
        )?;
        std::thread::sleep(Duration::from_secs(2));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let threads: Vec<_> = (0..args.connections)
        .map(|c| {
            let args = args.clone();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || run(&args, c, base, start, &stop))
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(args.seconds));
    stop.store(true, Ordering::Relaxed);
    let mut all = Tally::default();
    for t in threads {
        let t = t
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))?;
        all.latencies.extend(t.latencies);
        all.errors += t.errors;
        all.events += t.events;
        all.hot.extend(t.hot);
        if all.first_error.is_none() {
            all.first_error = t.first_error;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    if let Some((_runtime, inbox)) = &receiver {
        return report_webhooks(&args, &mut all, inbox, elapsed);
    }
    all.latencies.sort_unstable();
    let n = all.latencies.len() as f64;
    println!(
        "{}",
        serde_json::json!({
            "mode": args.mode,
            "connections": args.connections,
            "rate": args.rate,
            "requests_per_s": n / elapsed,
            "events_per_s": all.events as f64 / elapsed,
            "p50_ms": percentile(&all.latencies, 0.50),
            "p99_ms": percentile(&all.latencies, 0.99),
            "max_ms": percentile(&all.latencies, 1.0),
            "errors": all.errors,
            "first_error": all.first_error,
        })
    );
    if all.errors > 0 {
        bail!("{} requests failed", all.errors);
    }
    Ok(())
}

/// Waits (up to 10 s) for the webhooks of the hot leads, then prints their latencies.
fn report_webhooks(args: &Args, all: &mut Tally, inbox: &Inbox, elapsed: f64) -> Result<()> {
    all.latencies.sort_unstable();
    let deadline = Instant::now() + Duration::from_secs(10);
    let arrived = |inbox: &Inbox| {
        inbox
            .ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    };
    let mut ready = arrived(inbox);
    while all.hot.iter().any(|(e, _)| !ready.contains_key(e)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        ready = arrived(inbox);
    }
    let mut latencies: Vec<u64> = all
        .hot
        .iter()
        .filter_map(|(e, began)| {
            ready
                .get(e)
                .map(|at| at.saturating_duration_since(*began).as_micros() as u64)
        })
        .collect();
    latencies.sort_unstable();
    let missing = all.hot.len() - latencies.len();
    println!(
        "{}",
        serde_json::json!({
            "mode": "webhooks",
            "rate": args.rate,
            "requests_per_s": all.events as f64 / elapsed,
            "hot_leads": all.hot.len(),
            "delivered": latencies.len(),
            "missing": missing,
            "verified": inbox.verified.load(Ordering::Relaxed),
            "bad_signatures": inbox.bad.load(Ordering::Relaxed),
            "request_p50_ms": percentile(&all.latencies, 0.50),
            "request_p99_ms": percentile(&all.latencies, 0.99),
            "p50_ms": percentile(&latencies, 0.50),
            "p95_ms": percentile(&latencies, 0.95),
            "p99_ms": percentile(&latencies, 0.99),
            "max_ms": percentile(&latencies, 1.0),
            "errors": all.errors,
            "first_error": all.first_error,
        })
    );
    if all.errors > 0 || missing > 0 || all.hot.is_empty() {
        bail!(
            "{} requests failed, {missing} webhooks missing of {}",
            all.errors,
            all.hot.len()
        );
    }
    Ok(())
}

/// Seeds `--entities` leads with `--events` events each, 32 connections.
fn seed(args: &Args, base: i64) -> Result<()> {
    let start = Instant::now();
    let per = args.entities.div_ceil(args.connections);
    let threads: Vec<_> = (0..args.connections)
        .map(|c| {
            let args = args.clone();
            std::thread::spawn(move || -> Result<()> {
                let mut conn = Conn::new(&args.addr, &args.key);
                for k in (c * per)..((c + 1) * per).min(args.entities) {
                    let id = format!("{}-{k}", args.prefix);
                    let body = format!(
                        "{{\"created_at\": {}, \"profile\": {PROFILE}}}",
                        base - 85 * DAY_MS
                    );
                    let (s, b) = conn.send("PUT", &format!("/v1/entities/{id}?reasons=false"), &body)?;
                    if s >= 300 {
                        bail!("PUT {id}: {s} {}", String::from_utf8_lossy(&b));
                    }
                    for chunk in (0..args.events).collect::<Vec<_>>().chunks(args.batch.max(1)) {
                        let events: Vec<String> = chunk
                            .iter()
                            .map(|&j| {
                                let (ts, t, ch) = seeded_event(k, j, args.events, base);
                                format!(
                                    "{{\"entity\": \"{id}\", \"id\": \"s{j}\", \"ts\": {ts}, \"type\": \"{t}\", \"channel\": \"{ch}\"}}"
                                )
                            })
                            .collect();
                        let body = format!("{{\"events\": [{}]}}", events.join(","));
                        let (s, b) = conn.send("POST", "/v1/events?reasons=false", &body)?;
                        if s != 200 {
                            bail!("events of {id}: {s} {}", String::from_utf8_lossy(&b));
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("a seed thread panicked"))??;
    }
    println!(
        "{}",
        serde_json::json!({
            "mode": "seed",
            "entities": args.entities,
            "events": args.entities * args.events,
            "seconds": start.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}

/// The stateless score body of seeded entity `k`: its profile and events in full, scored
/// at the moment the server would score it from the store (now, past its last event).
fn stateless_body(args: &Args, k: usize, base: i64) -> String {
    let events: Vec<String> = (0..args.events)
        .map(|j| {
            let (ts, t, ch) = seeded_event(k, j, args.events, base);
            format!("{{\"ts\": {ts}, \"type\": \"{t}\", \"channel\": \"{ch}\"}}")
        })
        .collect();
    format!(
        "{{\"id\": \"{}-{k}\", \"created_at\": {}, \"profile\": {PROFILE}, \"events\": [{}]}}",
        args.prefix,
        base - 85 * DAY_MS,
        events.join(",")
    )
}

fn run(args: &Args, c: usize, base: i64, start: Instant, stop: &AtomicBool) -> Tally {
    let mut conn = Conn::new(&args.addr, &args.key);
    let mut rng = Rng(0xC0FFEE ^ (c as u64) << 32 ^ base as u64);
    let mut tally = Tally::default();
    // Open loop: this connection's requests are due every `connections / rate` seconds.
    let interval = args
        .rate
        .map(|r| Duration::from_secs_f64(args.connections as f64 / r));
    let mut i: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let due = interval.map(|iv| {
            start + iv.mul_f64(i as f64) + iv.mul_f64(c as f64 / args.connections as f64)
        });
        // Latency counts from when the request was due while the connection was still busy
        // with the one before (the server made it wait); once the connection was free, from
        // when it was sent: a load thread woken late by the scheduler (client and server
        // share the cores) is not the server's delay.
        let busy = due.is_some_and(|d| Instant::now() > d);
        if let Some(due) = due {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let began = match due {
            Some(due) if busy => due,
            _ => Instant::now(),
        };
        let k = rng.below(args.entities);
        let ts = now_ms() - 1000;
        let (method, path, body, events) = match args.mode.as_str() {
            "ingest" => {
                let events: Vec<String> = (0..args.batch)
                    .map(|j| {
                        let k = rng.below(args.entities);
                        let (t, ch) = TYPES[(k + j) % TYPES.len()];
                        format!(
                            "{{\"entity\": \"{}-{k}\", \"id\": \"i{c}-{i}-{j}\", \"ts\": {ts}, \"type\": \"{t}\", \"channel\": \"{ch}\"}}",
                            args.prefix
                        )
                    })
                    .collect();
                let body = format!("{{\"events\": [{}]}}", events.join(","));
                (
                    "POST",
                    "/v1/events?reasons=false".to_owned(),
                    body,
                    args.batch,
                )
            }
            "webhooks" if i.is_multiple_of(args.hot_every.max(1)) => {
                // A new lead's first event, on the strong profile.
                let body = format!(
                    "{{\"events\": [{{\"entity\": \"H-{base}-{c}-{i}\", \"id\": \"h\", \"ts\": {ts}, \"type\": \"demo_request\", \"channel\": \"web\", \"profile\": {PROFILE}}}]}}"
                );
                ("POST", "/v1/events".to_owned(), body, 1)
            }
            "single" | "webhooks" => {
                let (t, ch) = TYPES[(k + i as usize) % TYPES.len()];
                let body = format!(
                    "{{\"events\": [{{\"entity\": \"{}-{k}\", \"id\": \"x{c}-{i}\", \"ts\": {ts}, \"type\": \"{t}\", \"channel\": \"{ch}\"}}]}}",
                    args.prefix
                );
                ("POST", "/v1/events".to_owned(), body, 1)
            }
            "by-id" => (
                "GET",
                format!("/v1/entities/{}-{k}/score/propensity", args.prefix),
                String::new(),
                0,
            ),
            "stateless" => (
                "POST",
                "/v1/score/propensity".to_owned(),
                stateless_body(args, k, base),
                0,
            ),
            other => {
                tally.errors += 1;
                tally.first_error = Some(format!("unknown mode {other}"));
                return tally;
            }
        };
        match conn.send(method, &path, &body) {
            Ok((200, answer)) => {
                tally.latencies.push(began.elapsed().as_micros() as u64);
                tally.events += events as u64;
                if args.mode == "webhooks" && i.is_multiple_of(args.hot_every.max(1)) {
                    let answer: serde_json::Value =
                        serde_json::from_slice(&answer).unwrap_or_default();
                    let e = &answer["entities"][0];
                    let ready = e["scores"]
                        .as_array()
                        .is_some_and(|s| s.iter().any(|s| s["sales_ready"] == true));
                    if e["created"] == true && ready {
                        tally.hot.push((format!("H-{base}-{c}-{i}"), began));
                    }
                }
            }
            Ok((status, b)) => {
                tally.errors += 1;
                tally
                    .first_error
                    .get_or_insert_with(|| format!("{status} {}", String::from_utf8_lossy(&b)));
            }
            Err(e) => {
                tally.errors += 1;
                tally.first_error.get_or_insert_with(|| e.to_string());
                conn.reader = None;
            }
        }
        i += 1;
    }
    tally
}
