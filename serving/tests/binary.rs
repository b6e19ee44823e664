//! The `leadscore-serve` binary as an operator runs it: settings from a configuration file
//! and the environment, a real socket, JSON logs without request content, a graceful stop
//! on SIGTERM within the grace period, and hostile clients that must not take it down.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ort_available, repo_root};

const CLIENT_KEY: &str = "binary-test-client-key-1";
const ADMIN_KEY: &str = "binary-test-admin-key-01";

fn serve(config: &Path, envs: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_leadscore-serve"));
    command
        .arg("--config")
        .arg(config)
        .env_remove("LEADSCORE_API_KEYS")
        .env_remove("LEADSCORE_ADMIN_KEYS")
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// The server's log, line by line, as it comes.
type Log = std::sync::mpsc::Receiver<String>;

/// Reads the server's JSON log lines until one says it is listening; returns the address,
/// the lines read and the rest of the log.
fn listening_address(child: &mut Child) -> (String, Vec<String>, Log) {
    let stderr = child.stderr.take().expect("stderr");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let Ok(line) = receiver.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        let parsed: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        lines.push(line);
        if parsed["fields"]["message"] == "listening" {
            let addr = parsed["fields"]["addr"].as_str().expect("addr").to_owned();
            return (addr, lines, receiver);
        }
    }
    panic!("the server did not say it listens: {lines:#?}");
}

/// One HTTP/1.1 request on a fresh connection; returns the status and the body.
fn http(addr: &str, method: &str, path: &str, key: Option<&str>, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn wait_ready(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if http(addr, "GET", "/readyz", None, "").0 == 200 {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("not ready after 30 s");
}

#[test]
fn serves_from_a_configuration_file_and_stops_gracefully_on_sigterm() {
    if !ort_available() {
        return;
    }
    let (_dir, config) = fixture_config("log_level = \"debug\"\ndrift_window_secs = 86400\n");
    // The admin key from the environment, the rest from the file.
    let mut child = Running::start(&config);
    let (addr, mut log, rest) = listening_address(&mut child.0);
    wait_ready(&addr);

    let lead = r#"{"id": "secret-lead-id", "created_at": "2025-09-01T00:00:00Z",
        "as_of": "2025-10-01T00:00:00Z", "profile": {"industry": "Software",
        "country": "secret-country"}, "events": [{"ts": "2025-09-20T10:00:00Z",
        "type": "demo_request", "channel": "organic"}]}"#;
    let (status, body) = http(
        &addr,
        "POST",
        "/v1/score/propensity",
        Some(CLIENT_KEY),
        lead,
    );
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(answer["model"]["version"], "fixture-leads-v1");
    let (status, _) = http(&addr, "POST", "/v1/score/propensity", None, lead);
    assert_eq!(status, 401);
    // The drift window from the file; the one lead scored is counted.
    let (status, body) = http(&addr, "GET", "/v1/drift/propensity", Some(CLIENT_KEY), "");
    assert_eq!(status, 200, "{body}");
    let drift: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(drift["window_seconds"], 86400);
    assert_eq!(drift["drift"]["rows"], 1);
    let (status, body) = http(&addr, "POST", "/admin/reload", Some(ADMIN_KEY), "");
    assert_eq!(status, 200, "{body}");

    // SIGTERM: the process finishes and exits 0.
    sigterm(&child.0);
    let (status, _) = wait_exit(&mut child.0, Duration::from_secs(20));
    assert!(status.success(), "{status}");
    assert!(
        TcpStream::connect(&addr).is_err(),
        "still listening after exit"
    );

    // The log: every request at debug level, nothing of what was sent.
    log.extend(rest.iter());
    let messages: Vec<serde_json::Value> = log
        .iter()
        .map(|line| serde_json::from_str(line).expect("JSON log line"))
        .collect();
    assert!(
        messages.iter().any(|m| m["fields"]["message"] == "request"
            && m["fields"]["route"] == "/v1/score/{model}"
            && m["fields"]["status"] == 200),
        "{log:#?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m["fields"]["message"] == "serving model"),
        "{log:#?}"
    );
    assert_eq!(
        messages.last().map(|m| m["fields"]["message"].clone()),
        Some(serde_json::json!("stopped"))
    );
    assert!(
        !log.iter().any(|l| l.contains("secret")),
        "request content in the log: {log:#?}"
    );
}

#[test]
fn refuses_to_start_without_an_admin_key_or_with_a_bad_thresholds_file() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("serve.toml");
    std::fs::write(&config, "addr = \"127.0.0.1:0\"\nregistry = \"nowhere\"\n").expect("write");
    let out = serve(&config, &[]).output().expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no admin key configured"), "{stderr}");
    assert!(stderr.contains("LEADSCORE_ADMIN_KEYS"), "{stderr}");

    let out = serve(&config, &[("LEADSCORE_ADMIN_KEYS", "short")])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("admin key 1 must have at least 16 characters"),
        "{stderr}"
    );

    let out = serve(
        &config,
        &[
            ("LEADSCORE_ADMIN_KEYS", ADMIN_KEY),
            ("LEADSCORE_DRIFT_WINDOW_SECS", "10"),
        ],
    )
    .output()
    .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("drift_window_secs is 10; it must be between 60 and 604800"),
        "{stderr}"
    );

    let thresholds = dir.path().join("thresholds.toml");
    std::fs::write(&thresholds, "[propensity]\nsales_ready = 1.5\n").expect("write");
    std::fs::write(
        &config,
        format!(
            "addr = \"127.0.0.1:0\"\nregistry = \"nowhere\"\nthresholds = {:?}\n",
            thresholds.display().to_string()
        ),
    )
    .expect("write");
    if !ort_available() {
        return;
    }
    let out = serve(&config, &[("LEADSCORE_ADMIN_KEYS", ADMIN_KEY)])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("thresholds.toml") && stderr.contains("sales_ready is 1.5"),
        "{stderr}"
    );
}

/// Writes a configuration serving the fixture registry with the client key and `extra`
/// lines (the admin key comes from the environment, as the tests pass it);
/// returns the folder (kept alive by the caller) and the file.
fn fixture_config(extra: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("serve.toml");
    let registry = repo_root().join("serving/tests/fixtures/registry");
    std::fs::write(
        &config,
        format!(
            "addr = \"127.0.0.1:0\"\nregistry = {:?}\nstore = {:?}\n\
             api_keys = [\"{CLIENT_KEY}\"]\nsessions = 1\n{extra}",
            registry.display().to_string(),
            dir.path().join("store").display().to_string()
        ),
    )
    .expect("write");
    (dir, config)
}

/// A server process that is killed when the test ends, even by a failed assertion.
struct Running(Child);

impl Running {
    /// The server on `config`, with the admin key from the environment.
    fn start(config: &Path) -> Self {
        Running(
            serve(config, &[("LEADSCORE_ADMIN_KEYS", ADMIN_KEY)])
                .spawn()
                .expect("spawn"),
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn sigterm(child: &Child) {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
}

/// Waits for the process to exit, at most `limit`; the time it took.
fn wait_exit(child: &mut Child, limit: Duration) -> (std::process::ExitStatus, Duration) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return (status, start.elapsed());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("still running {limit:?} after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_with_a_stalled_client_exits_within_the_grace_period() {
    if !ort_available() {
        return;
    }
    // The body may take 60 s; the grace period is 2 s.
    let (_dir, config) = fixture_config("shutdown_grace_secs = 2\nbody_timeout_secs = 60\n");
    let mut child = Running::start(&config);
    let (addr, _, _rest) = listening_address(&mut child.0);
    wait_ready(&addr);
    // A keyed request whose body stops halfway: its handler waits for the rest.
    let mut stalled = TcpStream::connect(&addr).expect("connect");
    write!(
        stalled,
        "POST /v1/score/propensity HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CLIENT_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"created_at\":"
    )
    .expect("write");
    std::thread::sleep(Duration::from_millis(300));
    sigterm(&child.0);
    let (status, took) = wait_exit(&mut child.0, Duration::from_secs(20));
    assert!(status.success(), "{status}");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "exited {took:?} after SIGTERM with a 2 s grace period"
    );
}

/// Issue 21's bar, through `hostile-clients` (its figures are printed): 2,000 idle keyless
/// connections, 200 with half a request line, 500 keyless 1 MiB bodies trickling in and two
/// keyed 1 MiB profiles of distinct field names, while a normal client scores on a fresh
/// connection every 10 ms. Every normal request is answered, within 100 ms; the server's
/// memory stays under twice its idle figure; everything the attackers hold is released
/// within the configured timeouts (3 s here); the large bodies are answered within a second.
#[test]
fn hostile_clients_do_not_take_the_server_down() {
    if !ort_available() {
        return;
    }
    let (dir, config) = fixture_config(
        "header_timeout_secs = 3\nbody_timeout_secs = 3\nidle_timeout_secs = 3\n\
         max_connections = 8000\n",
    );
    let mut child = Running::start(&config);
    let (addr, _, _rest) = listening_address(&mut child.0);
    wait_ready(&addr);
    let body = dir.path().join("lead.json");
    std::fs::write(
        &body,
        r#"{"created_at": "2025-09-01T00:00:00Z", "profile": {"industry": "Software"},
            "events": [{"ts": "2025-09-20T10:00:00Z", "type": "demo_request"}]}"#,
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_hostile-clients"))
        .args([
            "--addr",
            &addr,
            "--pid",
            &child.0.id().to_string(),
            "--key",
            CLIENT_KEY,
        ])
        .arg("--body")
        .arg(&body)
        .args([
            "--idle",
            "2000",
            "--slow-headers",
            "200",
            "--slow-bodies",
            "500",
        ])
        .args(["--large-bodies", "2", "--wait-secs", "6"])
        .output()
        .expect("run hostile-clients");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f: serde_json::Value = serde_json::from_str(&stdout).expect("figures");
    assert_eq!(f["attack"]["connect_errors"], 0, "the attack did not open");
    assert_eq!(f["normal_failure_count"], 0, "{f}");
    assert!(f["normal"]["count"].as_u64().unwrap_or(0) >= 50, "{f}");
    let normal_max = f["normal"]["max_ms"].as_f64().expect("max");
    assert!(normal_max < 100.0, "a normal request took {normal_max} ms");
    let idle = f["server"]["idle_rss_bytes"].as_f64().expect("idle");
    let peak = f["server"]["max_rss_bytes_under_attack"]
        .as_f64()
        .expect("peak");
    assert!(peak < 2.0 * idle, "memory {peak} under attack, {idle} idle");
    let released = f["server"]["released_after_attack_start_secs"].as_f64();
    assert!(
        released.is_some_and(|s| s < 3.0 + 3.0),
        "connections not released within the timeouts: {f}"
    );
    assert_eq!(
        f["attacker_connections_closed_by_server"], f["attacker_connections"],
        "{f}"
    );
    // The large bodies are answered (a 4xx: more fields than a profile may have), and
    // quickly: a check quadratic in the fields took 9 s of CPU for one of them. (Their time
    // against the bar's 50 ms, and /healthz beside them, are `scripts/bench-hostile`'s
    // figures from the release build.)
    for answer in f["large_bodies"].as_array().expect("large") {
        let status = answer["status"].as_u64().expect("status");
        assert!(status == 200 || (400..500).contains(&status), "{f}");
        assert!(answer["ms"].as_f64().expect("ms") < 1000.0, "{f}");
    }
    sigterm(&child.0);
    let (status, _) = wait_exit(&mut child.0, Duration::from_secs(20));
    assert!(status.success(), "{status}");
}
