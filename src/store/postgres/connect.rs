//! Reaching the database: the `--database-url` (a libpq-style `postgres://` URL), TLS through
//! rustls as its `sslmode` asks, and the connection pool.
//!
//! `sslmode` follows libpq: `disable`; `prefer` (the default) and `require` encrypt without
//! checking the server's certificate (`require` with an `sslrootcert` checks it like
//! `verify-ca`, as libpq does); `verify-ca` checks that a trusted CA signed it; `verify-full`
//! also that it names the host. `sslrootcert` is a PEM file of CA certificates, or `system` for
//! the operating system's store; without it the verify modes read `~/.postgresql/root.crt`.
//! `sslcert` / `sslkey` (PEM) present a client certificate. Every other parameter is
//! tokio-postgres's (`connect_timeout`, `application_name`, `options`, ...).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};

/// The parameters this module handles itself; tokio-postgres gets the rest.
const OWN_PARAMETERS: &[&str] = &["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// How far the server's certificate is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A parsed `--database-url`.
#[derive(Clone)]
pub struct DatabaseUrl {
    config: tokio_postgres::Config,
    tls: TlsMode,
    root_cert: Option<String>,
    client_cert: Option<(PathBuf, PathBuf)>,
    shown: String,
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl DatabaseUrl {
    /// Parses `url`; errors name what is wrong (never the password).
    pub fn parse(url: &str) -> Result<DatabaseUrl> {
        let bad = |why: String| Error::invalid(format!("--database-url: {why}"));
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(bad(
                "expected a URL of the form postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=...]"
                    .to_owned(),
            ));
        }
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, query),
            None => (url, ""),
        };
        let mut own = std::collections::BTreeMap::new();
        let mut passed = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if OWN_PARAMETERS.contains(&key) {
                let value = percent_decode(value).ok_or_else(|| {
                    bad(format!(
                        "the value of {key} is not valid percent-encoded UTF-8"
                    ))
                })?;
                own.insert(key, value);
            } else {
                passed.push(pair);
            }
        }
        let tls = match own.get("sslmode").map(String::as_str) {
            None | Some("prefer") => TlsMode::Prefer,
            Some("disable") => TlsMode::Disable,
            Some("require") => TlsMode::Require,
            Some("verify-ca") => TlsMode::VerifyCa,
            Some("verify-full") => TlsMode::VerifyFull,
            Some(other) => {
                return Err(bad(format!(
                    "sslmode {other:?} is not supported; use disable, prefer, require, verify-ca or verify-full"
                )));
            }
        };
        let rest = if passed.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", passed.join("&"))
        };
        let mut config: tokio_postgres::Config = rest
            .parse()
            .map_err(|e: tokio_postgres::Error| bad(super::error::with_causes(&e)))?;
        if config.get_hosts().is_empty() {
            return Err(bad("no host given".to_owned()));
        }
        if config.get_dbname().is_none() {
            return Err(bad(
                "no database given (postgres://HOST/DATABASE)".to_owned()
            ));
        }
        if config.get_application_name().is_none() {
            config.application_name("runledger");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.ssl_mode(match tls {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
        });
        let client_cert = match (own.get("sslcert"), own.get("sslkey")) {
            (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
            (None, None) => None,
            _ => return Err(bad("sslcert and sslkey go together".to_owned())),
        };
        let shown = show(&config);
        Ok(DatabaseUrl {
            config,
            tls,
            root_cert: own.get("sslrootcert").cloned(),
            client_cert,
            shown,
        })
    }

    pub fn tls_mode(&self) -> TlsMode {
        self.tls
    }

    /// A connection pool of at most `size` connections; nothing is connected yet.
    pub fn pool(&self, size: usize) -> Result<Pool> {
        // The pool's transactions commit without waiting for the WAL flush, so that the rows
        // every write updates last (the change log's counter) are not held through an fsync;
        // a write waits for durability afterwards, in a flush many writers share
        // (`Shared::durable`).
        let mut config = self.config.clone();
        let options = match config.get_options() {
            Some(given) => format!("{given} -c synchronous_commit=off"),
            None => "-c synchronous_commit=off".to_owned(),
        };
        config.options(&options);
        let manager = Manager::from_config(
            config,
            self.tls()?,
            ManagerConfig {
                // A connection the server closed (a restart) is noticed and replaced.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            .max_size(size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| Error::internal(format!("cannot build the connection pool: {e}")))
    }

    /// One connection outside the pool (the change listener, migrations), with its connection
    /// task: the caller drives it.
    pub async fn connect(
        &self,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio_postgres::Connection<
                tokio_postgres::Socket,
                <MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<
                    tokio_postgres::Socket,
                >>::Stream,
            >,
        ),
    > {
        let connect = self.config.connect(self.tls()?);
        match tokio::time::timeout(Duration::from_secs(15), connect).await {
            Ok(Ok(pair)) => Ok(pair),
            Ok(Err(e)) => Err(super::error::unreachable(self, &e)),
            Err(_) => Err(Error::Unavailable(format!(
                "the database {self} did not answer within 15 s"
            ))),
        }
    }

    /// A connection whose connection task runs in the background.
    pub async fn connect_spawned(&self) -> Result<tokio_postgres::Client> {
        let (client, connection) = self.connect().await?;
        let shown = self.shown.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(database = %shown, error = %e, "database connection ended");
            }
        });
        Ok(client)
    }

    fn tls(&self) -> Result<MakeRustlsConnect> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::internal(format!("TLS setup: {e}")))?;
        let root_file = match (&self.root_cert, self.tls) {
            (Some(root), _) => Some(root.clone()),
            (None, TlsMode::VerifyCa | TlsMode::VerifyFull) => {
                let default = home_root_cert().filter(|p| p.is_file()).ok_or_else(|| {
                    Error::invalid(format!(
                        "--database-url: sslmode={} needs the CA certificate: add \
                         sslrootcert=FILE (PEM) or sslrootcert=system",
                        if self.tls == TlsMode::VerifyCa {
                            "verify-ca"
                        } else {
                            "verify-full"
                        }
                    ))
                })?;
                Some(default.to_string_lossy().into_owned())
            }
            (None, _) => None,
        };
        let verify = match (self.tls, &root_file) {
            (TlsMode::VerifyFull, _) => Some(true),
            (TlsMode::VerifyCa, _) | (TlsMode::Require | TlsMode::Prefer, Some(_)) => Some(false),
            _ => None,
        };
        let builder = match (verify, root_file) {
            (Some(check_name), Some(root)) => {
                let roots = Arc::new(load_roots(&root)?);
                let webpki =
                    rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
                        .build()
                        .map_err(|e| Error::invalid(format!("--database-url sslrootcert: {e}")))?;
                let verifier: Arc<dyn ServerCertVerifier> = if check_name {
                    webpki
                } else {
                    Arc::new(AnyName(webpki))
                };
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(verifier)
            }
            _ => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified(provider))),
        };
        let config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let certs = CertificateDer::pem_file_iter(cert)
                    .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
                    .map_err(|e| pem_error("sslcert", cert, e))?;
                let key =
                    PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error("sslkey", key, e))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| Error::invalid(format!("--database-url sslcert/sslkey: {e}")))?
            }
        };
        Ok(MakeRustlsConnect::new(config))
    }
}

/// `database NAME on HOST:PORT as USER`: how messages name the database (no password).
fn show(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = config
                .get_ports()
                .get(i)
                .or(config.get_ports().first())
                .copied()
                .unwrap_or(5432);
            match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                #[cfg(unix)]
                Host::Unix(path) => format!("unix:{}:{port}", path.display()),
            }
        })
        .collect();
    let mut shown = format!(
        "postgres://{}{}/{}",
        config
            .get_user()
            .map(|u| format!("{u}@"))
            .unwrap_or_default(),
        hosts.join(","),
        config.get_dbname().unwrap_or_default()
    );
    if config.get_password().is_some() {
        // Say that there is one without showing it.
        shown = shown.replacen("@", ":***@", 1);
    }
    shown
}

fn home_root_cert() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".postgresql/root.crt"))
}

fn load_roots(root: &str) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    if root == "system" {
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(Error::invalid(
                "--database-url sslrootcert=system: this machine's certificate store has no usable CA certificate",
            ));
        }
        return Ok(roots);
    }
    let path = Path::new(root);
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| pem_error("sslrootcert", path, e))?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(Error::invalid(format!(
            "--database-url sslrootcert {}: no usable CA certificate in it",
            path.display()
        )));
    }
    Ok(roots)
}

fn pem_error(what: &str, path: &Path, e: rustls::pki_types::pem::Error) -> Error {
    Error::invalid(format!("--database-url {what} {}: {e}", path.display()))
}

fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// verify-ca: the chain must lead to a trusted CA; the name in the certificate is not checked.
#[derive(Debug)]
struct AnyName(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                NotValidForName | NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// prefer / require without a CA: encrypted, but any certificate is accepted (libpq's
/// behaviour; it protects against passive listeners only). The handshake signatures are still
/// checked, so the peer holds the certificate's key.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_shown_without_its_password_or_parameters() {
        let url = DatabaseUrl::parse(
            "postgres://ledger:s3cret@db.example:6543/runs?sslmode=require&application_name=x",
        )
        .unwrap();
        assert_eq!(
            url.to_string(),
            "postgres://ledger:***@db.example:6543/runs"
        );
        assert_eq!(url.tls_mode(), TlsMode::Require);
        let url = DatabaseUrl::parse("postgresql://127.0.0.1/runs").unwrap();
        assert_eq!(url.to_string(), "postgres://127.0.0.1:5432/runs");
        assert_eq!(url.tls_mode(), TlsMode::Prefer);
        let url = DatabaseUrl::parse("postgres:///runs?host=/var/run/postgresql").unwrap();
        assert_eq!(
            url.to_string(),
            "postgres://unix:/var/run/postgresql:5432/runs"
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let cases = [
            ("mysql://x/y", "postgres://USER"),
            ("postgres://h/db?sslmode=allow", "sslmode \"allow\""),
            ("postgres://h/db?colour=blue", "colour"),
            ("postgres://h/db?sslcert=a.pem", "sslcert and sslkey"),
            ("postgres://h", "no database"),
            ("postgres://h/db?sslrootcert=%zz", "sslrootcert"),
        ];
        for (url, needle) in cases {
            let err = DatabaseUrl::parse(url).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{url}: {err:?}");
            assert!(err.message().contains(needle), "{url}: {err}");
            assert!(!err.message().contains("s3cret"));
        }
    }

    #[test]
    fn verify_modes_need_a_ca_and_read_it() {
        let url = DatabaseUrl::parse(
            "postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        )
        .unwrap();
        let err = url.tls().err().unwrap();
        assert!(err.message().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%20c").as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("%G0"), None);
        assert_eq!(percent_decode("%2"), None);
    }
}
