//! Webhooks end to end, with a real server process and a real receiver on this machine:
//!
//! * through an outage (the receiver answers 503, then is stopped, then comes back) every
//!   transition is delivered, in order per entity, duplicates only as retries of the same
//!   `webhook-id`;
//! * after a SIGKILL with deliveries pending, every pending message is delivered once the
//!   server is back;
//! * a schedule that runs out makes dead letters, which the admin route replays; a 410
//!   disables the endpoint in the configuration file, and the admin route enables it.
//!
//! Every request the receiver got (answered or not) is verified with the Standard Webhooks
//! reference verifier from PyPI (`tests/python/verify_webhooks.py`). The transitions
//! expected are worked out here from the scores the server answered, by the rule of the
//! event types, independently of the server's code.

mod common;
#[path = "support/leads.rs"]
mod leads;
#[path = "support/process.rs"]
mod process;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use common::{copy_dir, ort_available, python, repo_root};
use features::history::DAY_MS;
use leads::profile;
use process::{Server, request};
use serde_json::{Value, json};

const KEY: &str = "webhook-test-client-key-1";
const ADMIN: &str = "webhook-test-admin-key-01";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// How the receiver answers.
const OK: u8 = 0;
const UNAVAILABLE: u8 = 1;
const FAILING: u8 = 2;
const GONE: u8 = 3;
/// 429 with `Retry-After: 1`, once; then 200.
const TOO_MANY_ONCE: u8 = 4;
/// 307 to `/elsewhere` (which would take it).
const REDIRECT: u8 = 5;

/// One request as the receiver got it.
#[derive(Debug, Clone)]
struct Got {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
    answered: u16,
}

#[derive(Default)]
struct Inbox {
    mode: AtomicU8,
    got: Mutex<Vec<Got>>,
    /// Requests to `/elsewhere`.
    followed: std::sync::atomic::AtomicUsize,
}

/// A webhook receiver on 127.0.0.1 that records every request, answering as `mode` says
/// (503 with `Retry-After: 1` every other time when unavailable).
struct Receiver {
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    inbox: Arc<Inbox>,
    running: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
}

async fn receive(
    axum::extract::State(inbox): axum::extract::State<Arc<Inbox>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let mode = inbox.mode.load(Ordering::SeqCst);
    let mut got = inbox.got.lock().expect("inbox");
    let status = match mode {
        OK => StatusCode::OK,
        UNAVAILABLE => StatusCode::SERVICE_UNAVAILABLE,
        FAILING => StatusCode::INTERNAL_SERVER_ERROR,
        TOO_MANY_ONCE => {
            inbox.mode.store(OK, Ordering::SeqCst);
            StatusCode::TOO_MANY_REQUESTS
        }
        REDIRECT => StatusCode::TEMPORARY_REDIRECT,
        _ => StatusCode::GONE,
    };
    got.push(Got {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: String::from_utf8_lossy(&body).into_owned(),
        answered: status.as_u16(),
    });
    if (mode == UNAVAILABLE && got.len() % 2 == 0) || mode == TOO_MANY_ONCE {
        return (status, [("retry-after", "1")], "try later").into_response();
    }
    if mode == REDIRECT {
        return (status, [("location", "/elsewhere")], "moved").into_response();
    }
    // A body the server must never log.
    (status, "receiver-secret-body-never-logged").into_response()
}

/// Where a redirect points: a request here is a redirect followed.
async fn elsewhere(axum::extract::State(inbox): axum::extract::State<Arc<Inbox>>) -> StatusCode {
    inbox.followed.fetch_add(1, Ordering::SeqCst);
    StatusCode::OK
}

impl Receiver {
    fn start() -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut r = Receiver {
            runtime,
            addr,
            inbox: Arc::new(Inbox::default()),
            running: None,
        };
        r.serve(listener);
        r
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let app = Router::new()
            .route("/hook", axum::routing::post(receive))
            .route("/elsewhere", axum::routing::post(elsewhere))
            .with_state(Arc::clone(&self.inbox));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = self.runtime.spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        self.running = Some((tx, task));
    }

    /// Stops listening: connections are refused until [`Receiver::resume`].
    fn stop(&mut self) {
        if let Some((tx, task)) = self.running.take() {
            let _ = tx.send(());
            let _ = self.runtime.block_on(task);
        }
    }

    fn resume(&mut self) {
        let listener = self
            .runtime
            .block_on(tokio::net::TcpListener::bind(self.addr))
            .expect("bind the same port again");
        self.serve(listener);
    }

    fn set(&self, mode: u8) {
        self.inbox.mode.store(mode, Ordering::SeqCst);
    }

    fn got(&self) -> Vec<Got> {
        self.inbox.got.lock().expect("inbox").clone()
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// A registry, a store folder and a configuration file with one endpoint (`crm`) at
/// `url`, retries on `schedule` (seconds).
fn setup(dir: &Path, url: &str, schedule: &str) -> std::path::PathBuf {
    let registry = dir.join("registry");
    copy_dir(
        &repo_root().join("serving/tests/fixtures/registry"),
        &registry,
    );
    let config = dir.join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "# written by the webhook test\naddr = \"127.0.0.1:0\"\nregistry = {:?}\n\
             store = {:?}\napi_keys = [\"{KEY}\"]\nadmin_keys = [\"{ADMIN}\"]\nsessions = 1\n\
             max_auth_failures = 0\nsweep_interval_secs = 3600\nreload_interval_secs = 1\n\
             webhook_retry_secs = {schedule}\nwebhook_timeout_secs = 2\n\n\
             [[webhooks]]\nid = \"crm\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n\
             allow_private = true\n",
            registry.display().to_string(),
            dir.join("store").display().to_string(),
        ),
    )
    .expect("config");
    config
}

/// What the expected messages say: (entity, type, grade, previous grade).
type Expected = (String, String, String, Option<String>);

/// Tracks each lead's latest propensity score as the server answered it, and the
/// transitions those answers make.
#[derive(Default)]
struct Expectation {
    last: BTreeMap<String, (bool, String)>,
    messages: Vec<Expected>,
}

impl Expectation {
    /// Reads an answer's propensity score of `entity`: a transition against the one before
    /// is expected.
    fn saw(&mut self, entity: &str, answer: &Value) {
        let scores = answer["entities"][0]["scores"].as_array().expect("scores");
        let s = scores
            .iter()
            .find(|s| s["model"]["name"] == "propensity")
            .expect("a propensity score");
        let ready = s["sales_ready"].as_bool().expect("flag");
        let grade = s["grade"].as_str().expect("grade").to_owned();
        let before = self.last.insert(entity.to_owned(), (ready, grade.clone()));
        let was_ready = before.as_ref().is_some_and(|(r, _)| *r);
        let previous = before.as_ref().map(|(_, g)| g.clone());
        let mut push = |t: &str| {
            self.messages.push((
                entity.to_owned(),
                t.to_owned(),
                grade.clone(),
                previous.clone(),
            ));
        };
        if ready && !was_ready {
            push("lead.sales_ready");
        }
        if !ready && was_ready {
            push("lead.cooled");
        }
        if previous.as_ref().is_some_and(|g| *g != grade) {
            push("lead.grade_changed");
        }
    }
}

/// A lead's whole story: four events on the weak profile (the grades climb), the strong
/// profile (sales-ready), the weak one again (cooled).
fn lead_story(server: &Server, entity: &str, expected: &mut Expectation) {
    let now = now_ms();
    let types = [
        "web_visit",
        "email_open",
        "pricing_page_view",
        "demo_request",
    ];
    for (i, t) in types.iter().enumerate() {
        let mut event = json!({
            "entity": entity,
            "id": format!("{entity}-e{i}"),
            "ts": now - (4 - i as i64) * DAY_MS / 8,
            "type": t,
            "channel": "web",
        });
        if i == 0 {
            event["profile"] = profile(false);
        }
        let body = json!({"events": [event]}).to_string();
        let (status, answer) =
            request(&server.addr, "POST", "/v1/events", KEY, &body).expect("answer");
        assert_eq!(status, 200, "{answer}");
        expected.saw(entity, &serde_json::from_str(&answer).expect("JSON"));
    }
    for strong in [true, false] {
        patch_profile(server, entity, strong, expected);
    }
}

/// A new lead's first event, on the strong profile: sales-ready at once.
fn hot_lead(server: &Server, entity: &str, expected: &mut Expectation) {
    let event = json!({"entity": entity, "id": format!("{entity}-e0"), "ts": now_ms() - 60_000,
        "type": "demo_request", "channel": "web", "profile": profile(true)});
    let (status, answer) = request(
        &server.addr,
        "POST",
        "/v1/events",
        KEY,
        &json!({"events": [event]}).to_string(),
    )
    .expect("answer");
    assert_eq!(status, 200, "{answer}");
    expected.saw(entity, &serde_json::from_str(&answer).expect("JSON"));
}

/// `PATCH`es the lead's profile (see [`profile`]); the answer's score goes to `expected`.
fn patch_profile(server: &Server, entity: &str, strong: bool, expected: &mut Expectation) {
    let body = json!({"profile": profile(strong)}).to_string();
    let (status, answer) = request(
        &server.addr,
        "PATCH",
        &format!("/v1/entities/{entity}"),
        KEY,
        &body,
    )
    .expect("answer");
    assert_eq!(status, 200, "{answer}");
    expected.saw(entity, &serde_json::from_str(&answer).expect("JSON"));
}

/// Waits until the receiver has taken (2xx) as many distinct messages as `n`.
fn wait_for_delivered(receiver: &Receiver, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let mut taken: Vec<String> = receiver
            .got()
            .into_iter()
            .filter(|g| g.answered == 200)
            .map(|g| g.id)
            .collect();
        taken.sort();
        taken.dedup();
        if taken.len() >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} messages delivered in {within:?}",
            taken.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every request verifies with the reference verifier.
fn verify_with_reference(requests: &[Got], dir: &Path) {
    let python = python();
    let probe = Command::new(&python)
        .args(["-c", "import standardwebhooks"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        let required =
            std::env::var_os("LEADSCORE_REQUIRE_PYTHON_ORT").is_some_and(|v| !v.is_empty());
        assert!(
            !required,
            "{} cannot import standardwebhooks (scripts/test installs it into .venv)",
            python.display()
        );
        eprintln!("SKIPPED the reference verifier: standardwebhooks is not installed");
        return;
    }
    let path = dir.join("requests.jsonl");
    let lines: Vec<String> = requests
        .iter()
        .map(|g| {
            json!({"id": g.id, "timestamp": g.timestamp, "signature": g.signature, "body": g.body})
                .to_string()
        })
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").expect("requests file");
    let out = Command::new(&python)
        .arg(repo_root().join("serving/tests/python/verify_webhooks.py"))
        .arg(SECRET)
        .arg(&path)
        .output()
        .expect("run the verifier");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("report");
    assert_eq!(report["verified"], requests.len(), "{report}");
}

/// The messages delivered match `expected`: each expected once by its id, in order per
/// entity; every request for an entity either repeats the message before (a retry, same
/// `webhook-id`) or is the next one, sent only after the one before was taken.
fn check_delivered(got: &[Got], expected: &Expectation) {
    let mut per_entity: BTreeMap<String, Vec<&Got>> = BTreeMap::new();
    let mut bodies: BTreeMap<&str, &str> = BTreeMap::new();
    for g in got {
        let body: Value = serde_json::from_str(&g.body).expect("JSON body");
        assert!(g.body.len() < 20_000, "a body of {} bytes", g.body.len());
        if let Some(before) = bodies.insert(&g.id, &g.body) {
            assert_eq!(before, g.body, "a retry sends the same body");
        }
        let entity = body["data"]["id"].as_str().expect("entity").to_owned();
        per_entity.entry(entity).or_default().push(g);
    }
    let mut want: BTreeMap<&str, Vec<&Expected>> = BTreeMap::new();
    for m in &expected.messages {
        want.entry(m.0.as_str()).or_default().push(m);
    }
    assert_eq!(
        per_entity.keys().map(String::as_str).collect::<Vec<_>>(),
        want.keys().copied().collect::<Vec<_>>()
    );
    for (entity, requests) in &per_entity {
        let mut ids: Vec<&str> = Vec::new();
        let mut taken = true;
        for g in requests {
            if ids.last() == Some(&g.id.as_str()) {
                taken |= g.answered == 200;
                continue;
            }
            assert!(
                taken,
                "{entity}: message {} sent before the one before it was taken",
                g.id
            );
            assert!(
                !ids.contains(&g.id.as_str()),
                "{entity}: {} sent again later",
                g.id
            );
            ids.push(&g.id);
            taken = g.answered == 200;
        }
        assert!(taken, "{entity}: the last message was never taken");
        let seen: Vec<Expected> = ids
            .iter()
            .map(|id| {
                let body: Value = serde_json::from_str(bodies[id]).expect("JSON");
                let d = &body["data"];
                assert_eq!(d["model"], "propensity");
                assert_eq!(d["kind"], "lead");
                assert!(d["reasons"]["positive"].is_array(), "{body}");
                assert!(body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
                (
                    entity.clone(),
                    body["type"].as_str().expect("type").to_owned(),
                    d["grade"].as_str().expect("grade").to_owned(),
                    d["previous_grade"].as_str().map(str::to_owned),
                )
            })
            .collect();
        let wanted: Vec<Expected> = want[entity.as_str()].iter().map(|m| (*m).clone()).collect();
        assert_eq!(seen, wanted, "{entity}: the messages, in order");
    }
}

#[test]
fn every_transition_arrives_through_an_outage_in_order() {
    if !ort_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut receiver = Receiver::start();
    let config = setup(
        dir.path(),
        &receiver.url(),
        "[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]",
    );
    let server = Server::start(&config);
    let mut expected = Expectation::default();
    // Up: two leads.
    for e in ["L-0", "L-1"] {
        lead_story(&server, e, &mut expected);
    }
    wait_for_delivered(&receiver, expected.messages.len(), Duration::from_secs(30));
    // Unavailable (503, half with Retry-After): two more.
    receiver.set(UNAVAILABLE);
    for e in ["L-2", "L-3"] {
        lead_story(&server, e, &mut expected);
    }
    std::thread::sleep(Duration::from_secs(3));
    let refused = receiver.got().iter().filter(|g| g.answered == 503).count();
    assert!(refused > 0, "the receiver refused nothing");
    // Down: two more.
    receiver.stop();
    for e in ["L-4", "L-5"] {
        lead_story(&server, e, &mut expected);
    }
    std::thread::sleep(Duration::from_secs(3));
    // Back.
    receiver.set(OK);
    receiver.resume();
    wait_for_delivered(&receiver, expected.messages.len(), Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let got = receiver.got();
    assert!(expected.messages.len() >= 6 * 3, "{:?}", expected.messages);
    check_delivered(&got, &expected);
    verify_with_reference(&got, dir.path());
    let log = server.log.lock().expect("log").join("\n");
    assert!(!log.contains("receiver-secret-body-never-logged"));
    let (_, metrics) = request(&server.addr, "GET", "/metrics", KEY, "").expect("metrics");
    let figure = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}{{endpoint=\"crm\"}} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    let taken = got.iter().filter(|g| g.answered == 200).count() as u64;
    assert_eq!(figure("leadscore_webhook_delivered_total"), taken);
    let failed = figure("leadscore_webhook_failed_attempts_total");
    std::thread::sleep(Duration::from_millis(200));
    let log = server.log.lock().expect("log").join("\n");
    assert_eq!(
        failed,
        log.matches("webhook attempt failed").count() as u64,
        "every failed attempt is counted (and logged once)"
    );
    assert!(
        failed > got.len() as u64 - taken,
        "the 503s and the refused connections while the receiver was down"
    );
    assert!(figure("leadscore_webhook_retried_total") > 0);
    assert_eq!(figure("leadscore_webhook_dead_lettered_total"), 0);
    assert_eq!(figure("leadscore_webhook_pending"), 0);
    assert!(metrics.contains("leadscore_webhook_delivery_seconds_count{endpoint=\"crm\"}"));
    eprintln!(
        "{} transitions, {} requests ({} answered 503)",
        expected.messages.len(),
        got.len(),
        refused
    );
}

#[test]
fn pending_deliveries_are_sent_after_a_sigkill() {
    if !ort_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let receiver = Receiver::start();
    receiver.set(UNAVAILABLE);
    let config = setup(
        dir.path(),
        &receiver.url(),
        "[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]",
    );
    let server = Server::start(&config);
    let mut expected = Expectation::default();
    for e in ["K-0", "K-1", "K-2"] {
        lead_story(&server, e, &mut expected);
    }
    // Attempts are being refused: deliveries are pending when the server is killed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.got().len() < 3 {
        assert!(Instant::now() < deadline, "no attempt reached the receiver");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, listed) = request(&server.addr, "GET", "/admin/webhooks", ADMIN, "").expect("list");
    let listed: Value = serde_json::from_str(&listed).expect("JSON");
    let pending = listed["endpoints"][0]["pending"].as_u64().expect("pending");
    assert!(pending > 0, "{listed}");
    server.kill();
    receiver.set(OK);
    let server = Server::start(&config);
    wait_for_delivered(&receiver, expected.messages.len(), Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    let got = receiver.got();
    check_delivered(&got, &expected);
    verify_with_reference(&got, dir.path());
    let (_, listed) = request(&server.addr, "GET", "/admin/webhooks", ADMIN, "").expect("list");
    let listed: Value = serde_json::from_str(&listed).expect("JSON");
    assert_eq!(listed["endpoints"][0]["pending"], 0, "{listed}");
    eprintln!(
        "{pending} pending at the kill; {} transitions delivered after the restart",
        expected.messages.len()
    );
}

#[test]
fn dead_letters_are_replayed_and_gone_endpoints_disabled() {
    if !ort_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let receiver = Receiver::start();
    receiver.set(FAILING);
    // One retry after a second, then a dead letter.
    let config = setup(dir.path(), &receiver.url(), "[1]");
    let server = Server::start(&config);
    let mut expected = Expectation::default();
    lead_story(&server, "D-0", &mut expected);
    let n = expected.messages.len();
    // The first message is tried twice and dies; the lane moves on to the next.
    let path = "/admin/webhooks/crm/dead-letters";
    let deadline = Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let (status, body) = request(&server.addr, "GET", path, ADMIN, "").expect("dead letters");
        assert_eq!(status, 200, "{body}");
        let dead: Value = serde_json::from_str(&body).expect("JSON");
        if dead["dead_letters"].as_array().map_or(0, Vec::len) == n {
            break dead;
        }
        assert!(Instant::now() < deadline, "not all dead: {dead}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(dead["dead_letters"][0]["attempts"], 2, "{dead}");
    assert_eq!(dead["dead_letters"][0]["last_error"], "HTTP 500", "{dead}");
    assert_eq!(receiver.got().len(), 2 * n);
    receiver.set(OK);
    let (status, body) =
        request(&server.addr, "POST", &format!("{path}/replay"), ADMIN, "").expect("replay");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON")["replayed"],
        n
    );
    wait_for_delivered(&receiver, n, Duration::from_secs(10));
    let (_, body) = request(&server.addr, "GET", path, ADMIN, "").expect("dead letters");
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON")["dead_letters"],
        json!([])
    );

    // 410 Gone: the endpoint is disabled, in the file too. The message that met the 410
    // waits for it; transitions while it is disabled are not filed for it.
    receiver.set(GONE);
    hot_lead(&server, "D-1", &mut expected);
    assert_eq!(
        expected.messages.last().map(|m| m.1.as_str()),
        Some("lead.sales_ready")
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&config).expect("config");
        if text.contains("disabled = true") {
            assert!(text.starts_with("# written by the webhook test"), "{text}");
            assert!(text.contains("410 Gone"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "not disabled: {text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, listed) = request(&server.addr, "GET", "/admin/webhooks", ADMIN, "").expect("list");
    let listed: Value = serde_json::from_str(&listed).expect("JSON");
    assert_eq!(listed["endpoints"][0]["disabled"], true, "{listed}");
    assert_eq!(listed["endpoints"][0]["pending"], 1, "{listed}");
    let sent = receiver.got().len();
    let before_cooling = expected.messages.len();
    patch_profile(&server, "D-1", false, &mut expected);
    let made_while_disabled: Vec<Expected> = expected.messages.drain(before_cooling..).collect();
    assert!(
        made_while_disabled.iter().any(|m| m.1 == "lead.cooled"),
        "{made_while_disabled:?}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(receiver.got().len(), sent, "sent to a disabled endpoint");
    receiver.set(OK);
    let (status, body) = request(
        &server.addr,
        "POST",
        "/admin/webhooks/crm/enable",
        ADMIN,
        "",
    )
    .expect("enable");
    assert_eq!(status, 200, "{body}");
    wait_for_delivered(&receiver, expected.messages.len(), Duration::from_secs(15));
    let text = std::fs::read_to_string(&config).expect("config");
    assert!(text.contains("disabled = false"), "{text}");

    // `"secret": null` is not a secret (the document says a string when given): refused,
    // nothing rotated.
    let (status, body) = request(
        &server.addr,
        "POST",
        "/admin/webhooks/crm/rotate",
        ADMIN,
        r#"{"secret": null}"#,
    )
    .expect("rotate");
    assert_eq!(status, 400, "{body}");
    // A rotation: both secrets sign until the overlap ends.
    let (status, body) = request(
        &server.addr,
        "POST",
        "/admin/webhooks/crm/rotate",
        ADMIN,
        "",
    )
    .expect("rotate");
    assert_eq!(status, 200, "{body}");
    let rotated: Value = serde_json::from_str(&body).expect("JSON");
    assert!(
        rotated["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("whsec_"))
    );
    let before = receiver.got().len();
    lead_story(&server, "D-2", &mut expected);
    wait_for_delivered(&receiver, expected.messages.len(), Duration::from_secs(10));
    let got = receiver.got();
    assert!(
        got[before..]
            .iter()
            .all(|g| g.signature.split(' ').count() == 2),
        "two signatures during the rotation"
    );
    // Every request verifies with the old secret (and the ones after the rotation with the
    // new one as well, by the server's own signing: the old one is what the reference
    // verifier is given).
    verify_with_reference(&got, dir.path());
    // Unknown endpoints and bad bodies are refused by name.
    let (status, body) = request(
        &server.addr,
        "POST",
        "/admin/webhooks/nope/disable",
        ADMIN,
        "",
    )
    .expect("answer");
    assert_eq!(status, 404, "{body}");
    let (status, body) = request(
        &server.addr,
        "POST",
        "/admin/webhooks",
        ADMIN,
        &json!({"url": "http://127.0.0.1:9/h"}).to_string(),
    )
    .expect("answer");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("allow_private"), "{body}");
    let (status, body) = request(
        &server.addr,
        "POST",
        "/admin/webhooks",
        ADMIN,
        &json!({"url": receiver.url(), "allow_private": true, "events": ["lead.sales_ready"]})
            .to_string(),
    )
    .expect("answer");
    assert_eq!(status, 201, "{body}");
    let added: Value = serde_json::from_str(&body).expect("JSON");
    assert!(
        added["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("whsec_"))
    );
    let text = std::fs::read_to_string(&config).expect("config");
    assert_eq!(text.matches("[[webhooks]]").count(), 2, "{text}");
}

/// `Retry-After` on a 429 is honoured (the schedule alone would wait a minute), and a
/// redirect is not followed: it is a failed attempt like any other answer but 2xx.
#[test]
fn retry_after_is_honoured_and_redirects_are_not_followed() {
    if !ort_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let receiver = Receiver::start();
    receiver.set(TOO_MANY_ONCE);
    let config = setup(dir.path(), &receiver.url(), "[60, 60]");
    let server = Server::start(&config);
    let mut expected = Expectation::default();
    hot_lead(&server, "R-0", &mut expected);
    assert_eq!(expected.messages.len(), 1);
    let began = Instant::now();
    wait_for_delivered(&receiver, 1, Duration::from_secs(10));
    let took = began.elapsed();
    let got = receiver.got();
    assert_eq!(
        got.iter().map(|g| g.answered).collect::<Vec<_>>(),
        vec![429, 200]
    );
    assert!(
        took < Duration::from_secs(5),
        "{took:?}: Retry-After: 1 was not honoured"
    );
    // A 307: not followed, tried again on the schedule (a minute later).
    receiver.set(REDIRECT);
    patch_profile(&server, "R-0", false, &mut expected);
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.got().len() < 3 {
        assert!(Instant::now() < deadline, "no attempt");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(receiver.got()[2].answered, 307);
    assert_eq!(
        receiver.inbox.followed.load(Ordering::SeqCst),
        0,
        "a redirect was followed"
    );
    let (_, listed) = request(&server.addr, "GET", "/admin/webhooks", ADMIN, "").expect("list");
    let listed: Value = serde_json::from_str(&listed).expect("JSON");
    assert!(
        listed["endpoints"][0]["pending"].as_u64() >= Some(1),
        "{listed}"
    );
    let log = server.log.lock().expect("log").join("\n");
    assert!(
        log.contains("HTTP 307"),
        "the attempt's error is logged: {log}"
    );
    assert!(
        !log.contains("moved"),
        "the receiver's answer is not logged"
    );
}

/// A lead cools down with silence: no event, only time, and the rescoring sweep says so to
/// the CRM (`lead.cooled`, with the reasons of the score that cooled it). In process: the
/// sweep is run at a moment weeks ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_tells_when_a_lead_cools_down_with_silence() {
    use serving::webhooks::endpoints::WebhookConfig;
    use serving::webhooks::{DeliverySettings, Webhooks};
    if !ort_available() {
        return;
    }
    // The receiver, in this runtime.
    let inbox = Arc::new(Inbox::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let app = Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(Arc::clone(&inbox));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    // The server's state: the fixture models, a store, one endpoint.
    let dir = tempfile::tempdir().expect("temp dir");
    copy_dir(
        &repo_root().join("serving/tests/fixtures/registry"),
        &dir.path().join("registry"),
    );
    let state = serving::AppState::new(
        serving::Limits::default(),
        serving::KeySet::new(&[KEY.into()], &[ADMIN.into()]).expect("keys"),
        "loading",
    );
    let reloader = serving::Reloader::new(
        models::bundle::Registry::new(dir.path().join("registry")),
        None,
        serving::PoolConfig {
            sessions: 1,
            intra_threads: 1,
        },
    );
    assert!(reloader.reload_once(&state).refused.is_empty());
    let store =
        store::RedbStore::open(store::StoreOpen::new(dir.path().join("store"))).expect("store");
    state.set_store(Arc::new(store));
    let table = WebhookConfig {
        id: Some("crm".into()),
        url,
        secret: SECRET.into(),
        models: None,
        events: None,
        allow_private: true,
        disabled: false,
        disabled_reason: None,
        previous_secret: None,
        previous_secret_until: None,
    };
    let hub = Webhooks::new(None, &[table], DeliverySettings::default()).expect("endpoints");
    state.set_webhooks(Arc::new(hub)).expect("webhooks");
    let app = serving::app(state.clone());
    // A lead busy over the last days: sales-ready.
    let now = now_ms();
    let types = [
        "web_visit",
        "pricing_page_view",
        "demo_request",
        "email_open",
    ];
    let events: Vec<Value> = (0..8)
        .map(|i| {
            json!({"entity": "T-1", "id": format!("t{i}"), "ts": now - (8 - i) * DAY_MS / 4,
                   "type": types[i as usize % 4], "channel": "web"})
        })
        .collect();
    let mut first = events[0].clone();
    first["profile"] = json!({"industry": "Retail", "employee_band": "51-200", "country": "Germany",
        "job_title": "Marketing Manager", "seniority": "Manager", "lead_source": "webinar",
        "annual_revenue_musd": 12.5});
    let mut events = events;
    events[0] = first;
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/v1/events")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {KEY}"))
        .body(axum::body::Body::from(
            json!({"events": events}).to_string(),
        ))
        .expect("request");
    let response = tower::ServiceExt::oneshot(app, request)
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    let answer: Value = serde_json::from_slice(&body).expect("JSON");
    let score = &answer["entities"][0]["scores"][0];
    assert_eq!(score["sales_ready"], true, "{answer}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while inbox.got.lock().expect("inbox").is_empty() {
        assert!(Instant::now() < deadline, "no lead.sales_ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Weeks of silence, then the sweep.
    let later = now + 40 * DAY_MS;
    let report = serving::sweep::sweep_once(&state, later, None)
        .await
        .expect("sweep");
    assert_eq!(report.entities, 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    let cooled = loop {
        let got = inbox.got.lock().expect("inbox").clone();
        if let Some(g) = got.iter().find(|g| g.body.contains("lead.cooled")) {
            break g.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no lead.cooled after the sweep: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let message: Value = serde_json::from_str(&cooled.body).expect("JSON");
    assert_eq!(message["data"]["id"], "T-1");
    assert_eq!(message["data"]["sales_ready"], false);
    assert!(
        message["data"]["reasons"]["negative"].is_array(),
        "the reasons of the cooled score: {message}"
    );
    assert_eq!(
        message["data"]["scored_at"],
        chrono::DateTime::from_timestamp_millis(later)
            .expect("time")
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
}
