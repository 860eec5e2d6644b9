//! The one tower layer that identifies every request, on both ports (the tonic server and the
//! axum router): it puts the caller's [`Principal`] in the request's extensions, or a
//! [`Rejected`] with the UNAUTHENTICATED error. The adapters hand the principal to the core, or
//! answer the rejection; open routes (health, reflection, healthz, the UI's assets) never look,
//! so they stay open.

use std::sync::Arc;
use std::task::{Context, Poll};

use super::Auth;
use crate::error::Error;

/// Why a request carries no principal: its credentials were missing or wrong.
#[derive(Debug, Clone)]
pub struct Rejected(pub Error);

/// Identifies requests with `auth`; without one (auth off) requests pass as they are and reach
/// the core as the anonymous principal.
#[derive(Clone, Default)]
pub struct IdentifyLayer {
    auth: Option<Arc<Auth>>,
}

impl IdentifyLayer {
    pub fn new(auth: Option<Arc<Auth>>) -> Self {
        IdentifyLayer { auth }
    }
}

impl<S> tower::Layer<S> for IdentifyLayer {
    type Service = Identify<S>;

    fn layer(&self, inner: S) -> Identify<S> {
        Identify {
            inner,
            auth: self.auth.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Identify<S> {
    inner: S,
    auth: Option<Arc<Auth>>,
}

impl<S, B> tower::Service<http::Request<B>> for Identify<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if let Some(auth) = &self.auth {
            let peer = crate::transport::peer(request.extensions());
            match auth.identify(request.headers(), peer.as_ref()) {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                }
                Err(e) => {
                    request.extensions_mut().insert(Rejected(e));
                }
            }
        }
        self.inner.call(request)
    }
}
