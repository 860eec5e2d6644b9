//! Connections: who is on the other end of a request, as the accept loops saw it, and how much
//! of the server a connection or a request may take ([`limits`], [`connections`]).
//!
//! Both listeners record the peer of every accepted connection in the requests it carries
//! (tonic's connect info on the gRPC port, axum's on the HTTP port); [`peer`] reads it back in one
//! shape, whichever port and middleware stack the request came through.

pub mod connections;
pub mod limits;
pub mod tls;

pub use limits::Limits;

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
/// requests that did not come through a listener (in-process tests calling a router directly).
pub fn peer(extensions: &http::Extensions) -> Option<Peer> {
    if let Some(peer) = extensions.get::<Peer>() {
        return Some(peer.clone());
    }
    if let Some(info) = extensions.get::<tonic::transport::server::TcpConnectInfo>() {
        return info.remote_addr().map(|addr| Peer {
            addr,
            client_name: None,
        });
    }
    extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|info| Peer {
            addr: info.0,
            client_name: None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "10.1.2.3:4567".parse().unwrap()
    }

    #[test]
    fn reads_the_peer_each_listener_records() {
        let mut axum = http::Extensions::new();
        axum.insert(axum::extract::ConnectInfo(addr()));
        assert_eq!(peer(&axum).map(|p| p.addr), Some(addr()));

        let mut tonic = http::Extensions::new();
        tonic.insert(tonic::transport::server::TcpConnectInfo {
            local_addr: None,
            remote_addr: Some(addr()),
        });
        assert_eq!(
            peer(&tonic),
            Some(Peer {
                addr: addr(),
                client_name: None
            })
        );

        let mut own = http::Extensions::new();
        let named = Peer {
            addr: addr(),
            client_name: Some("ci-runner".into()),
        };
        own.insert(named.clone());
        // A Peer recorded by the listener wins over any other connect info.
        own.insert(axum::extract::ConnectInfo(
            "127.0.0.1:1".parse::<SocketAddr>().unwrap(),
        ));
        assert_eq!(peer(&own), Some(named));

        assert_eq!(peer(&http::Extensions::new()), None);
    }
}
