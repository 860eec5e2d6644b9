//! Connections of one port: a bounded number of them, and none kept open by a client that sends
//! nothing useful.
//!
//! Every accepted connection is wrapped in a [`Conn`], which knows whether a request is in
//! flight on it (the request layer, [`super::limits`], marks it busy from a request's head to the
//! end of its response). A connection with nothing in flight is closed:
//! - **header timeout**: an HTTP/1 connection whose next request head has not been dispatched
//!   this long after its first byte (or after the connection opened): slowloris clients that
//!   dribble a header byte at a time;
//! - **idle timeout**: any connection, HTTP/1 or HTTP/2, with nothing in flight for this long.
//!   Bytes that are not a request (HTTP/2 pings, window updates) do not keep it open.
//!
//! At the connection limit, a new connection closes the longest-idle one to make room (a flood
//! of idle connections can never lock out a client with work to do); only when every open
//! connection has a request in flight is the new one refused (closed at once: gRPC clients see
//! UNAVAILABLE, HTTP clients a reset connection).
//!
//! Closing means the next read reports end of stream, so hyper ends the connection as if the
//! client had left; a busy connection is never cut. The protocol is told apart by the HTTP/2
//! preface (`PRI * HTTP/2.0`), so a [`Conn`] must see the plaintext: it wraps what the port's
//! [`Listener`] yields (accepted, and under TLS handshaken: the decrypted stream), as a
//! [`Bounded`] listener. The connection is admitted, and its header timeout starts, once the
//! handshake is done; the handshake itself is bounded by the [`Listener`] (in time by the same
//! header timeout, in number by [`super::listener::MAX_PENDING_HANDSHAKES`]), so a client that
//! stalls its TLS handshake is cut like one that stalls its request head.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::{Listener, Peer};

/// Why connections were closed by this side, for the logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Closed {
    /// Over the limit with every connection busy: refused at accept.
    Refused,
    /// Closed to make room for a new connection.
    Evicted,
    /// No request head within the header timeout.
    HeaderTimeout,
    /// Nothing in flight for the idle timeout.
    IdleTimeout,
}

impl Closed {
    pub const ALL: [Closed; 4] = [
        Closed::Refused,
        Closed::Evicted,
        Closed::HeaderTimeout,
        Closed::IdleTimeout,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Closed::Refused => "refused",
            Closed::Evicted => "evicted",
            Closed::HeaderTimeout => "header_timeout",
            Closed::IdleTimeout => "idle_timeout",
        }
    }
}

/// The open connections of one port.
pub struct Connections {
    max: usize,
    header_timeout: Duration,
    idle_timeout: Duration,
    open: Mutex<HashMap<SocketAddr, Arc<ConnState>>>,
    closed: [AtomicU64; 4],
}

/// What the request layer and the connection share.
pub struct ConnState {
    addr: SocketAddr,
    timing: Mutex<Timing>,
}

struct Timing {
    /// Requests in flight (head dispatched, response body not yet finished).
    busy: usize,
    /// When `busy` last became 0 (or the connection opened).
    idle_since: Instant,
    /// An HTTP/1 request head is being read since then (its first byte, or the connection's
    /// start); None on HTTP/2 and between HTTP/1 requests until their first byte.
    head_since: Option<Instant>,
    /// The first bytes received, to recognise the HTTP/2 preface.
    preface: [u8; 3],
    preface_len: u8,
    http2: bool,
    /// Close as soon as nothing is in flight (made room for a newer connection).
    evicted: bool,
    /// The task reading the connection, woken when the connection goes idle or is evicted so it
    /// re-arms its timer or closes.
    reader: Option<Waker>,
}

impl Connections {
    pub fn new(max: usize, header_timeout: Duration, idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Connections {
            max: max.max(1),
            header_timeout,
            idle_timeout,
            open: Mutex::new(HashMap::new()),
            closed: Default::default(),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        lock(&self.open).len()
    }

    /// Connections this side closed, by reason, since the start.
    pub fn closed(&self, reason: Closed) -> u64 {
        self.closed[reason as usize].load(Ordering::Relaxed)
    }

    fn count(&self, reason: Closed) {
        self.closed[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Takes `io` (from `addr`) in, or None when it must be refused: at the limit the
    /// longest-idle connection is evicted instead, and only if none is idle is `io` refused.
    pub fn admit<T>(self: &Arc<Self>, io: T, addr: SocketAddr) -> Option<Conn<T>> {
        let now = Instant::now();
        let state = Arc::new(ConnState {
            addr,
            timing: Mutex::new(Timing {
                busy: 0,
                idle_since: now,
                head_since: Some(now),
                preface: [0; 3],
                preface_len: 0,
                http2: false,
                evicted: false,
                reader: None,
            }),
        });
        {
            let mut open = lock(&self.open);
            if open.len() >= self.max {
                let victim = open
                    .values()
                    .filter_map(|c| {
                        let t = lock(&c.timing);
                        (t.busy == 0 && !t.evicted).then_some((t.idle_since, c.clone()))
                    })
                    .min_by_key(|(since, _)| *since)
                    .map(|(_, c)| c);
                let Some(victim) = victim else {
                    drop(open);
                    self.count(Closed::Refused);
                    tracing::warn!(
                        %addr,
                        limit = self.max,
                        "connection refused: every open connection has a request in flight \
                         (--max-connections)"
                    );
                    return None;
                };
                open.remove(&victim.addr);
                victim.evict();
                self.count(Closed::Evicted);
                tracing::debug!(addr = %victim.addr, "idle connection closed to make room");
            }
            // Two live connections share a remote address only when the listener has several
            // local addresses; the older one then goes uncounted until it closes.
            open.insert(addr, state.clone());
        }
        Some(Conn {
            io,
            state,
            connections: self.clone(),
            timer: Box::pin(tokio::time::sleep_until(now + self.header_timeout)),
            closed: false,
        })
    }

    /// Marks the connection from `addr` busy until the guard is dropped; None when no
    /// connection of this port has that address (a request that did not come through it).
    pub fn busy(&self, addr: SocketAddr) -> Option<Busy> {
        let state = lock(&self.open).get(&addr).cloned()?;
        {
            let mut t = lock(&state.timing);
            t.busy += 1;
            t.head_since = None;
        }
        Some(Busy(state))
    }

    fn deadline(&self, t: &Timing) -> (Instant, Closed) {
        match t.head_since {
            Some(since) if !t.http2 => (since + self.header_timeout, Closed::HeaderTimeout),
            _ => (t.idle_since + self.idle_timeout, Closed::IdleTimeout),
        }
    }
}

impl ConnState {
    fn evict(&self) {
        let mut t = lock(&self.timing);
        t.evicted = true;
        if let Some(reader) = t.reader.take() {
            reader.wake();
        }
    }
}

/// A request in flight on a connection; dropping it may make the connection idle.
pub struct Busy(Arc<ConnState>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut t = lock(&self.0.timing);
        t.busy -= 1;
        if t.busy == 0 {
            t.idle_since = Instant::now();
            // The reader must re-arm its timer (or close, if evicted).
            if let Some(reader) = t.reader.take() {
                reader.wake();
            }
        }
    }
}

/// An admitted connection (see the module docs). Dropping it frees its place.
pub struct Conn<T> {
    io: T,
    state: Arc<ConnState>,
    connections: Arc<Connections>,
    timer: Pin<Box<Sleep>>,
    closed: bool,
}

impl<T> Conn<T> {
    /// Whether the connection must close now; arms the timer otherwise.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.closed {
            return true;
        }
        let mut t = lock(&self.state.timing);
        if t.reader.as_ref().is_none_or(|w| !w.will_wake(cx.waker())) {
            t.reader = Some(cx.waker().clone());
        }
        if t.busy > 0 {
            return false;
        }
        let reason = if t.evicted {
            Some(Closed::Evicted)
        } else {
            let (deadline, reason) = self.connections.deadline(&t);
            drop(t);
            self.timer.as_mut().reset(deadline);
            self.timer.as_mut().poll(cx).is_ready().then_some(reason)
        };
        let Some(reason) = reason else {
            return false;
        };
        self.closed = true;
        if reason != Closed::Evicted {
            self.connections.count(reason);
        }
        tracing::debug!(addr = %self.state.addr, reason = reason.name(), "closing connection");
        true
    }

    fn received(&self, bytes: &[u8]) {
        let mut t = lock(&self.state.timing);
        if t.preface_len < 3 {
            for &b in bytes.iter().take(3 - t.preface_len as usize) {
                let at = t.preface_len as usize;
                t.preface[at] = b;
                t.preface_len += 1;
            }
            if t.preface_len == 3 && &t.preface == b"PRI" {
                t.http2 = true;
                t.head_since = None;
            }
        }
        if t.busy == 0 && t.head_since.is_none() && !t.http2 {
            t.head_since = Some(Instant::now());
        }
    }
}

impl<T> Drop for Conn<T> {
    fn drop(&mut self) {
        let mut open = lock(&self.connections.open);
        if open
            .get(&self.state.addr)
            .is_some_and(|c| Arc::ptr_eq(c, &self.state))
        {
            open.remove(&self.state.addr);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Conn<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.expired(cx) {
            // End of stream: hyper ends the connection as if the client had closed it.
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && buf.filled().len() > before
        {
            self.received(&buf.filled()[before..]);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Conn<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// tonic reads the peer of a connection from its IO type: the wrapped connection's.
impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for Conn<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// A port's [`Listener`] whose connections are admitted (and bounded) by its [`Connections`].
pub struct Bounded {
    listener: Listener,
    connections: Arc<Connections>,
}

impl Bounded {
    pub fn new(listener: Listener, connections: Arc<Connections>) -> Self {
        Bounded {
            listener,
            connections,
        }
    }

    /// The next connection the listener yields that is admitted; a refused one is closed at
    /// once (dropped).
    pub async fn next_conn(&mut self) -> Conn<super::Conn> {
        loop {
            let conn = self.listener.next_conn().await;
            let addr = conn.peer().addr;
            if let Some(admitted) = self.connections.admit(conn, addr) {
                return admitted;
            }
        }
    }

    /// The connections as the stream tonic's `serve_with_incoming_shutdown` takes; dropping it
    /// closes the listening socket.
    pub fn into_incoming(
        self,
    ) -> impl futures::Stream<Item = io::Result<Conn<super::Conn>>> + Send + 'static {
        futures::stream::unfold(self, |mut bounded| async move {
            let conn = bounded.next_conn().await;
            Some((Ok(conn), bounded))
        })
    }
}

impl axum::serve::Listener for Bounded {
    type Io = Conn<super::Conn>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let conn = self.next_conn().await;
        let addr = conn.state.addr;
        (conn, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// What axum's `into_make_service_with_connect_info::<Peer>()` puts in each request.
impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Bounded>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Bounded>) -> Peer {
        stream.io().io.peer().clone()
    }
}

/// A poisoned lock only means a thread panicked while holding it; the counts it guards are
/// still usable, so keep going.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn connections(max: usize) -> Arc<Connections> {
        Connections::new(max, Duration::from_secs(10), Duration::from_secs(60))
    }

    /// A connection and the client's end of it.
    fn pair(c: &Arc<Connections>, port: u16) -> Option<(Conn<DuplexStream>, DuplexStream)> {
        let (server, client) = tokio::io::duplex(1024);
        c.admit(server, addr(port)).map(|conn| (conn, client))
    }

    async fn reads_end_of_stream(conn: &mut Conn<DuplexStream>) -> bool {
        let mut buf = [0u8; 64];
        matches!(conn.read(&mut buf).await, Ok(0))
    }

    #[tokio::test(start_paused = true)]
    async fn a_dribbled_http1_head_is_cut_after_the_header_timeout() {
        let c = connections(8);
        let (mut conn, mut client) = pair(&c, 1).unwrap();
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(conn.read(&mut buf).await.unwrap(), 16);
        // The client keeps sending a byte now and then, but never finishes the head.
        let dribble = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if client.write_all(b"X").await.is_err() {
                    break;
                }
            }
        });
        let started = Instant::now();
        loop {
            if conn.read(&mut buf).await.unwrap() == 0 {
                break;
            }
        }
        assert!(started.elapsed() <= Duration::from_secs(11));
        assert_eq!(c.closed(Closed::HeaderTimeout), 1);
        dribble.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_connection_is_kept_until_the_idle_timeout_and_never_while_busy() {
        let c = connections(8);
        let (mut conn, mut client) = pair(&c, 1).unwrap();
        client
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        assert!(conn.read(&mut buf).await.unwrap() > 0);
        let busy = c.busy(addr(1)).unwrap();
        // Busy for longer than the idle timeout: the connection stays.
        let read = tokio::time::timeout(Duration::from_secs(120), conn.read(&mut buf)).await;
        assert!(read.is_err(), "a busy connection was closed");
        let idle_from = Instant::now();
        drop(busy);
        assert!(reads_end_of_stream(&mut conn).await);
        assert!(idle_from.elapsed() >= Duration::from_secs(60));
        assert_eq!(c.closed(Closed::IdleTimeout), 1);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_limit_the_longest_idle_connection_makes_room() {
        let c = connections(2);
        let (mut first, _a) = pair(&c, 1).unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        let (_second, _b) = pair(&c, 2).unwrap();
        let (_third, _c) = pair(&c, 3).unwrap();
        assert_eq!(c.open(), 2);
        assert!(reads_end_of_stream(&mut first).await);
        assert_eq!(c.closed(Closed::Evicted), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_limit_with_every_connection_busy_a_new_one_is_refused() {
        let c = connections(1);
        let (_first, _a) = pair(&c, 1).unwrap();
        let busy = c.busy(addr(1)).unwrap();
        assert!(pair(&c, 2).is_none());
        assert_eq!(c.closed(Closed::Refused), 1);
        drop(busy);
        assert!(pair(&c, 3).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_connection_frees_its_place() {
        let c = connections(1);
        let (first, _a) = pair(&c, 1).unwrap();
        drop(first);
        assert_eq!(c.open(), 0);
        assert!(c.busy(addr(1)).is_none());
    }
}
