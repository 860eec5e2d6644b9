//! A real PostgreSQL client for the kit's tests, and the checks on processes they share.
// Each test binary compiles this module and uses a part of it.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

/// Connects to `url` and drives the connection on the test's runtime.
pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(async move {
        // Ends with an error when a test stops or kills the server under it; that is expected.
        let _ = connection.await;
    });
    client
}

/// Every live process whose working directory is `data` or was `data` before it was removed
/// (/proc then shows "<data> (deleted)"). Found independently of the kit's own bookkeeping.
pub fn processes_in(data: &Path) -> Vec<u32> {
    let data = data.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cwd = std::fs::read_link(entry.path().join("cwd")).ok()?;
            let cwd = cwd.to_string_lossy();
            let inside = cwd == data
                || cwd.starts_with(&format!("{data} "))
                || cwd.starts_with(&format!("{data}/"));
            inside.then_some(pid)
        })
        .collect()
}

/// Polls until `data` has no processes and its cluster directory is gone, or `limit` passes.
pub fn wait_until_cleaned_up(data: &Path, limit: Duration) -> Result<(), String> {
    let root = data.parent().expect("data dir has a parent");
    let deadline = Instant::now() + limit;
    loop {
        let left = processes_in(data);
        if left.is_empty() && !root.exists() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "after {limit:?}: processes {left:?} still in {}, directory exists: {}",
                data.display(),
                root.exists()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The real uid of a process, from /proc/<pid>/status.
pub fn uid_of(pid: &str) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let line = status
        .lines()
        .find(|line| line.starts_with("Uid:"))
        .expect("Uid line");
    line.split_whitespace()
        .nth(1)
        .and_then(|uid| uid.parse().ok())
        .expect("numeric uid")
}
