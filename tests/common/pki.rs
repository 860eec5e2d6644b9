//! Certificates for the TLS tests, made with rcgen in a temporary directory: a CA, server
//! certificates for 127.0.0.1 and localhost, and client certificates named by their CN.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use runledger::transport::tls::{Tls, TlsFiles};

/// A certificate (PEM) and its key, as files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One certificate authority and the files it issued.
pub struct Pki {
    dir: tempfile::TempDir,
    name: String,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    /// A new CA called `name` (its files are prefixed with it).
    pub fn new(name: &str) -> Pki {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = params.self_signed(&ca_key).expect("CA certificate");
        let pki = Pki {
            dir: tempfile::tempdir().expect("temp dir"),
            name: name.to_owned(),
            ca,
            ca_key,
        };
        pki.write("ca.crt", &pki.ca.pem());
        pki
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `<name>-<file>` in the directory.
    pub fn write(&self, file: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{}-{file}", self.name));
        std::fs::write(&path, text).expect("write PEM");
        path
    }

    /// The CA certificate file.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join(format!("{}-ca.crt", self.name))
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A server certificate for 127.0.0.1 and localhost.
    pub fn server(&self) -> CertFiles {
        self.issue(
            "server",
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A server certificate for 127.0.0.1 that expired in 2020.
    pub fn expired_server(&self) -> CertFiles {
        self.issue_with(
            "expired",
            vec!["127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            |params| {
                params.not_before = rcgen::date_time_ymd(2019, 1, 1);
                params.not_after = rcgen::date_time_ymd(2020, 1, 1);
            },
        )
    }

    /// A client certificate whose subject CN is `cn`.
    pub fn client(&self, cn: &str) -> CertFiles {
        self.issue(cn, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(&self, cn: &str, names: Vec<String>, usage: ExtendedKeyUsagePurpose) -> CertFiles {
        self.issue_with(cn, names, usage, |_| {})
    }

    fn issue_with(
        &self,
        cn: &str,
        names: Vec<String>,
        usage: ExtendedKeyUsagePurpose,
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> CertFiles {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        adjust(&mut params);
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("sign");
        CertFiles {
            cert: self.write(&format!("{cn}.crt"), &cert.pem()),
            key: self.write(&format!("{cn}.key"), &key.serialize_pem()),
        }
    }

    /// Server TLS with this CA's server certificate; clients must present a certificate of
    /// `client_ca` when it is given.
    pub fn server_tls(&self, client_ca: Option<&Pki>) -> Arc<Tls> {
        let server = self.server();
        Arc::new(
            Tls::load(TlsFiles {
                cert: server.cert,
                key: server.key,
                client_ca: client_ca.map(Pki::ca_cert),
            })
            .expect("server TLS config"),
        )
    }
}
