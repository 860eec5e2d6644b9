//! The server under test: a separate `runledger serve` process on a free
//! loopback port with its own data directory, and what `/proc` says about its CPU and memory.
//!
//! A separate process, not an in-process server, so that its CPU time and memory are its own and
//! the load generator's work is not counted against it.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// A running `runledger serve` child process; killed when dropped.
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
}

/// A free loopback port: bind port 0, read what the kernel chose, release it. Another process
/// could take it in between; the server then fails to bind and `start` says so.
fn free_addr() -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("cannot find a free loopback port: {e}"))?;
    listener
        .local_addr()
        .map_err(|e| format!("cannot find a free loopback port: {e}"))
}

/// The `runledger` binary to start: `given`, or the one built next to this program.
pub fn binary(given: Option<&Path>) -> Result<PathBuf, String> {
    let path = match given {
        Some(path) => path.to_owned(),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find this program's path: {e}"))?
            .with_file_name("runledger"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "no runledger binary at {} (build it with `cargo build --release`, or pass \
             --server-bin)",
            path.display()
        ))
    }
}

/// How long a started server may take to answer its first health check.
const STARTUP_LIMIT: Duration = Duration::from_secs(600);

impl ServerProcess {
    /// Starts `exe serve` on `data_dir` with `--durability durability`, logging to `log`, and
    /// waits until its health check answers.
    pub async fn start(
        exe: &Path,
        data_dir: &Path,
        durability: &str,
        log: &Path,
    ) -> Result<ServerProcess, String> {
        let store = [
            "--data-dir".as_ref(),
            data_dir.as_os_str(),
            "--durability".as_ref(),
            durability.as_ref(),
        ];
        Self::start_on(exe, &store, log).await
    }

    /// Starts `exe serve` with `store` (the flags that say where its data is: --data-dir ...,
    /// or --database-url ...), logging to `log`, and waits until its health check answers.
    pub async fn start_on(
        exe: &Path,
        store: &[&std::ffi::OsStr],
        log: &Path,
    ) -> Result<ServerProcess, String> {
        let addr = free_addr()?;
        let log_file =
            File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let child = Command::new(exe)
            .arg("serve")
            .arg("--grpc-addr")
            .arg(addr.to_string())
            .args(store)
            // A server that also serves JSON/HTTP must not collide with another one on the
            // default port; the environment form is ignored by servers without that flag.
            .env("RUNLEDGER_HTTP_ADDR", free_addr()?.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start `runledger serve`: {e}"))?;
        let mut server = ServerProcess {
            child,
            addr,
            log: log.to_owned(),
        };
        server.wait_ready().await?;
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the first health check to pass: opening a large data dir (sled's recovery,
    /// a format migration) can take minutes on a busy machine.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP_LIMIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "the server exited during startup ({status}); its log:\n{}",
                    self.log_tail()
                ));
            }
            if health_check(self.addr).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the server did not answer its health check within {} s; its log:\n{}",
                    STARTUP_LIMIT.as_secs(),
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Asks the server to stop (SIGTERM: it finishes in-flight calls and flushes) and waits for
    /// it; kills it if it takes longer than 60 s.
    pub async fn stop(mut self) -> Result<(), String> {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped), no pointers.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err("the server did not stop within 60 s of SIGTERM; killed".into());
                }
            }
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn health_check(addr: SocketAddr) -> Result<(), String> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// CPU time and memory of a process at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// utime + stime, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size now, in KiB (VmRSS).
    pub rss_kb: u64,
    /// Peak resident set size so far, in KiB (VmHWM).
    pub peak_rss_kb: u64,
}

/// Reads `/proc/PID/stat` and `/proc/PID/status`; `None` if the process is gone (or this is not
/// Linux).
pub fn sample(pid: u32) -> Option<ProcSample> {
    sample_path(&format!("/proc/{pid}"))
}

/// The same for the load generator itself.
pub fn sample_self() -> Option<ProcSample> {
    sample_path("/proc/self")
}

fn sample_path(dir: &str) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    // The command name (field 2) may contain spaces; the fields after it follow the last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Field 3 (state) is fields[0], so utime (14) and stime (15) are fields[11] and fields[12].
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    let kb = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Some(ProcSample {
        cpu_seconds: (utime + stime) as f64 / clock_ticks_per_second(),
        rss_kb: kb("VmRSS:"),
        peak_rss_kb: kb("VmHWM:"),
    })
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf takes an integer name and touches no memory of ours.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Total size of the files under `dir`, in bytes.
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(m) if m.is_dir() => dir_size(&entry.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
