//! The accept loop: hyper's HTTP/1 connections with the limits a public port needs.
//!
//! `axum::serve` has no timeouts and no connection limit, so a client that opens connections
//! and sends nothing, or half a request, holds a file descriptor and memory for ever. Here:
//!
//! * at most [`ConnLimits::max_connections`] connections are open at once; one more is
//!   accepted and closed at once (so it costs no file descriptor for long), and a warning
//!   says so at most once a second;
//! * a connection that sends nothing is closed after [`ConnLimits::header_timeout`], and
//!   holds no buffer meanwhile; a request's headers must arrive within it of the
//!   connection's first byte or of the previous answer's end (hyper's header timer, which
//!   also runs while a keep-alive connection waits for its next request, so it closes idle
//!   keep-alive connections too);
//! * a connection on which no byte moves either way for [`ConnLimits::idle_timeout`] while
//!   the server waits to read or write (a client that stops reading its answers, a body that
//!   stops arriving) is closed;
//! * the body's own deadline is the handlers' (see [`crate::http`]): it is read only after
//!   the key is checked, within `body_timeout`.
//!
//! On shutdown the listener closes, every connection is asked to finish its request in
//! flight and close, and after [`ConnLimits::shutdown_grace`] the rest are dropped.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tower::ServiceExt as _;

/// The connection-level limits (the body's are in [`Limits`](crate::Limits)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Time to send a request's headers, from the connection's opening or the previous
    /// answer's end.
    pub header_timeout: Duration,
    /// Longest time with no byte moving while the server waits to read or write.
    pub idle_timeout: Duration,
    /// How long shutdown waits for requests in flight before dropping them.
    pub shutdown_grace: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// File descriptors kept free of connections: registry files, bundles being loaded, logs.
pub const RESERVED_FDS: u64 = 128;

/// Raises this process's soft open-file limit to its hard limit and returns the connections
/// that fit: `wanted`, or fewer when the hard limit is too low (then it says so).
pub fn fit_connections_to_open_file_limit(wanted: usize) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if got != 0 {
        tracing::warn!("cannot read the open-file limit; max_connections left as configured");
        return wanted;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        }
    }
    let room = usize::try_from(limit.rlim_cur.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
    if room < wanted {
        tracing::warn!(
            open_file_limit = limit.rlim_cur,
            max_connections = room,
            wanted,
            "the open-file limit allows fewer connections than configured; raise `ulimit -n`"
        );
        room.max(1)
    } else {
        wanted
    }
}

/// Turns off transparent huge pages for this process. mimalloc asks the kernel for huge
/// pages for its arenas, so a few small allocations on a fresh 2 MiB region made it
/// resident whole: 2,000 idle connections grew the server's resident memory by 34 MB, of
/// which 33 MB were huge pages; with 4 KiB pages, by 20 MB (debug build, one run each). A
/// failure (an old kernel) is ignored: it only costs memory.
pub fn no_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Listens on `addr` with a backlog of `max_connections` (the kernel caps it at
/// `net.core.somaxconn`): a burst of new connections waits in the kernel's queue instead of
/// having its SYNs dropped (tokio's default backlog of 1,024 made a normal client's connect
/// wait a whole second for its SYN to be sent again while 2,700 hostile connections opened).
pub fn bind(addr: SocketAddr, max_connections: usize) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(u32::try_from(max_connections).unwrap_or(u32::MAX).max(1024))
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains as described in the
/// module documentation. Returns once every connection is closed or dropped.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let refused = RefusalLog::default();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors, or the peer gone before accept: wait a
                    // moment rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            refused.note(limits.max_connections);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (app, builder, watcher) = (app.clone(), builder.clone(), graceful.watcher());
        tokio::spawn(async move {
            // hyper's buffers (8 KiB to read, its connection state) are allocated only once
            // the client has sent something: a connection that sends nothing holds the task
            // and the socket, and is closed at the header timeout like any other.
            match tokio::time::timeout(limits.header_timeout, stream.readable()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return drop(permit),
            }
            let io = TokioIo::new(IdleTimeout::new(stream, limits.idle_timeout));
            let service = app.map_request(move |request: hyper::Request<hyper::body::Incoming>| {
                let mut request = request.map(axum::body::Body::new);
                request
                    .extensions_mut()
                    .insert(ConnectInfo::<SocketAddr>(peer));
                request
            });
            let conn = builder.serve_connection(io, TowerToHyperService::new(service));
            // Boxed: the task's own future stays small while it waits above.
            if let Err(e) = Box::pin(watcher.watch(conn)).await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    let open = graceful.count();
    tracing::info!(
        open_connections = open,
        grace_secs = limits.shutdown_grace.as_secs_f64(),
        "finishing the requests in flight"
    );
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = limits.shutdown_grace.as_secs_f64(),
            "connections still open after the shutdown grace period are dropped"
        );
    }
    Ok(())
}

/// Warns of refused connections at most once a second, with the count since the last warning.
#[derive(Default)]
struct RefusalLog {
    count: AtomicU64,
    last: std::sync::Mutex<Option<Instant>>,
}

impl RefusalLog {
    fn note(&self, max_connections: usize) {
        let count = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            *last = Some(Instant::now());
            self.count.store(0, Ordering::Relaxed);
            tracing::warn!(
                refused = count,
                max_connections,
                "connection limit reached: new connections are closed"
            );
        }
    }
}

/// A TCP stream that fails with `TimedOut` when no byte has moved either way for `limit`
/// while a read or a write waits.
struct IdleTimeout {
    inner: TcpStream,
    limit: Duration,
    /// Armed while a read or write is pending; reset whenever bytes move.
    timer: Pin<Box<Sleep>>,
    armed: bool,
}

impl IdleTimeout {
    fn new(inner: TcpStream, limit: Duration) -> Self {
        IdleTimeout {
            inner,
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
            armed: false,
        }
    }

    /// Bytes moved: the next wait starts a fresh period.
    fn progressed(&mut self) {
        self.armed = false;
    }

    /// What a read or write of the inner stream gave: progress resets the period; a pending
    /// operation starts it if it is not running, and fails once it has run out.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.progressed();
            return polled;
        }
        if !self.armed {
            self.armed = true;
            let deadline = tokio::time::Instant::now() + self.limit;
            self.timer.as_mut().reset(deadline);
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no byte moved within the idle timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for IdleTimeout {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.watch(cx, polled)
    }
}

impl AsyncWrite for IdleTimeout {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn a_silent_peer_times_out_and_a_talking_one_does_not() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            // Five bytes 60 ms apart: each gap is below the 150 ms limit, the whole is not.
            for _ in 0..5 {
                s.write_all(b"x").await.unwrap();
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
            // Then silence.
            tokio::time::sleep(Duration::from_secs(2)).await;
        });
        let (stream, _) = listener.accept().await.unwrap();
        let mut timed = IdleTimeout::new(stream, Duration::from_millis(150));
        let mut buf = [0u8; 1];
        for _ in 0..5 {
            timed.read_exact(&mut buf).await.unwrap();
        }
        let start = Instant::now();
        let err = timed.read_exact(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(100) && waited < Duration::from_secs(1),
            "{waited:?}"
        );
        client.abort();
    }
}
