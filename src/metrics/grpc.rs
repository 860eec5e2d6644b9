//! gRPC call metrics: a tower layer on tonic's server. A call is counted once, when it is over:
//! for a trailers-only answer (most errors) at the response head; otherwise when the body's
//! trailers arrive with `grpc-status` (for a streaming call such as WatchRuns, when the stream
//! ends); a body dropped before its trailers (the client went away) counts as CANCELLED. Paths
//! that are not `/package.Service/Method` are labelled `other`, so labels stay few.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame};
use tower::{Layer, Service};

use super::{GrpcLabels, GrpcMethod, Metrics};

#[derive(Clone)]
pub struct GrpcMetricsLayer {
    metrics: Arc<Metrics>,
}

impl GrpcMetricsLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        GrpcMetricsLayer { metrics }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// The method label of a path: the full method, or `other` for what is not one.
fn method_label(path: &str) -> String {
    let well_formed = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .is_some_and(|(service, method)| {
            service.contains('.')
                && !method.is_empty()
                && !method.contains('/')
                && path.len() <= 200
                && path
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/._".contains(&b))
        });
    if well_formed {
        path.to_owned()
    } else {
        "other".to_owned()
    }
}

fn is_grpc<B>(request: &http::Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for GrpcMetricsService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        // JSON requests on the gRPC port are counted by the HTTP router's middleware.
        let call = is_grpc(&request).then(|| {
            let method = method_label(request.uri().path());
            self.metrics
                .grpc_in_flight
                .get_or_create(&GrpcMethod {
                    method: method.clone(),
                })
                .inc();
            Call {
                metrics: self.metrics.clone(),
                method,
                started: Instant::now(),
                done: false,
            }
        });
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            let mut call = call;
            // Trailers-only answer (most errors): the status is in the head.
            if let (Some(code), Some(call)) = (status_code(Some(response.headers())), &mut call) {
                call.finish(&code);
            }
            Ok(response.map(|inner| MeteredBody { inner, call }))
        })
    }
}

/// The `grpc-status` of a header map, as the code's name.
fn status_code(headers: Option<&http::HeaderMap>) -> Option<String> {
    let value = headers?.get("grpc-status")?.to_str().ok()?;
    let code = tonic::Code::from_bytes(value.as_bytes());
    Some(code_name(code))
}

fn code_name(code: tonic::Code) -> String {
    format!("{code:?}")
        .chars()
        .enumerate()
        .flat_map(|(i, c)| {
            let sep = (i > 0 && c.is_ascii_uppercase()).then_some('_');
            sep.into_iter()
                .chain(std::iter::once(c.to_ascii_uppercase()))
        })
        .collect()
}

/// One call being measured; records itself once.
struct Call {
    metrics: Arc<Metrics>,
    method: String,
    started: Instant,
    done: bool,
}

impl Call {
    fn finish(&mut self, code: &str) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let method = GrpcMethod {
            method: self.method.clone(),
        };
        self.metrics.grpc_in_flight.get_or_create(&method).dec();
        self.metrics
            .grpc_duration
            .get_or_create(&method)
            .observe(self.started.elapsed().as_secs_f64());
        // A method no service serves is one series, not one per name a client makes up.
        let label = if code == "UNIMPLEMENTED" {
            "other".to_owned()
        } else {
            self.method.clone()
        };
        self.metrics
            .grpc_requests
            .get_or_create(&GrpcLabels {
                method: label,
                code: code.to_owned(),
            })
            .inc();
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish("CANCELLED");
    }
}

pin_project_lite::pin_project! {
    /// A response body that reports its call when the trailers pass (or when it is dropped).
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let (Poll::Ready(frame), Some(call)) = (&polled, this.call.as_mut()) {
            match frame {
                Some(Ok(frame)) => {
                    if let Some(code) = status_code(frame.trailers_ref()) {
                        call.finish(&code);
                    }
                }
                // A stream that ends without a status, or fails: gRPC reads it as UNKNOWN /
                // INTERNAL; count what the client sees as the transport's failure.
                Some(Err(_)) => call.finish("INTERNAL"),
                None => call.finish("UNKNOWN"),
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_are_the_grpc_spelling() {
        assert_eq!(code_name(tonic::Code::NotFound), "NOT_FOUND");
        assert_eq!(code_name(tonic::Code::Ok), "OK");
        assert_eq!(code_name(tonic::Code::InvalidArgument), "INVALID_ARGUMENT");
    }

    #[test]
    fn only_well_formed_method_paths_become_labels() {
        assert_eq!(method_label("/a.B/C"), "/a.B/C");
        assert_eq!(method_label("/x/y/z"), "other");
        assert_eq!(method_label("/nodot/M"), "other");
    }
}
