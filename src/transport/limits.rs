//! Bounded work under overload, on both ports: a fixed number of requests served at once, a
//! bounded queue for the rest, and shedding beyond it, instead of unbounded queues that turn a
//! burst into timeouts for everyone.
//!
//! One [`Limiter`] serves the whole server (both ports share the request slots: they share the
//! store and the CPU); each port gets a [`Port`] from it, with its own [`Connections`]. The
//! [`Port::layer`] wraps that port's services and, for every request:
//! - marks its connection busy from the head to the end of the response (idle and header
//!   timeouts never cut a connection with work in flight);
//! - takes a request slot, waiting in the queue when all are taken. A full queue, or a wait
//!   longer than the queue timeout, sheds the request: gRPC UNAVAILABLE / HTTP 503 with
//!   `retry-after` (see [`crate::error::refusal`]). Health checks, reflection, `/metrics`,
//!   `/apis/v2beta1/healthz` and the long-lived streams (WatchRuns, the SSE watch, backups) take
//!   no slot and are never shed: a probe sees SERVING under any load, and streams are bounded
//!   by their own limits (`--max-watchers`);
//! - honours a gRPC call's `grpc-timeout`: when it passes, the call's work is dropped (a store
//!   write not yet started never starts; one already applying finishes whole, being one atomic
//!   batch) and the answer is DEADLINE_EXCEEDED;
//! - gives the request body the body timeout from the head: a client that has not sent all of
//!   it by then gets 408 (gRPC DEADLINE_EXCEEDED), and the handler waiting for it is dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::connections::{Bounded, Busy, Connections};
use crate::error::Error;
use crate::error::refusal::{is_grpc, refusal};

/// The limits, as the `serve` flags set them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Open connections per port (`--max-connections`).
    pub max_connections: usize,
    /// Requests served at once, over both ports (`--max-concurrent-requests`).
    pub max_concurrent_requests: usize,
    /// Requests waiting for a slot; more are shed at once (`--max-queued-requests`).
    pub max_queued_requests: usize,
    /// Longest wait for a slot before a request is shed (`--queue-timeout-ms`).
    pub queue_timeout: Duration,
    /// An HTTP/1 request head must be complete this long after its first byte, and a TLS
    /// handshake this long after the connection was accepted (`--header-timeout-ms`).
    pub header_timeout: Duration,
    /// A request body must be complete this long after its head (`--body-timeout-ms`).
    pub body_timeout: Duration,
    /// A connection with nothing in flight is closed after this (`--idle-timeout-ms`).
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_concurrent_requests: 256,
            max_queued_requests: 1024,
            queue_timeout: Duration::from_secs(2),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

/// What a shed request is told to wait before it tries again.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why a request was shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// The queue was full.
    QueueFull,
    /// It waited the whole queue timeout.
    QueueTimeout,
}

impl Shed {
    pub const ALL: [Shed; 2] = [Shed::QueueFull, Shed::QueueTimeout];

    pub fn name(self) -> &'static str {
        match self {
            Shed::QueueFull => "queue_full",
            Shed::QueueTimeout => "queue_timeout",
        }
    }
}

/// The request slots and queue both ports share.
pub struct Limiter {
    limits: Limits,
    slots: Arc<Semaphore>,
    queued: AtomicUsize,
    shed: [AtomicU64; 2],
}

impl Limiter {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Limiter {
            slots: Arc::new(Semaphore::new(limits.max_concurrent_requests.max(1))),
            limits,
            queued: AtomicUsize::new(0),
            shed: Default::default(),
        })
    }

    /// A port: its own connections, these request slots.
    pub fn port(self: &Arc<Self>) -> Port {
        let l = &self.limits;
        Port {
            limiter: self.clone(),
            connections: Connections::new(l.max_connections, l.header_timeout, l.idle_timeout),
        }
    }

    /// Requests holding a slot now.
    pub fn in_flight(&self) -> usize {
        self.limits.max_concurrent_requests.max(1) - self.slots.available_permits()
    }

    /// Requests waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Requests shed since the start, by reason.
    pub fn shed(&self, reason: Shed) -> u64 {
        self.shed[reason as usize].load(Ordering::Relaxed)
    }

    /// A slot, at once or after waiting in the queue.
    async fn slot(&self) -> Result<OwnedSemaphorePermit, Shed> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let waiting = self.queued.fetch_add(1, Ordering::AcqRel);
        let leave = Leave(&self.queued);
        if waiting >= self.limits.max_queued_requests {
            return Err(self.count(Shed::QueueFull));
        }
        let waited = tokio::time::timeout(
            self.limits.queue_timeout,
            self.slots.clone().acquire_owned(),
        )
        .await;
        drop(leave);
        match waited {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; treat it as a wait that ran out.
            Ok(Err(_)) | Err(_) => Err(self.count(Shed::QueueTimeout)),
        }
    }

    fn count(&self, reason: Shed) -> Shed {
        self.shed[reason as usize].fetch_add(1, Ordering::Relaxed);
        reason
    }
}

/// Leaves the queue when dropped: also when the waiting request is cancelled.
struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One port's share of the limits.
#[derive(Clone)]
pub struct Port {
    limiter: Arc<Limiter>,
    connections: Arc<Connections>,
}

impl Port {
    /// The request layer for this port's services.
    pub fn layer(&self) -> LimitLayer {
        LimitLayer { port: self.clone() }
    }

    /// The port's connections.
    pub fn connections(&self) -> &Arc<Connections> {
        &self.connections
    }

    /// `listener` with this port's connection limits and timeouts (a TLS handshake gets the
    /// header timeout), for either server.
    pub fn bound(&self, listener: super::Listener) -> Bounded {
        let listener = listener.handshake_timeout(self.limiter.limits.header_timeout);
        Bounded::new(listener, self.connections.clone())
    }
}

/// Requests that take no slot and are never shed (see the module docs).
fn takes_no_slot(path: &str) -> bool {
    const STREAMS: [&str; 3] = [
        "/kubeflow.pipelines.backend.api.v2beta1.RunService/WatchRuns",
        "/apis/v2beta1/runs:watch",
        "/runledger.admin.v1.Admin/Backup",
    ];
    path.starts_with("/grpc.health.v1.Health/")
        || path.starts_with("/grpc.reflection.")
        || path == "/apis/v2beta1/healthz"
        || path == "/metrics"
        || STREAMS.contains(&path)
}

/// The limits as a tower layer (see the module docs).
#[derive(Clone)]
pub struct LimitLayer {
    port: Port,
}

impl<S> tower::Layer<S> for LimitLayer {
    type Service = Limited<S>;

    fn layer(&self, inner: S) -> Limited<S> {
        Limited {
            inner,
            port: self.port.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Limited<S> {
    inner: S,
    port: Port,
}

/// The request body types of the two servers, which the layer rewraps to watch the body.
pub trait Rewrap: Sized {
    fn rewrap(body: TimedBody<Self>) -> Self;
}

impl Rewrap for tonic::body::Body {
    fn rewrap(body: TimedBody<Self>) -> Self {
        tonic::body::Body::new(body)
    }
}

impl Rewrap for axum::body::Body {
    fn rewrap(body: TimedBody<Self>) -> Self {
        axum::body::Body::new(body)
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for Limited<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Rewrap + Body + Send + 'static,
{
    type Response = http::Response<LimitedBody<R>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let now = Instant::now();
        let grpc = is_grpc(request.headers());
        // Taken now, before tonic's own grpc-timeout timer (which answers CANCELLED) starts, so
        // that ours always fires first.
        let deadline = if grpc {
            grpc_timeout(request.headers()).map(|(timeout, raw)| (now + timeout, raw))
        } else {
            None
        };
        let busy = crate::transport::peer(request.extensions())
            .and_then(|peer| self.port.connections.busy(peer.addr));
        let free = takes_no_slot(request.uri().path());
        let body_done = Arc::new(AtomicBool::new(false));
        let request = request.map(|body| B::rewrap(TimedBody::new(body, body_done.clone())));
        // The instance poll_ready readied; a clone stays for the next call.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let limiter = self.port.limiter.clone();
        let body_timeout = limiter.limits.body_timeout;

        Box::pin(async move {
            let work = async {
                let _slot = if free {
                    None
                } else {
                    match limiter.slot().await {
                        Ok(slot) => Some(slot),
                        Err(reason) => return Err(shed(reason, &limiter.limits, grpc)),
                    }
                };
                let response = BodyDeadline {
                    inner: inner.call(request),
                    timer: Box::pin(tokio::time::sleep_until(now + body_timeout)),
                    body_done,
                };
                match response.await {
                    Some(result) => Ok(result),
                    None => Err(Error::RequestTimeout(format!(
                        "the request body did not arrive within {} ms of its head \
                         (--body-timeout-ms)",
                        body_timeout.as_millis()
                    ))),
                }
            };
            let outcome = match deadline {
                Some((at, raw)) => match tokio::time::timeout_at(at, work).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(Error::DeadlineExceeded(format!(
                        "the call did not finish within its deadline (grpc-timeout {raw}); it \
                         was cancelled"
                    ))),
                },
                None => work.await,
            };
            match outcome {
                Ok(result) => result
                    .map(|response| response.map(|body| LimitedBody::Inner { body, _busy: busy })),
                Err(err) => {
                    let retry_after = matches!(err, Error::Overloaded(_)).then_some(RETRY_AFTER);
                    Ok(refusal(err, grpc, retry_after)
                        .map(|bytes| LimitedBody::Refusal { bytes: Some(bytes) }))
                }
            }
        })
    }
}

fn shed(reason: Shed, limits: &Limits, grpc: bool) -> Error {
    let what = if grpc { "call" } else { "request" };
    Error::Overloaded(match reason {
        Shed::QueueFull => format!(
            "the server is overloaded: {} requests in progress and {} waiting \
             (--max-concurrent-requests, --max-queued-requests); this {what} was not started, \
             retry after {} s",
            limits.max_concurrent_requests,
            limits.max_queued_requests,
            RETRY_AFTER.as_secs()
        ),
        Shed::QueueTimeout => format!(
            "the server is overloaded: this {what} waited {} ms for one of the {} request slots \
             (--queue-timeout-ms) and was not started; retry after {} s",
            limits.queue_timeout.as_millis(),
            limits.max_concurrent_requests,
            RETRY_AFTER.as_secs()
        ),
    })
}

/// A call's `grpc-timeout` (and its text, for messages): an integer of at most 8 digits and a
/// unit (`H`, `M`, `S`, `m`, `u`, `n`). A malformed value is ignored, as tonic does.
fn grpc_timeout(headers: &http::HeaderMap) -> Option<(Duration, String)> {
    let raw = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = raw.split_at(raw.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let timeout = match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    Some((timeout, raw.to_owned()))
}

pin_project_lite::pin_project! {
    /// The handler's response, unless the body timeout passes with the request body still
    /// incomplete (then None, and the handler is dropped).
    struct BodyDeadline<F> {
        #[pin]
        inner: F,
        timer: Pin<Box<tokio::time::Sleep>>,
        body_done: Arc<AtomicBool>,
    }
}

impl<F: Future> Future for BodyDeadline<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.inner.poll(cx) {
            return Poll::Ready(Some(output));
        }
        if this.body_done.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        match this.timer.as_mut().poll(cx) {
            // Read the flag again: the body may have ended since the first look.
            Poll::Ready(()) if !this.body_done.load(Ordering::Acquire) => Poll::Ready(None),
            _ => Poll::Pending,
        }
    }
}

pin_project_lite::pin_project! {
    /// A request body that records when it is complete.
    pub struct TimedBody<B> {
        #[pin]
        inner: B,
        done: Arc<AtomicBool>,
    }
}

impl<B: Body> TimedBody<B> {
    fn new(inner: B, done: Arc<AtomicBool>) -> Self {
        if inner.is_end_stream() {
            done.store(true, Ordering::Release);
        }
        TimedBody { inner, done }
    }
}

impl<B: Body> Body for TimedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.done.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A response body: the handler's, keeping its connection busy until it ends, or a refusal
    /// written by this layer.
    #[project = LimitedBodyProj]
    pub enum LimitedBody<B> {
        Inner { #[pin] body: B, _busy: Option<Busy> },
        Refusal { bytes: Option<Bytes> },
    }
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project() {
            LimitedBodyProj::Inner { body, .. } => body.poll_frame(cx),
            LimitedBodyProj::Refusal { bytes } => Poll::Ready(
                bytes
                    .take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            LimitedBody::Inner { body, .. } => body.is_end_stream(),
            LimitedBody::Refusal { bytes } => bytes.as_ref().is_none_or(Bytes::is_empty),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            LimitedBody::Inner { body, .. } => body.size_hint(),
            LimitedBody::Refusal { bytes } => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(value: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-timeout", value.parse().unwrap());
        headers
    }

    #[test]
    fn grpc_timeouts_are_read_in_every_unit() {
        let cases = [
            ("2H", Duration::from_secs(7200)),
            ("3M", Duration::from_secs(180)),
            ("5S", Duration::from_secs(5)),
            ("250m", Duration::from_millis(250)),
            ("99999999u", Duration::from_micros(99_999_999)),
            ("7n", Duration::from_nanos(7)),
        ];
        for (raw, expected) in cases {
            assert_eq!(
                grpc_timeout(&header(raw)),
                Some((expected, raw.to_owned())),
                "{raw}"
            );
        }
        for bad in ["", "S", "123456789S", "10x", "-1S", "1.5S", "10 S"] {
            assert_eq!(grpc_timeout(&header(bad)), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }

    #[test]
    fn probes_metrics_and_streams_take_no_slot() {
        for path in [
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            "/apis/v2beta1/healthz",
            "/metrics",
            "/kubeflow.pipelines.backend.api.v2beta1.RunService/WatchRuns",
            "/apis/v2beta1/runs:watch",
            "/runledger.admin.v1.Admin/Backup",
        ] {
            assert!(takes_no_slot(path), "{path}");
        }
        for path in [
            "/kubeflow.pipelines.backend.api.v2beta1.RunService/CreateRun",
            "/kubeflow.pipelines.backend.api.v2beta1.RunService/ListRuns",
            "/apis/v2beta1/runs",
            "/apis/v2beta1/healthz/x",
            "/",
        ] {
            assert!(!takes_no_slot(path), "{path}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_sheds_at_once_and_a_long_wait_sheds_after_the_queue_timeout() {
        let limiter = Limiter::new(Limits {
            max_concurrent_requests: 1,
            max_queued_requests: 1,
            queue_timeout: Duration::from_secs(2),
            ..Limits::default()
        });
        let held = limiter.slot().await.unwrap();
        let waiting = tokio::spawn({
            let limiter = limiter.clone();
            async move { limiter.slot().await.map(drop) }
        });
        while limiter.queued() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(limiter.slot().await.err(), Some(Shed::QueueFull));
        assert_eq!(waiting.await.unwrap(), Err(Shed::QueueTimeout));
        assert_eq!(limiter.queued(), 0);
        assert_eq!(limiter.in_flight(), 1);
        drop(held);
        assert!(limiter.slot().await.is_ok());
        assert_eq!(limiter.shed(Shed::QueueFull), 1);
        assert_eq!(limiter.shed(Shed::QueueTimeout), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_request_gets_the_next_free_slot() {
        let limiter = Limiter::new(Limits {
            max_concurrent_requests: 1,
            ..Limits::default()
        });
        let held = limiter.slot().await.unwrap();
        let waiting = tokio::spawn({
            let limiter = limiter.clone();
            async move { limiter.slot().await.map(drop) }
        });
        while limiter.queued() == 0 {
            tokio::task::yield_now().await;
        }
        drop(held);
        assert_eq!(waiting.await.unwrap(), Ok(()));
    }
}
