//! Accepting connections: every accepted TCP connection gets TCP_NODELAY and, when TLS is on, a
//! handshake with the configuration current at that moment; what comes out is a [`Conn`] that
//! knows its [`Peer`] (the client certificate's name included). The same [`Listener`] feeds
//! both servers: axum through its `Listener` trait, tonic through [`Listener::into_incoming`].
//!
//! Handshakes run beside the accept loop, not in it, so one slow or silent client cannot hold up
//! the others; each is bounded in time, and while [`MAX_PENDING_HANDSHAKES`] are under way no
//! further connection is accepted (the kernel's backlog holds them).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

use super::Peer;
use super::tls::{Tls, client_name};

/// Longest a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most handshakes under way at once on one listener.
pub const MAX_PENDING_HANDSHAKES: usize = 512;

/// A bound TCP listener, serving plaintext or TLS.
pub struct Listener {
    tcp: TcpListener,
    tls: Option<Arc<Tls>>,
    handshakes: FuturesUnordered<BoxFuture<'static, Option<Conn>>>,
    /// Set after an accept error that is not the client's (e.g. out of file descriptors): no
    /// accept until it fires, while handshakes under way go on.
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Listener {
    /// Serves TLS with `tls` when given, plaintext otherwise.
    pub fn new(tcp: TcpListener, tls: Option<Arc<Tls>>) -> Listener {
        Listener {
            tcp,
            tls,
            handshakes: FuturesUnordered::new(),
            pause: None,
        }
    }

    /// The next connection ready to carry requests (handshake done, when TLS is on).
    pub async fn next_conn(&mut self) -> Conn {
        let Listener {
            tcp,
            tls,
            handshakes,
            pause,
        } = self;
        loop {
            let accepting = pause.is_none() && handshakes.len() < MAX_PENDING_HANDSHAKES;
            tokio::select! {
                accepted = tcp.accept(), if accepting => match accepted {
                    Ok((stream, addr)) => {
                        // Without it a response of several segments waits for the client's
                        // delayed ACK (~40 ms per call).
                        if let Err(e) = stream.set_nodelay(true) {
                            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                        }
                        match tls {
                            None => return Conn::plain(stream, addr),
                            Some(tls) => handshakes.push(Box::pin(handshake(tls.clone(), stream, addr))),
                        }
                    }
                    Err(e) if is_connection_error(&e) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "cannot accept connections; trying again in 1 s");
                        *pause = Some(Box::pin(tokio::time::sleep(Duration::from_secs(1))));
                    }
                },
                Some(done) = handshakes.next(), if !handshakes.is_empty() => {
                    if let Some(conn) = done {
                        return conn;
                    }
                }
                () = paused(pause), if pause.is_some() => *pause = None,
            }
        }
    }

    /// The connections as the stream tonic's `serve_with_incoming_shutdown` takes; dropping it
    /// closes the listening socket.
    pub fn into_incoming(self) -> impl futures::Stream<Item = io::Result<Conn>> + Send + 'static {
        futures::stream::unfold(self, |mut listener| async move {
            let conn = listener.next_conn().await;
            Some((Ok(conn), listener))
        })
    }
}

/// Completes when the pause after an accept error is over (never, when there is none).
async fn paused(pause: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
    match pause {
        Some(sleep) => sleep.await,
        None => std::future::pending().await,
    }
}

/// Errors that concern one client only (it went away between SYN and accept).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The TLS handshake of one connection; None (logged at debug: it is the client's problem,
/// e.g. a plaintext client, an untrusted or missing client certificate) when it fails or takes
/// longer than [`HANDSHAKE_TIMEOUT`].
async fn handshake(tls: Arc<Tls>, stream: TcpStream, addr: SocketAddr) -> Option<Conn> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            let client_name = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(client_name);
            Some(Conn {
                peer: Peer { addr, client_name },
                io: Io::Tls(Box::new(stream)),
            })
        }
        Ok(Err(e)) => {
            tracing::debug!(peer = %addr, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(peer = %addr, "TLS handshake timed out");
            None
        }
    }
}

impl axum::serve::Listener for Listener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        let conn = self.next_conn().await;
        let addr = conn.peer.addr;
        (conn, addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// What axum's `into_make_service_with_connect_info::<Peer>()` puts in each request.
impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Listener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Listener>) -> Peer {
        stream.io().peer.clone()
    }
}

/// What tonic puts in each request's extensions.
impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

/// An accepted connection, plaintext or TLS, and who is on the other end.
pub struct Conn {
    peer: Peer,
    io: Io,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn {
    fn plain(stream: TcpStream, addr: SocketAddr) -> Conn {
        Conn {
            peer: Peer {
                addr,
                client_name: None,
            },
            io: Io::Plain(stream),
        }
    }

    /// The other end of the connection.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    // Vectored writes pass through, so hyper's headers and body still leave in one syscall.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
