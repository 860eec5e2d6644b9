//! Authentication: who sends a request. [`Auth`] holds the `--auth-config` (reloadable on
//! SIGHUP) and turns a request's credentials into a [`Principal`] with its grants; the
//! [`IdentifyLayer`] does so for every request on both ports, before any adapter sees it.
//!
//! Credentials, in the order they are looked at:
//! 1. `authorization: Bearer <token>` (gRPC metadata or HTTP header): the token's SHA-256 is
//!    compared, in constant time, with every principal's `token_sha256`.
//! 2. The trusted header (`[trusted_header]`), only on connections from its `from` addresses;
//!    from anywhere else it is ignored and logged at warn.
//! 3. The verified client certificate's name (mutual TLS), as [`crate::transport::Peer`] holds
//!    it.
//!
//! Missing or wrong credentials are UNAUTHENTICATED, with messages that never say whether a
//! principal exists. What a principal may do is decided in the core
//! ([`crate::service::access`]).

pub mod config;
mod layer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use config::AuthConfig;
pub use layer::{IdentifyLayer, Rejected};

use crate::error::Error;
use crate::service::Principal;
use crate::service::access::{Grants, Identity};
use crate::transport::Peer;

/// The SHA-256 of a token, as hex (what `token_sha256` holds).
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The auth configuration in force, and the file it came from.
pub struct Auth {
    path: Option<PathBuf>,
    config: RwLock<Arc<AuthConfig>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Reads and validates the file.
    pub fn load(path: &Path) -> Result<Auth, String> {
        let config = read(path)?;
        Ok(Auth {
            path: Some(path.to_owned()),
            config: RwLock::new(Arc::new(config)),
        })
    }

    /// A configuration that no file backs (tests).
    pub fn from_config(config: AuthConfig) -> Auth {
        Auth {
            path: None,
            config: RwLock::new(Arc::new(config)),
        }
    }

    /// Reads the file again. A file that does not validate leaves the configuration in force
    /// unchanged; the error says why.
    pub fn reload(&self) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let config = read(path)?;
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        Ok(())
    }

    /// [`Auth::reload`], logging the outcome (for the SIGHUP handler).
    pub fn reload_and_log(&self) {
        match self.reload() {
            Ok(()) => tracing::info!("auth config reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "auth config not reloaded; the previous one stays in force")
            }
        }
    }

    /// The principals and grants in force, one per line.
    pub fn summary(&self) -> String {
        self.current().summary()
    }

    fn current(&self) -> Arc<AuthConfig> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The principal a request's headers and connection name.
    pub fn identify(
        &self,
        headers: &http::HeaderMap,
        peer: Option<&Peer>,
    ) -> Result<Principal, Error> {
        let config = self.current();
        if let Some(value) = headers.get(http::header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| {
                    let (scheme, token) = v.trim().split_once(' ')?;
                    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
                })
                .ok_or_else(|| {
                    Error::Unauthenticated(
                        "the authorization header must be `Bearer <token>`".into(),
                    )
                })?;
            let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            // Every principal is compared, so the time taken says nothing about which matched.
            let mut found = None;
            for principal in &config.principals {
                if let Some(expected) = &principal.token_sha256
                    && bool::from(expected.ct_eq(&hash))
                {
                    found = Some(principal.name.as_str());
                }
            }
            return match found {
                Some(name) => Ok(principal(&config, name)),
                None => Err(invalid_credentials()),
            };
        }
        if let Some(trusted) = &config.trusted_header
            && let Some(value) = headers.get(&trusted.name)
        {
            let from_proxy =
                peer.is_some_and(|p| trusted.from.iter().any(|net| net.contains(&p.addr.ip())));
            if from_proxy {
                let name = value
                    .to_str()
                    .ok()
                    .and_then(|v| v.strip_prefix(trusted.prefix.as_str()))
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .ok_or_else(invalid_credentials)?;
                return Ok(principal(&config, name));
            }
            tracing::warn!(
                header = %trusted.name,
                peer = ?peer.map(|p| p.addr),
                "ignoring the trusted identity header from an address not in trusted_header.from"
            );
        }
        if let Some(name) = peer.and_then(|p| p.client_name.as_deref()) {
            return Ok(principal(&config, name));
        }
        Err(Error::Unauthenticated(
            "authentication required: send `authorization: Bearer <token>`".into(),
        ))
    }
}

fn invalid_credentials() -> Error {
    Error::Unauthenticated("invalid credentials".into())
}

fn read(path: &Path) -> Result<AuthConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    AuthConfig::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The principal named `name`, with the grants given to it and to its groups.
fn principal(config: &AuthConfig, name: &str) -> Principal {
    let groups: Vec<&str> = config
        .principals
        .iter()
        .filter(|p| p.name == name)
        .flat_map(|p| p.groups.iter().map(String::as_str))
        .collect();
    let mut grants = Grants::default();
    for grant in &config.grants {
        let applies = match grant.who.strip_prefix("group:") {
            Some(group) => groups.contains(&group),
            None => grant.who == name,
        };
        if applies {
            grants.add(grant.namespace.as_deref(), grant.role);
        }
    }
    Principal::User(Arc::new(Identity {
        name: name.to_owned(),
        grants,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::access::{Role, Verb};

    fn auth() -> Auth {
        let text = format!(
            "[[principals]]\nname = \"alice\"\ntoken_sha256 = \"{}\"\ngroups = [\"ml\"]\n\
             [trusted_header]\nname = \"x-user\"\nprefix = \"id:\"\nfrom = [\"10.0.0.0/8\"]\n\
             [[grants]]\nwho = \"group:ml\"\nnamespace = \"a\"\nrole = \"editor\"\n\
             [[grants]]\nwho = \"bob\"\nnamespace = \"b\"\nrole = \"viewer\"\n",
            hash_token("secret")
        );
        Auth::from_config(AuthConfig::parse(&text).unwrap())
    }

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    fn peer(addr: &str) -> Peer {
        Peer {
            addr: addr.parse().unwrap(),
            client_name: None,
        }
    }

    fn grants_of(p: Principal) -> (String, Grants) {
        match p {
            Principal::User(i) => (i.name.clone(), i.grants.clone()),
            other => panic!("not a user: {other:?}"),
        }
    }

    #[test]
    fn a_bearer_token_names_its_principal_with_its_groups_grants() {
        let (name, grants) = grants_of(
            auth()
                .identify(&headers(&[("authorization", "Bearer secret")]), None)
                .unwrap(),
        );
        assert_eq!(name, "alice");
        assert_eq!(grants.role_in("a"), Some(Role::Editor));
        assert!(!grants.allows(Verb::GetRun, "b"));
    }

    #[test]
    fn wrong_or_missing_credentials_are_unauthenticated() {
        for h in [
            headers(&[("authorization", "Bearer wrong")]),
            headers(&[("authorization", "Basic c2VjcmV0")]),
            headers(&[]),
        ] {
            let err = auth().identify(&h, Some(&peer("10.1.1.1:1"))).unwrap_err();
            assert!(matches!(err, Error::Unauthenticated(_)), "{h:?}");
        }
    }

    #[test]
    fn the_trusted_header_counts_only_from_the_proxy_addresses() {
        let h = headers(&[("x-user", "id:bob")]);
        let (name, _) = grants_of(auth().identify(&h, Some(&peer("10.1.1.1:1"))).unwrap());
        assert_eq!(name, "bob");
        let err = auth()
            .identify(&h, Some(&peer("192.168.1.1:1")))
            .unwrap_err();
        assert!(matches!(err, Error::Unauthenticated(_)));
        let unprefixed = headers(&[("x-user", "bob")]);
        assert!(
            auth()
                .identify(&unprefixed, Some(&peer("10.1.1.1:1")))
                .is_err()
        );
    }

    #[test]
    fn a_client_certificate_name_names_the_principal() {
        let named = Peer {
            client_name: Some("bob".into()),
            ..peer("192.168.1.1:1")
        };
        let (name, grants) = grants_of(auth().identify(&headers(&[]), Some(&named)).unwrap());
        assert_eq!(name, "bob");
        assert_eq!(grants.role_in("b"), Some(Role::Viewer));
    }

    #[test]
    fn hash_token_is_sha256_hex() {
        assert_eq!(
            hash_token("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }
}
