//! Connections: accepting them (TCP_NODELAY, TLS when configured) and who is on the other end
//! of a request, as the accept loop saw it.
//!
//! Both ports accept through one [`Listener`], which records the [`Peer`] of every connection in
//! the requests it carries (tonic's connect info on the gRPC port, axum's on the HTTP port);
//! [`peer`] reads it back in one shape, whichever port and middleware stack the request came
//! through.

pub mod listener;
pub mod tls;

pub use listener::{Conn, Listener};

use std::net::SocketAddr;

/// The other end of the connection a request arrived on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The client's address (or a proxy's, for connections through one).
    pub addr: SocketAddr,
    /// The name a verified client certificate gives (its subject CN) when mutual TLS is on.
    pub client_name: Option<String>,
}

/// The peer of the connection that carried a request with these extensions; `None` only for
/// requests that did not come through a [`Listener`] (in-process tests calling a router directly).
pub fn peer(extensions: &http::Extensions) -> Option<Peer> {
    // tonic inserts the connect info as it is; axum wraps it in ConnectInfo.
    extensions.get::<Peer>().cloned().or_else(|| {
        extensions
            .get::<axum::extract::ConnectInfo<Peer>>()
            .map(|info| info.0.clone())
    })
}

/// Whether serving plaintext on `addr` exposes it beyond this machine (any address that is not
/// loopback, the unspecified 0.0.0.0 and :: included).
pub fn beyond_loopback(addr: SocketAddr) -> bool {
    !addr.ip().to_canonical().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "10.1.2.3:4567".parse().unwrap()
    }

    #[test]
    fn reads_the_peer_either_server_records() {
        let named = Peer {
            addr: addr(),
            client_name: Some("ci-runner".into()),
        };
        let mut tonic = http::Extensions::new();
        tonic.insert(named.clone());
        assert_eq!(peer(&tonic), Some(named.clone()));

        let mut axum = http::Extensions::new();
        axum.insert(axum::extract::ConnectInfo(named.clone()));
        assert_eq!(peer(&axum), Some(named));

        assert_eq!(peer(&http::Extensions::new()), None);
    }

    #[test]
    fn only_loopback_addresses_stay_on_this_machine() {
        for local in [
            "127.0.0.1:1",
            "127.8.9.10:1",
            "[::1]:1",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert!(!beyond_loopback(local.parse().unwrap()), "{local}");
        }
        for exposed in ["0.0.0.0:1", "[::]:1", "10.1.2.3:1", "[2001:db8::1]:1"] {
            assert!(beyond_loopback(exposed.parse().unwrap()), "{exposed}");
        }
    }
}
