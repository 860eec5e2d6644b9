//! [`Cluster`]: one throwaway PostgreSQL server with its own directory and port.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::account::ServerUser;
use super::binaries::Binaries;
use super::command::run_bounded;
use super::error::Error;
use super::postmaster::{Postmaster, end_stragglers};
use super::watchdog::Watchdog;
use super::workdir::WorkDir;

/// The superuser initdb creates; every URL connects as it (authentication is `trust`).
pub const SUPERUSER: &str = "postgres";

/// The database [`Cluster::start`] creates, the one [`Cluster::url`] names.
pub const DEFAULT_DATABASE: &str = "runledger";

/// initdb writes ~40 MB and runs the bootstrap backend; on two busy cores it can take seconds.
const INITDB_LIMIT: Duration = Duration::from_secs(60);
/// From spawning postgres until it accepts connections, crash recovery included.
const START_LIMIT: Duration = Duration::from_secs(30);
/// Fast shutdown: a checkpoint and waiting for clients to be told.
const STOP_LIMIT: Duration = Duration::from_secs(30);
/// Drop uses immediate shutdown, which needs no checkpoint.
const DROP_LIMIT: Duration = Duration::from_secs(10);
/// Backends notice a dead postmaster within milliseconds; past this they are killed.
const STRAGGLER_LIMIT: Duration = Duration::from_secs(10);
const CREATEDB_LIMIT: Duration = Duration::from_secs(30);

/// The certificate and key files [`Cluster::enable_tls`] writes into the data directory.
const TLS_CERT: &str = "testkit-server.crt";
const TLS_KEY: &str = "testkit-server.key";

/// How often a start picks another port when the chosen one was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// Lets many test databases (each with a connection pool) share one cluster; PostgreSQL's
/// default is 100.
const MAX_CONNECTIONS: u32 = 200;

/// A PostgreSQL server for tests: its own data directory under the temp dir, listening on
/// 127.0.0.1 only, on a free port, with `trust` authentication for [`SUPERUSER`].
///
/// Dropping it stops the server (immediate shutdown), ends any process of it that is left and
/// removes the directory. If the test process dies instead, a guard process does the same.
///
/// The methods block (they wait for processes); from an async test call them directly or
/// through `spawn_blocking`.
#[derive(Debug)]
pub struct Cluster {
    binaries: Binaries,
    user: ServerUser,
    dir: WorkDir,
    port: u16,
    postmaster: Option<Postmaster>,
    watchdog: Watchdog,
    /// Whether the server also accepts TLS connections (see [`Cluster::enable_tls`]).
    tls: bool,
    /// Whether commits wait for fsync (see [`Cluster::start_durable`]).
    fsync: bool,
}

impl Cluster {
    /// initdb, start, wait until ready, create [`DEFAULT_DATABASE`].
    ///
    /// Returns [`Error::Unavailable`] when this machine has no PostgreSQL server (the message
    /// says what is missing and how to install it), [`Error::Failed`] with the server log's tail
    /// when a step fails.
    pub fn start() -> Result<Cluster, Error> {
        Self::start_with_fsync(false)
    }

    /// [`Cluster::start`] with `fsync = on`: commits reach the disk before they return, as on
    /// a production server. For benchmarks whose figures must include durability.
    pub fn start_durable() -> Result<Cluster, Error> {
        Self::start_with_fsync(true)
    }

    fn start_with_fsync(fsync: bool) -> Result<Cluster, Error> {
        let binaries = Binaries::locate()?;
        let user = ServerUser::for_this_process()?;
        let dir = WorkDir::create(&user)?;
        let watchdog = match Watchdog::start(&binaries, &user, &dir) {
            Ok(watchdog) => watchdog,
            Err(e) => {
                let _ = dir.remove();
                return Err(e);
            }
        };
        // From here on, an early return drops `cluster`, which cleans up whatever exists.
        let mut cluster = Cluster {
            binaries,
            user,
            dir,
            port: 0,
            postmaster: None,
            watchdog,
            tls: false,
            fsync,
        };
        cluster.initdb()?;
        cluster.launch_on_free_port()?;
        cluster.create_database(DEFAULT_DATABASE)?;
        Ok(cluster)
    }

    /// `postgres://postgres@127.0.0.1:PORT/runledger`.
    pub fn url(&self) -> String {
        self.url_for(DEFAULT_DATABASE)
    }

    /// The URL of database `name` in this cluster (whether or not it exists).
    pub fn url_for(&self, name: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{name}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PostgreSQL data directory (PGDATA).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.data()
    }

    /// The server's log; it is kept across `stop`/`start_again` and removed with the cluster.
    pub fn log_path(&self) -> PathBuf {
        self.dir.log()
    }

    /// The postmaster's pid while the server runs.
    pub fn postmaster_pid(&self) -> Option<u32> {
        self.postmaster.as_ref().map(Postmaster::pid)
    }

    /// Creates database `name` (letters, digits and `_`, not starting with a digit, at most 63
    /// bytes) and returns its URL. One cluster serves many tests cheaply this way: a database
    /// is a copy of `template1`, not a new server.
    pub fn create_database(&self, name: &str) -> Result<String, Error> {
        validate_database_name(name)?;
        if self.postmaster.is_none() {
            return Err(Error::InvalidArgument {
                message: format!(
                    "cannot create database `{name}`: the cluster is stopped (call start_again)"
                ),
            });
        }
        let mut cmd = self
            .user
            .command(&self.binaries.program("createdb"), self.dir.root());
        cmd.arg("--host")
            .arg(self.dir.root())
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--username")
            .arg(SUPERUSER)
            .arg("--no-password")
            .arg(name);
        let step = format!("creating database `{name}`");
        run_bounded(&mut cmd, &step, CREATEDB_LIMIT)?.require_success(&step)?;
        Ok(self.url_for(name))
    }

    /// Fast shutdown (clean, with a checkpoint). The data directory and port are kept for
    /// [`start_again`](Cluster::start_again).
    pub fn stop(&mut self) -> Result<(), Error> {
        let Some(mut postmaster) = self.postmaster.take() else {
            return Err(Error::InvalidArgument {
                message: "stop: the cluster is not running".to_string(),
            });
        };
        let clean = postmaster.end(libc::SIGINT, STOP_LIMIT);
        end_stragglers(&self.dir.data(), STRAGGLER_LIMIT);
        if !clean {
            return Err(Error::failed(
                "stopping the server",
                format!(
                    "no exit within {} s of a fast shutdown; it was killed",
                    STOP_LIMIT.as_secs()
                ),
            )
            .with_log_tail(self.dir.log_tail()));
        }
        Ok(())
    }

    /// Starts the server again on the same data directory and port, after
    /// [`stop`](Cluster::stop) or [`kill`](Cluster::kill) (then with crash recovery).
    pub fn start_again(&mut self) -> Result<(), Error> {
        if self.postmaster.is_some() {
            return Err(Error::InvalidArgument {
                message: "start_again: the cluster is already running".to_string(),
            });
        }
        self.launch().map_err(|(error, _)| error)
    }

    /// Makes the server accept TLS connections with this certificate and key (PEM, the key
    /// unencrypted), restarting it when it runs. Connections without TLS are still accepted,
    /// so `sslmode` decides. Kept across `stop`/`start_again`.
    pub fn enable_tls(&mut self, cert_pem: &str, key_pem: &str) -> Result<(), Error> {
        use std::os::unix::fs::PermissionsExt;
        for (name, content, mode) in [(TLS_CERT, cert_pem, 0o644), (TLS_KEY, key_pem, 0o600)] {
            let path = self.dir.data().join(name);
            std::fs::write(&path, content)
                .and_then(|()| {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                })
                .and_then(|()| self.user.hand_over(&path))
                .map_err(|e| configure_error(&path, e))?;
        }
        self.tls = true;
        self.write_settings(self.port)?;
        if self.postmaster.is_some() {
            self.stop()?;
            self.start_again()?;
        }
        Ok(())
    }

    /// SIGKILL to the postmaster, as a crash would; returns once it and its backends are gone
    /// (clients see their connections drop). Nothing is flushed or checkpointed.
    pub fn kill(&mut self) -> Result<(), Error> {
        let Some(mut postmaster) = self.postmaster.take() else {
            return Err(Error::InvalidArgument {
                message: "kill: the cluster is not running".to_string(),
            });
        };
        postmaster.end(libc::SIGKILL, STOP_LIMIT);
        // The next start must not find backends still attached to the old shared memory.
        end_stragglers(&self.dir.data(), STRAGGLER_LIMIT);
        Ok(())
    }

    fn initdb(&self) -> Result<(), Error> {
        let mut cmd = self
            .user
            .command(&self.binaries.program("initdb"), self.dir.root());
        cmd.arg("--pgdata")
            .arg(self.dir.data())
            .arg(format!("--username={SUPERUSER}"))
            .arg("--auth=trust")
            .arg("--encoding=UTF8")
            // C: no dependence on which locales the machine has generated.
            .arg("--locale=C")
            // Nothing here must survive a machine crash; fsync makes initdb several times slower.
            .arg("--no-sync");
        run_bounded(&mut cmd, "initdb", INITDB_LIMIT)?.require_success("initdb")?;
        self.append_include()
    }

    /// Makes postgresql.conf read `runledger-testkit.conf`, rewritten with each port choice.
    fn append_include(&self) -> Result<(), Error> {
        let path = self.dir.data().join("postgresql.conf");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| configure_error(&path, e))?;
        file.write_all(b"\n# runledger-testkit's settings for a throwaway test cluster.\ninclude 'runledger-testkit.conf'\n")
            .map_err(|e| configure_error(&path, e))
    }

    fn write_settings(&self, port: u16) -> Result<(), Error> {
        let path = self.dir.data().join("runledger-testkit.conf");
        let socket_dir = self.dir.root().to_string_lossy().replace('\'', "''");
        let mut settings = format!(
            "listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{socket_dir}'\n\
             max_connections = {MAX_CONNECTIONS}\n\
             # Durability against machine crashes is worthless in tests; killed processes lose\n\
             # nothing anyway, because commits still reach the OS before they return.\n\
             fsync = {}\n\
             timezone = 'UTC'\n",
            if self.fsync { "on" } else { "off" }
        );
        if self.tls {
            settings.push_str(&format!(
                "ssl = on\nssl_cert_file = '{TLS_CERT}'\nssl_key_file = '{TLS_KEY}'\n"
            ));
        }
        std::fs::write(&path, settings).map_err(|e| configure_error(&path, e))?;
        self.user
            .hand_over(&path)
            .map_err(|e| configure_error(&path, e))
    }

    /// Picks a free port and starts; when another process took the port between the pick and
    /// the server's bind, picks again.
    fn launch_on_free_port(&mut self) -> Result<(), Error> {
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            self.write_settings(port)?;
            self.port = port;
            match self.launch() {
                Ok(()) => return Ok(()),
                Err((error, new_log)) if is_port_taken(&new_log) => last = Some(error),
                Err((error, _)) => return Err(error),
            }
        }
        Err(last.unwrap_or_else(|| Error::failed("starting the server", "no port attempt made")))
    }

    /// Spawns the postmaster and waits until it is ready. On failure also returns what the log
    /// gained during this attempt, so the caller can tell a taken port from other failures.
    fn launch(&mut self) -> Result<(), (Error, String)> {
        let log_start = self.dir.log_len();
        let fail = |this: &Cluster, error: Error| {
            let tail = this.dir.log_tail();
            (error.with_log_tail(tail), this.dir.log_since(log_start))
        };
        let mut postmaster = match Postmaster::spawn(&self.binaries, &self.user, &self.dir) {
            Ok(postmaster) => postmaster,
            Err(error) => return Err(fail(self, error)),
        };
        if let Err(error) = postmaster.wait_ready(&self.dir.data(), START_LIMIT) {
            end_stragglers(&self.dir.data(), STRAGGLER_LIMIT);
            return Err(fail(self, error));
        }
        self.postmaster = Some(postmaster);
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut postmaster) = self.postmaster.take() {
            postmaster.end(libc::SIGQUIT, DROP_LIMIT);
        }
        let killed = end_stragglers(&self.dir.data(), STRAGGLER_LIMIT);
        if !killed.is_empty() {
            let _ = writeln!(
                std::io::stderr(),
                "runledger-testkit: killed leftover PostgreSQL processes {killed:?} of {}",
                self.dir.root().display()
            );
        }
        if let Err(e) = self.dir.remove() {
            let _ = writeln!(
                std::io::stderr(),
                "runledger-testkit: could not remove {}: {e}",
                self.dir.root().display()
            );
        }
        self.watchdog.dismiss();
    }
}

fn validate_database_name(name: &str) -> Result<(), Error> {
    let mut chars = name.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if starts_well && rest_ok && name.len() <= 63 {
        return Ok(());
    }
    Err(Error::InvalidArgument {
        message: format!(
            "database name {name:?} is not allowed: use 1 to 63 ASCII letters, digits and `_`, \
             not starting with a digit (such names need no quoting in SQL or in a URL)"
        ),
    })
}

/// A port nobody listens on right now: the kernel's pick for a port-0 bind.
fn free_port() -> Result<u16, Error> {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| {
            Error::failed(
                "choosing a port",
                format!("binding 127.0.0.1:0 failed: {e}"),
            )
        })
}

fn is_port_taken(log: &str) -> bool {
    log.contains("could not bind") || log.contains("Address already in use")
}

fn configure_error(path: &Path, e: std::io::Error) -> Error {
    Error::failed(
        "configuring the cluster",
        format!("{}: {e}", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_identifiers_are_valid_database_names() {
        for name in ["a", "runledger", "test_42", "_x", &"n".repeat(63)] {
            assert_eq!(validate_database_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn names_needing_quotes_or_too_long_are_rejected_with_the_rule() {
        for name in [
            "",
            "1st",
            "has space",
            "dash-ed",
            "Ünï",
            "x;drop",
            &"n".repeat(64),
        ] {
            let error = validate_database_name(name).unwrap_err();
            assert!(matches!(error, Error::InvalidArgument { .. }), "{name}");
            assert!(
                error.to_string().contains("1 to 63 ASCII letters"),
                "{name}"
            );
        }
    }
}
