//! The `runledger serve` binary with TLS: SIGHUP reloads the certificate for new connections (a
//! bad file keeps the previous one), bad TLS flags or files stop it before it serves, and
//! plaintext on a non-loopback address logs a warning (checked inside a private network
//! namespace, so nothing is ever exposed beyond this machine).

mod common;

use std::ffi::OsStr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::pki::{CertFiles, Pki};
use common::process::{BIN, ServerProcess};

/// A JSON client over TLS that trusts only `ca` (a new client: new connections).
fn trusting(ca: &Pki) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.ca_pem().as_bytes()).unwrap())
        .build()
        .unwrap()
}

async fn healthz(client: &reqwest::Client, addr: std::net::SocketAddr) -> Result<u16, String> {
    client
        .get(format!(
            "https://127.0.0.1:{}/apis/v2beta1/healthz",
            addr.port()
        ))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

/// Copies a certificate and key over the files the server was started with.
fn install(issued: &CertFiles, at: &CertFiles) {
    std::fs::copy(&issued.cert, &at.cert).unwrap();
    std::fs::copy(&issued.key, &at.key).unwrap();
}

#[tokio::test]
async fn sighup_reloads_the_certificate_for_new_connections_and_keeps_it_on_a_bad_file() {
    let old = Pki::new("old");
    let new = Pki::new("new");
    let dir = tempfile::tempdir().unwrap();
    let files = CertFiles {
        cert: dir.path().join("server.crt"),
        key: dir.path().join("server.key"),
    };
    install(&old.server(), &files);
    let server = ServerProcess::start(
        dir.path(),
        &[
            OsStr::new("--tls-cert"),
            files.cert.as_os_str(),
            OsStr::new("--tls-key"),
            files.key.as_os_str(),
        ],
    );
    assert!(server.log().contains("tls=\"on\""), "{}", server.log());

    let kept = trusting(&old);
    for addr in [server.http, server.grpc] {
        assert_eq!(healthz(&kept, addr).await, Ok(200));
        assert!(healthz(&trusting(&new), addr).await.is_err());
    }

    install(&new.server(), &files);
    server.hangup();
    server.wait_for_log("TLS certificate reloaded", 1);
    for addr in [server.http, server.grpc] {
        assert_eq!(healthz(&trusting(&new), addr).await, Ok(200), "{addr}");
        let refused = healthz(&trusting(&old), addr).await;
        assert!(
            refused.is_err(),
            "the old certificate still served: {refused:?}"
        );
        // A connection opened before the reload keeps the certificate it was opened with.
        assert_eq!(healthz(&kept, addr).await, Ok(200), "{addr}");
    }

    std::fs::write(&files.key, "not a key\n").unwrap();
    server.hangup();
    server.wait_for_log("TLS certificate not reloaded", 1);
    let log = server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("not reloaded") && l.contains("server.key: no usable private key")),
        "{log}"
    );
    for addr in [server.http, server.grpc] {
        assert_eq!(healthz(&trusting(&new), addr).await, Ok(200), "{addr}");
    }
}

#[test]
fn the_certificate_in_force_is_logged_with_its_expiry_and_an_expired_one_is_a_warning() {
    let pki = Pki::new("server");
    let dir = tempfile::tempdir().unwrap();
    for (cert, expired) in [(pki.server(), false), (pki.expired_server(), true)] {
        let server = ServerProcess::start(
            dir.path(),
            &[
                OsStr::new("--tls-cert"),
                cert.cert.as_os_str(),
                OsStr::new("--tls-key"),
                cert.key.as_os_str(),
            ],
        );
        let log = server.log();
        assert!(
            log.lines()
                .any(|l| l.contains("TLS on both ports") && l.contains("expires=")),
            "{log}"
        );
        assert_eq!(
            log.lines()
                .any(|l| l.contains("WARN") && l.contains("the TLS certificate has expired")),
            expired,
            "{log}"
        );
        assert_eq!(
            expired,
            log.contains("expires=2020-01-01T00:00:00Z"),
            "{log}"
        );
    }
}

/// Runs `runledger serve` with `args` and expects it to exit 1 (bounded wait); returns stderr.
fn refused_start(args: &[&OsStr]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("runledger serve {args:?} kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        !dir.path().join("data").exists(),
        "the data dir was created before the flags were checked"
    );
    stderr
}

#[test]
fn bad_tls_flags_or_files_stop_the_server_before_it_opens_the_store() {
    let pki = Pki::new("server");
    let server = pki.server();
    let garbage = pki.write("garbage.pem", "not PEM\n");
    let missing = pki.dir().join("missing.crt");

    let alone = refused_start(&[OsStr::new("--tls-cert"), server.cert.as_os_str()]);
    assert!(alone.contains("--tls-cert needs --tls-key"), "{alone}");
    let ca_only = refused_start(&[OsStr::new("--tls-client-ca"), pki.ca_cert().as_os_str()]);
    assert!(
        ca_only.contains("--tls-client-ca needs --tls-cert and --tls-key"),
        "{ca_only}"
    );
    let absent = refused_start(&[
        OsStr::new("--tls-cert"),
        missing.as_os_str(),
        OsStr::new("--tls-key"),
        server.key.as_os_str(),
    ]);
    assert!(absent.contains("missing.crt: cannot read"), "{absent}");
    let bad_ca = refused_start(&[
        OsStr::new("--tls-cert"),
        server.cert.as_os_str(),
        OsStr::new("--tls-key"),
        server.key.as_os_str(),
        OsStr::new("--tls-client-ca"),
        garbage.as_os_str(),
    ]);
    assert!(
        bad_ca.contains("garbage.pem: no PEM certificate"),
        "{bad_ca}"
    );
}

const WARNING: &str = "is not a loopback address and TLS is off";

#[test]
fn plaintext_on_a_loopback_address_logs_no_warning() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    assert!(!server.log().contains(WARNING), "{}", server.log());
}

/// `unshare -n`: a private network namespace (only a loopback device, down), where binding
/// 0.0.0.0 reaches no network. None (with the reason) where the machine does not allow it.
fn private_network() -> Result<Command, String> {
    let probe = Command::new("unshare")
        .args(["-n", "true"])
        .output()
        .map_err(|e| format!("cannot run unshare: {e}"))?;
    if !probe.status.success() {
        return Err(format!(
            "unshare -n failed (needs root or user namespaces): {}",
            String::from_utf8_lossy(&probe.stderr).trim()
        ));
    }
    let mut command = Command::new("unshare");
    command.args(["-n", BIN, "serve", "--grpc-addr", "0.0.0.0:0"]);
    command.args(["--http-addr", "0.0.0.0:0"]);
    Ok(command)
}

#[test]
fn plaintext_beyond_loopback_logs_a_warning_naming_each_flag_and_tls_does_not() {
    let mut command = match private_network() {
        Ok(command) => command,
        Err(why) => {
            common::skip_unless_ci("the non-loopback warning test", &why);
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let plain = ServerProcess::start_with(&mut command, dir.path(), &[]);
    let log = plain.log();
    for flag in ["--grpc-addr", "--http-addr"] {
        assert!(
            log.lines()
                .any(|l| l.contains("WARN") && l.contains(flag) && l.contains(WARNING)),
            "no warning for {flag}:\n{log}"
        );
    }
    drop(plain);

    let pki = Pki::new("server");
    let cert = pki.server();
    let dir = tempfile::tempdir().unwrap();
    let mut command = private_network().unwrap();
    let tls = ServerProcess::start_with(
        &mut command,
        dir.path(),
        &[
            OsStr::new("--tls-cert"),
            cert.cert.as_os_str(),
            OsStr::new("--tls-key"),
            cert.key.as_os_str(),
        ],
    );
    assert!(!tls.log().contains(WARNING), "{}", tls.log());
}
