//! Hostile and careless clients against a running `leadscore-serve`, beside a normal client
//! that keeps scoring; prints what it measured as one JSON object. `serving/tests/hostile.rs`
//! runs it against the debug server and checks the figures against issue 21's bar;
//! `scripts/bench-hostile` runs it against the release server and prints them.
//!
//! ```text
//! hostile-clients --addr 127.0.0.1:8080 --pid 1234 --key CLIENT_KEY --body lead.json \
//!     [--idle 2000] [--slow-bodies 500] [--slow-headers 200] [--large-bodies 2]
//!     [--large-fields 80000] [--wait-secs 8] [--attacker-ip 127.0.0.2]
//! ```
//!
//! In order: a warm-up of normal requests, then the server's resident memory and open files
//! (its idle figures); then the attack opens `--idle` connections that send nothing,
//! `--slow-headers` that send half a request line and stop, and `--slow-bodies` keyless
//! `POST`s announcing a 1 MiB body and sending all but its last bytes slowly, while the
//! normal client scores `lead.json` on a fresh connection each time and `/healthz` is probed
//! every 5 ms; `--large-bodies` keyed 1 MiB profiles of `--large-fields` distinct field
//! names are sent at once meanwhile. Then it waits `--wait-secs` for the server's timeouts and counts what is
//! still open. The attackers connect from `--attacker-ip` (127.0.0.2 by default), the
//! normal client from 127.0.0.1, as they would from two hosts: the server holds back an
//! address that sends many wrong keys. A binary of the package rather than an example, so it
//! builds with the workspace's bins.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

struct Options {
    addr: String,
    pid: u32,
    key: String,
    body: String,
    idle: usize,
    slow_bodies: usize,
    slow_headers: usize,
    large_bodies: usize,
    large_fields: usize,
    wait: Duration,
    attacker_ip: std::net::IpAddr,
}

fn options() -> anyhow::Result<Options> {
    let mut args = std::env::args().skip(1);
    let mut o = Options {
        addr: String::new(),
        pid: 0,
        key: String::new(),
        body: String::new(),
        idle: 2000,
        slow_bodies: 500,
        slow_headers: 200,
        large_bodies: 2,
        large_fields: 80_000,
        wait: Duration::from_secs(8),
        attacker_ip: std::net::IpAddr::from([127, 0, 0, 2]),
    };
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        let number = || -> anyhow::Result<usize> {
            value
                .parse()
                .with_context(|| format!("{flag}: not a number: {value}"))
        };
        match flag.as_str() {
            "--addr" => o.addr = value.clone(),
            "--pid" => o.pid = u32::try_from(number()?)?,
            "--key" => o.key = value.clone(),
            "--body" => {
                o.body = std::fs::read_to_string(&value).with_context(|| value.clone())?;
            }
            "--idle" => o.idle = number()?,
            "--slow-bodies" => o.slow_bodies = number()?,
            "--slow-headers" => o.slow_headers = number()?,
            "--large-bodies" => o.large_bodies = number()?,
            "--large-fields" => o.large_fields = number()?,
            "--wait-secs" => o.wait = Duration::from_secs(u64::try_from(number()?)?),
            "--attacker-ip" => o.attacker_ip = value.parse().with_context(|| value.clone())?,
            other => bail!("unknown flag {other}"),
        }
    }
    if o.addr.is_empty() || o.pid == 0 || o.key.is_empty() || o.body.is_empty() {
        bail!("--addr, --pid, --key and --body are required");
    }
    Ok(o)
}

/// Raises the soft open-file limit to the hard one (the attack needs thousands of sockets).
fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
    limit.rlim_cur
}

/// A connection to `addr` from `from` (any port).
fn connect_from(from: std::net::IpAddr, addr: &str) -> std::io::Result<TcpStream> {
    use std::net::ToSocketAddrs as _;
    let to = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(to),
        socket2::Type::STREAM,
        None,
    )?;
    socket.bind(&std::net::SocketAddr::new(from, 0).into())?;
    socket.connect(&to.into())?;
    Ok(socket.into())
}

/// The server's resident memory, bytes.
fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .context("no VmRSS")?;
    Ok(kb * 1024)
}

/// The server's open file descriptors.
fn open_fds(pid: u32) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// One request on a fresh connection: status and time to the whole answer.
fn request(addr: &str, head: &str, body: &str) -> anyhow::Result<(u16, Duration)> {
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    stream.set_nodelay(true)?;
    stream.write_all(format!("{head}Content-Length: {}\r\n\r\n", body.len()).as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let elapsed = start.elapsed();
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| {
            format!(
                "no status in {:?}",
                text.chars().take(200).collect::<String>()
            )
        })?;
    Ok((status, elapsed))
}

fn score_head(addr: &str, key: &str) -> String {
    format!(
        "POST /v1/score/propensity HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nConnection: close\r\n"
    )
}

/// A profile of `fields` distinct field names, padded to fill about `size` bytes.
fn distinct_keys_body(size: usize, fields: usize) -> String {
    let head = r#"{"created_at":"2026-01-01T00:00:00Z","profile":{"#;
    // `"name":1,` per field: the name's length that fills the size.
    let name_len = ((size - head.len() - 2) / fields.max(1))
        .saturating_sub(5)
        .max(8);
    let mut body = String::with_capacity(size + 200);
    body.push_str(head);
    for i in 0..fields {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!("\"{i:0>name_len$}\":1"));
    }
    body.push_str("}}");
    body
}

#[derive(Default)]
struct Latencies(Vec<Duration>);

impl Latencies {
    fn summary(&mut self) -> serde_json::Value {
        self.0.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let at = |q: f64| {
            self.0
                .get(((self.0.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .map_or(0.0, ms)
        };
        serde_json::json!({
            "count": self.0.len(),
            "p50_ms": at(0.5),
            "p99_ms": at(0.99),
            "max_ms": self.0.last().copied().map_or(0.0, ms),
        })
    }
}

fn main() -> anyhow::Result<()> {
    let o = options()?;
    let fd_limit = raise_open_file_limit();
    let head = score_head(&o.addr, &o.key);

    // Warm-up and the idle figures.
    for _ in 0..50 {
        let (status, _) = request(&o.addr, &head, &o.body)?;
        if status != 200 {
            bail!("the warm-up request was answered {status}");
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let idle_rss = rss_bytes(o.pid)?;
    let idle_fds = open_fds(o.pid)?;

    let attacking = Arc::new(AtomicBool::new(true));
    let max_rss = Arc::new(std::sync::atomic::AtomicU64::new(idle_rss));

    // The normal client and the /healthz probe run for the whole attack.
    let normal = {
        let (attacking, addr, head, body) = (
            Arc::clone(&attacking),
            o.addr.clone(),
            head.clone(),
            o.body.clone(),
        );
        std::thread::spawn(move || {
            let (mut lat, mut failures) = (Latencies::default(), Vec::new());
            while attacking.load(Ordering::Relaxed) {
                match request(&addr, &head, &body) {
                    Ok((200, t)) => lat.0.push(t),
                    Ok((status, _)) => failures.push(format!("status {status}")),
                    Err(e) => failures.push(e.to_string()),
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (lat, failures)
        })
    };
    let probe = |attacking: Arc<AtomicBool>, addr: String| {
        std::thread::spawn(move || {
            let mut lat = Latencies::default();
            let head = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
            while attacking.load(Ordering::Relaxed) {
                if let Ok((200, t)) = request(&addr, &head, "") {
                    lat.0.push(t);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            lat
        })
    };
    let memory = {
        let (attacking, max_rss, pid) = (Arc::clone(&attacking), Arc::clone(&max_rss), o.pid);
        std::thread::spawn(move || {
            while attacking.load(Ordering::Relaxed) {
                if let Ok(rss) = rss_bytes(pid) {
                    max_rss.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // /healthz with nothing but the normal client, for comparison.
    let quiet = Arc::new(AtomicBool::new(true));
    let quiet_probe = probe(Arc::clone(&quiet), o.addr.clone());
    std::thread::sleep(Duration::from_millis(500));
    quiet.store(false, Ordering::Relaxed);
    let mut quiet_healthz = quiet_probe
        .join()
        .map_err(|_| anyhow::anyhow!("probe panicked"))?;

    let attack_start = Instant::now();
    let healthz = probe(Arc::clone(&attacking), o.addr.clone());
    let mut held: Vec<TcpStream> = Vec::new();
    let mut connect_errors = 0usize;
    for _ in 0..o.idle {
        match connect_from(o.attacker_ip, &o.addr) {
            Ok(s) => held.push(s),
            Err(_) => connect_errors += 1,
        }
    }
    for _ in 0..o.slow_headers {
        if let Ok(mut s) = connect_from(o.attacker_ip, &o.addr) {
            let _ = s.write_all(b"POST /v1/score/propensity HTTP/1.1\r\nHost: x\r\nX-Slow: ");
            held.push(s);
        }
    }
    let mut slow: Vec<TcpStream> = Vec::new();
    let body_len = 1 << 20;
    let opened = attack_start.elapsed();
    for _ in 0..o.slow_bodies {
        if let Ok(mut s) = connect_from(o.attacker_ip, &o.addr) {
            let head = format!(
                "POST /v1/score/propensity HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                 Content-Length: {body_len}\r\n\r\n{{\"profile\":{{\"x\":\""
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.set_nonblocking(true);
            slow.push(s);
        }
    }
    // Large keyed bodies of distinct keys, all at once, in the middle of the attack.
    let large_body = Arc::new(distinct_keys_body(body_len - 100, o.large_fields));
    let large: Vec<_> = (0..o.large_bodies)
        .map(|_| {
            let (addr, head, body) = (o.addr.clone(), head.clone(), Arc::clone(&large_body));
            std::thread::spawn(move || request(&addr, &head, &body))
        })
        .collect();
    // The slow bodies trickle in 16 KiB pieces until all but 16 bytes are sent.
    let piece = vec![b'a'; 16 * 1024];
    let mut sent = vec![0usize; slow.len()];
    let trickle_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < trickle_until {
        for (s, n) in slow.iter_mut().zip(sent.iter_mut()) {
            if *n + piece.len() + 16 < body_len
                && let Ok(k) = s.write(&piece)
            {
                *n += k;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut large_results = Vec::new();
    for handle in large {
        let result = handle
            .join()
            .map_err(|_| anyhow::anyhow!("large-body client panicked"))?;
        large_results.push(match result {
            Ok((status, t)) => serde_json::json!({"status": status, "ms": t.as_secs_f64() * 1e3}),
            Err(e) => serde_json::json!({"error": e.to_string()}),
        });
    }
    let attack_done = attack_start.elapsed();
    let attack_rss = max_rss.load(Ordering::Relaxed);
    let attack_fds = open_fds(o.pid)?;

    // The server's timeouts close what the attackers hold.
    let wait_start = Instant::now();
    let mut released_after = None;
    while wait_start.elapsed() < o.wait {
        std::thread::sleep(Duration::from_millis(100));
        if released_after.is_none() && open_fds(o.pid)? <= idle_fds + 2 {
            released_after = Some(attack_start.elapsed());
        }
    }
    attacking.store(false, Ordering::Relaxed);
    let (mut normal_lat, normal_failures) = normal
        .join()
        .map_err(|_| anyhow::anyhow!("normal client panicked"))?;
    let mut healthz_lat = healthz
        .join()
        .map_err(|_| anyhow::anyhow!("probe panicked"))?;
    memory
        .join()
        .map_err(|_| anyhow::anyhow!("memory sampler panicked"))?;
    // How many of the attackers' connections the server closed.
    let mut closed_by_server = 0usize;
    for s in held.iter_mut().chain(slow.iter_mut()) {
        let _ = s.set_nonblocking(false);
        let _ = s.set_read_timeout(Some(Duration::from_millis(1)));
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => {
                    closed_by_server += 1;
                    break;
                }
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(_) => {
                    closed_by_server += 1;
                    break;
                }
            }
        }
    }
    let after_rss = rss_bytes(o.pid)?;
    let after_fds = open_fds(o.pid)?;
    let figures = serde_json::json!({
        "client_open_file_limit": fd_limit,
        "attack": {
            "idle": o.idle,
            "slow_headers": o.slow_headers,
            "slow_bodies": o.slow_bodies,
            "large_bodies": o.large_bodies,
            "connect_errors": connect_errors,
            "idle_and_slow_headers_opened_after_secs": opened.as_secs_f64(),
            "bodies_sent_after_secs": attack_done.as_secs_f64(),
        },
        "normal": normal_lat.summary(),
        "normal_failure_count": normal_failures.len(),
        "normal_failures_first": normal_failures.iter().take(10).collect::<Vec<_>>(),
        "healthz_quiet": quiet_healthz.summary(),
        "healthz_under_attack": healthz_lat.summary(),
        "large_bodies": large_results,
        "server": {
            "idle_rss_bytes": idle_rss,
            "max_rss_bytes_under_attack": attack_rss,
            "rss_bytes_after": after_rss,
            "idle_fds": idle_fds,
            "fds_under_attack": attack_fds,
            "fds_after": after_fds,
            "released_after_attack_start_secs": released_after.map(|d| d.as_secs_f64()),
        },
        "attacker_connections_closed_by_server": closed_by_server,
        "attacker_connections": held.len() + slow.len(),
    });
    println!("{}", serde_json::to_string_pretty(&figures)?);
    Ok(())
}
