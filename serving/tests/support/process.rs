//! A `leadscore-serve` process for the tests that need a real one (killed with SIGKILL,
//! restarted on the same store), and plain HTTP/1.1 requests to it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A server process, killed when dropped; its log lines (JSON) are kept.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `leadscore-serve --config config` and waits until it is ready.
    pub fn start(config: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_leadscore-serve"))
            .arg("--config")
            .arg(config)
            .env_remove("LEADSCORE_API_KEYS")
            .env_remove("LEADSCORE_ADMIN_KEYS")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the server");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("\"listening\"") {
                    let _ = tx.send(line.clone());
                }
                lines.lock().expect("log").push(line);
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => panic!(
                "the server did not say it listens: {:#?}",
                log.lock().expect("log")
            ),
        };
        let parsed: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        let addr = parsed["fields"]["addr"].as_str().expect("addr").to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        while request(&addr, "GET", "/readyz", "", "").map(|(s, _)| s) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "not ready: {:#?}",
                log.lock().expect("log")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Server { child, addr, log }
    }

    /// Kills it with SIGKILL and waits for it to end.
    pub fn kill(mut self) -> Vec<String> {
        let status = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let _ = self.child.wait();
        std::mem::take(&mut *self.log.lock().expect("log"))
    }
}

/// One request on a fresh connection with `key`; `None` when the server is not there or
/// went away.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    key: &str,
    body: &str,
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}
