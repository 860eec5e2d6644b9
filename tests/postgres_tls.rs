//! TLS to the database, as the URL's sslmode asks: verify-full checks the chain and the host
//! name against sslrootcert, require encrypts without checking, a certificate from another CA
//! is refused with UNAVAILABLE saying why, and the verify modes need a CA. A real PostgreSQL
//! with TLS on (the test's own cluster), certificates made by the test.

use std::path::Path;

use runledger::error::Error;
use runledger::store::{self, Location, PostgresOptions};

/// A CA, and a certificate it signed for 127.0.0.1 and localhost: (ca PEM, cert PEM, key PEM).
fn pki(name: &str) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} CA"));
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut server = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    server
        .subject_alt_names
        .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = server.signed_by(&key, &ca_cert, &ca_key).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

async fn open(url: String) -> Result<std::sync::Arc<dyn store::Store>, Error> {
    store::open(&Location::Database {
        url,
        options: PostgresOptions {
            pool_size: 2,
            ..Default::default()
        },
    })
    .await
}

/// Whether this session with the database is encrypted.
async fn encrypted(url: &str) -> bool {
    let client = store::postgres::DatabaseUrl::parse(url)
        .unwrap()
        .connect_spawned()
        .await
        .expect("connect");
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[tokio::test]
async fn sslmode_decides_how_the_database_is_trusted() {
    let test = "sslmode_decides_trust";
    let (ca, cert, key) = pki("right");
    let (other_ca, _, _) = pki("wrong");
    let Some(cluster) = tokio::task::spawn_blocking(move || {
        let mut cluster = runledger_testkit::postgres::cluster_or_skip(test)?;
        cluster.enable_tls(&cert, &key).expect("enable TLS");
        Some(cluster)
    })
    .await
    .unwrap() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", &ca);
    let other_ca = write(dir.path(), "other.pem", &other_ca);
    let base = cluster.url();
    let host_base = base.replace("127.0.0.1", "localhost");

    // verify-full with the right CA, by IP and by name: encrypted, and the store works.
    for base in [&base, &host_base] {
        let url = format!("{base}?sslmode=verify-full&sslrootcert={ca}");
        let store = open(url.clone()).await.expect("verify-full");
        assert!(encrypted(&url).await, "{url}");
        store.token_key().await.expect("a statement over TLS");
        store.close().await.unwrap();
    }
    // require: encrypted without checking; disable: plain.
    let require = format!("{base}?sslmode=require");
    open(require.clone()).await.expect("require");
    assert!(encrypted(&require).await);
    assert!(!encrypted(&format!("{base}?sslmode=disable")).await);

    // Another CA: refused at the handshake, saying so.
    for mode in ["verify-full", "verify-ca", "require"] {
        let url = format!("{base}?sslmode={mode}&sslrootcert={other_ca}");
        let err = open(url).await.err().expect("refused");
        assert!(matches!(err, Error::Unavailable(_)), "{mode}: {err:?}");
        assert!(
            err.message().to_lowercase().contains("certificate"),
            "{mode}: {err}"
        );
    }
    // The verify modes need a CA (libpq's default, ~/.postgresql/root.crt, when there is one).
    let home_ca = std::env::var_os("HOME")
        .map(|home| Path::new(&home).join(".postgresql/root.crt"))
        .is_some_and(|p| p.exists());
    if !home_ca {
        let err = open(format!("{base}?sslmode=verify-full"))
            .await
            .err()
            .expect("no CA");
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        assert!(err.message().contains("sslrootcert"), "{err}");
    }
}
