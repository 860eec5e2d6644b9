//! TLS settings for the listeners: the certificate chain, its key and (for mutual TLS) the CA
//! that client certificates must chain to, loaded from PEM files into a rustls server config.
//!
//! Loading is a separate step from serving so that a reload can build a new config and keep the
//! previous one when a file is bad: [`Tls`] holds the config in force, every accepted connection
//! takes the one current at its handshake, and [`Tls::reload`] (SIGHUP) swaps it for the next
//! connections. Both ports offer ALPN `h2` and `http/1.1` (the JSON router is served on the gRPC
//! port too, and the kfp SDK speaks HTTP/1.1 over TLS).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;

/// Where the PEM files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain (leaf first).
    pub cert: PathBuf,
    /// The private key of the leaf certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, every client must present a certificate that chains to one of these CAs.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// Checks that `--tls-cert` and `--tls-key` come together and that `--tls-client-ca` has
    /// both; `Ok(None)` when TLS is off.
    pub fn from_flags(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        client_ca: Option<PathBuf>,
    ) -> Result<Option<TlsFiles>, String> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert,
                key,
                client_ca,
            })),
            (None, None) if client_ca.is_none() => Ok(None),
            (None, None) => Err("--tls-client-ca needs --tls-cert and --tls-key".into()),
            (Some(_), None) => Err("--tls-cert needs --tls-key (the certificate's key)".into()),
            (None, Some(_)) => Err("--tls-key needs --tls-cert (the certificate)".into()),
        }
    }

    /// Reads the files and builds the server config; the error names the file and what is
    /// wrong with it.
    pub fn load(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = read_certs(&self.cert)?;
        let key = std::fs::read(&self.key)
            .map_err(|e| format!("{}: cannot read the private key: {e}", self.key.display()))
            .and_then(|pem| parse_key(&pem).map_err(|e| format!("{}: {e}", self.key.display())))?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS protocol versions: {e}"))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for ca in read_certs(path)? {
                    roots.add(ca).map_err(|e| {
                        format!("{}: not a usable CA certificate: {e}", path.display())
                    })?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| format!("{}: {e}", path.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(certs, key).map_err(|e| {
            format!(
                "{} and {}: the key does not fit the certificate: {e}",
                self.cert.display(),
                self.key.display()
            )
        })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// When the leaf certificate expires, for the log; None if it cannot be read.
    fn expiry(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let leaf = read_certs(&self.cert).ok()?.into_iter().next()?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
        chrono::DateTime::from_timestamp(parsed.validity().not_after.timestamp(), 0)
    }
}

/// The TLS configuration in force on both listeners, and the files it came from.
pub struct Tls {
    files: TlsFiles,
    config: RwLock<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the files (the error names the bad one).
    pub fn load(files: TlsFiles) -> Result<Tls, String> {
        let config = files.load()?;
        Ok(Tls {
            files,
            config: RwLock::new(config),
        })
    }

    /// Whether clients must present a certificate.
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// The config for the next handshake.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the files again; connections accepted from now on use them. Files that do not
    /// load leave the configuration in force unchanged; the error says why.
    pub fn reload(&self) -> Result<(), String> {
        let config = self.files.load()?;
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    /// [`Tls::reload`], logging the outcome (for the SIGHUP handler).
    pub fn reload_and_log(&self) {
        match self.reload() {
            Ok(()) => self.log_in_force("TLS certificate reloaded; new connections use it"),
            Err(e) => tracing::error!(
                error = %e,
                "TLS certificate not reloaded; the previous one stays in force"
            ),
        }
    }

    /// Logs `message` at info with the certificate file, when it expires and the client CA.
    pub fn log_in_force(&self, message: &str) {
        let client_ca = match &self.files.client_ca {
            Some(path) => path.display().to_string(),
            None => "none".into(),
        };
        let expiry = self.files.expiry();
        let expires = expiry.map_or("unknown".into(), |t| {
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        });
        tracing::info!(cert = %self.files.cert.display(), %expires, %client_ca, "{message}");
        // rustls serves an expired certificate; clients then refuse it with errors that do not
        // say so as plainly.
        if expiry.is_some_and(|t| t < chrono::Utc::now()) {
            tracing::warn!(cert = %self.files.cert.display(), %expires, "the TLS certificate has expired");
        }
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("{}: cannot read certificates: {e}", path.display()))?;
    parse_certs(&pem).map_err(|e| format!("{}: {e}", path.display()))
}

/// The certificates of a PEM file's text (at least one).
pub fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate in the file".into());
    }
    Ok(certs)
}

/// The private key of a PEM file's text (PKCS#8, PKCS#1 or SEC1).
pub fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("no usable private key: {e}"))
}

/// The subject common name of a (verified) client certificate: the name `Peer.client_name`
/// carries. `None` when the certificate does not parse or has no CN.
pub fn client_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pki {
        dir: tempfile::TempDir,
    }

    impl Pki {
        fn new() -> Pki {
            Pki {
                dir: tempfile::tempdir().unwrap(),
            }
        }
        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        }
        /// A self-signed certificate for `cn`; returns (cert path, key path, DER).
        fn self_signed(&self, cn: &str) -> (PathBuf, PathBuf, CertificateDer<'static>) {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let cert = params.self_signed(&key).unwrap();
            (
                self.write(&format!("{cn}.crt"), &cert.pem()),
                self.write(&format!("{cn}.key"), &key.serialize_pem()),
                cert.der().clone(),
            )
        }
    }

    #[test]
    fn a_certificate_and_its_key_load_with_h2_and_http1_alpn() {
        let pki = Pki::new();
        let (cert, key, _) = pki.self_signed("server");
        let files = TlsFiles::from_flags(Some(cert), Some(key), None)
            .unwrap()
            .unwrap();
        let config = files.load().unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn a_client_ca_loads_into_a_mutual_tls_config() {
        let pki = Pki::new();
        let (cert, key, _) = pki.self_signed("server");
        let (ca, _, _) = pki.self_signed("clients");
        let files = TlsFiles::from_flags(Some(cert), Some(key), Some(ca))
            .unwrap()
            .unwrap();
        files.load().unwrap();
    }

    #[test]
    fn flags_must_come_together() {
        let p = || Some(PathBuf::from("x.pem"));
        assert!(
            TlsFiles::from_flags(p(), None, None)
                .unwrap_err()
                .contains("--tls-key")
        );
        assert!(
            TlsFiles::from_flags(None, p(), None)
                .unwrap_err()
                .contains("--tls-cert")
        );
        assert!(
            TlsFiles::from_flags(None, None, p())
                .unwrap_err()
                .contains("--tls-client-ca")
        );
        assert_eq!(TlsFiles::from_flags(None, None, None).unwrap(), None);
    }

    #[test]
    fn bad_files_are_named_in_the_error() {
        let pki = Pki::new();
        let (cert, key, _) = pki.self_signed("server");
        let (_, other_key, _) = pki.self_signed("other");
        let garbage = pki.write("garbage.pem", "not a pem file\n");
        let missing = pki.dir.path().join("missing.pem");
        let load = |cert: &Path, key: &Path| {
            TlsFiles {
                cert: cert.into(),
                key: key.into(),
                client_ca: None,
            }
            .load()
            .unwrap_err()
        };
        assert!(load(&missing, &key).contains("missing.pem"));
        assert!(load(&garbage, &key).contains("no PEM certificate"));
        assert!(load(&cert, &garbage).contains("garbage.pem: no usable private key"));
        assert!(load(&cert, &other_key).contains("does not fit"));
        let bad_ca = TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: Some(garbage.clone()),
        };
        assert!(bad_ca.load().unwrap_err().contains("garbage.pem"));
    }

    #[test]
    fn the_client_name_is_the_subject_cn() {
        let pki = Pki::new();
        let (_, _, der) = pki.self_signed("ci-runner");
        assert_eq!(client_name(&der).as_deref(), Some("ci-runner"));
        assert_eq!(client_name(&CertificateDer::from(vec![1, 2, 3])), None);
    }
}
