//! Finding the PostgreSQL server programs on this machine.
//!
//! Debian installs them outside PATH, in `/usr/lib/postgresql/<major>/bin`, and several majors
//! can sit side by side; `pg_config --bindir` names the newest one when a server-dev package is
//! installed, but libpq-dev's `pg_config` answers `/usr/bin`, which holds no server. So every
//! candidate directory is checked for the programs themselves, in the order the caller would
//! expect: what `pg_config` says, then the newest Debian major, then PATH.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::command::run_bounded;
use super::error::Error;

/// The programs a cluster needs; a directory lacking any of them is not a server installation.
const REQUIRED: [&str; 4] = ["initdb", "postgres", "pg_ctl", "createdb"];

/// Where Debian's postgresql-NN packages put one directory per major version.
const DEBIAN_VERSIONS_ROOT: &str = "/usr/lib/postgresql";

/// `pg_config` only prints a path; anything slower than this is a broken installation.
const PG_CONFIG_LIMIT: Duration = Duration::from_secs(10);

/// One directory holding all of [`REQUIRED`].
#[derive(Debug, Clone)]
pub(crate) struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// Looks where this machine's PostgreSQL would be, see the module docs for the order.
    pub(crate) fn locate() -> Result<Binaries, Error> {
        let from_pg_config = pg_config_bindir();
        find(
            from_pg_config.as_deref(),
            Path::new(DEBIAN_VERSIONS_ROOT),
            std::env::var_os("PATH").as_deref(),
        )
    }

    #[cfg(test)]
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn program(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The search itself, with the machine's answers passed in so that it can be tested on made-up
/// directories.
pub(crate) fn find(
    pg_config_bindir: Option<&Path>,
    debian_root: &Path,
    path_var: Option<&OsStr>,
) -> Result<Binaries, Error> {
    let mut looked = Vec::new();

    if let Some(dir) = pg_config_bindir {
        match missing_in(dir) {
            None => {
                return Ok(Binaries {
                    dir: dir.to_path_buf(),
                });
            }
            Some(missing) => looked.push(format!(
                "`pg_config --bindir` names {} but it lacks {missing}",
                dir.display()
            )),
        }
    }

    let mut majors = debian_majors(debian_root);
    majors.sort_by(|a, b| b.0.cmp(&a.0));
    for (_, bin) in &majors {
        match missing_in(bin) {
            None => return Ok(Binaries { dir: bin.clone() }),
            Some(missing) => looked.push(format!("{} lacks {missing}", bin.display())),
        }
    }
    if majors.is_empty() {
        looked.push(format!("no {}/<version>/bin", debian_root.display()));
    }

    match initdb_on_path(path_var) {
        Some(initdb) => {
            // /usr/local/bin may hold only symlinks; the real directory is where the
            // symlink points, and postgres must be next to initdb there.
            let real = std::fs::canonicalize(&initdb).unwrap_or_else(|_| initdb.clone());
            let dir = real.parent().map(Path::to_path_buf).unwrap_or_default();
            match missing_in(&dir) {
                None => return Ok(Binaries { dir }),
                Some(missing) => looked.push(format!(
                    "initdb on PATH is {} but {} lacks {missing}",
                    initdb.display(),
                    dir.display()
                )),
            }
        }
        None => looked.push("initdb is not on PATH".to_string()),
    }

    Err(Error::Unavailable {
        missing: format!(
            "no directory holds all of {}: {}",
            REQUIRED.join(", "),
            looked.join("; ")
        ),
    })
}

/// Names the required programs `dir` does not have, or `None` when it has them all.
fn missing_in(dir: &Path) -> Option<String> {
    let missing: Vec<&str> = REQUIRED
        .into_iter()
        .filter(|name| !is_executable(&dir.join(name)))
        .collect();
    (!missing.is_empty()).then(|| missing.join(", "))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The `<root>/<version>/bin` directories, each with its version as numbers so that 9.6 sorts
/// below 15 (as text it would not).
fn debian_majors(root: &Path) -> Vec<(Vec<u32>, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            let version = parse_version(name.to_str()?)?;
            Some((version, entry.path().join("bin")))
        })
        .collect()
}

fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

fn initdb_on_path(path_var: Option<&OsStr>) -> Option<PathBuf> {
    std::env::split_paths(path_var?)
        .map(|dir| dir.join("initdb"))
        .find(|candidate| is_executable(candidate))
}

/// What `pg_config --bindir` prints, or `None` when there is no working `pg_config`.
fn pg_config_bindir() -> Option<PathBuf> {
    let output = run_bounded(
        Command::new("pg_config").arg("--bindir"),
        "pg_config --bindir",
        PG_CONFIG_LIMIT,
    )
    .ok()?;
    if !output.success {
        return None;
    }
    let line = output.stdout.trim();
    (!line.is_empty()).then(|| PathBuf::from(OsString::from(line)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A scratch directory for one test, removed at the end.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!(
                "runledger-testkit-binaries-{name}-{}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create scratch dir");
            Scratch(dir)
        }

        /// Creates `<root>/<rel>/` holding executables named `programs`.
        fn bin(&self, rel: &str, programs: &[&str]) -> PathBuf {
            let dir = self.0.join(rel);
            std::fs::create_dir_all(&dir).expect("create bin dir");
            for name in programs {
                let path = dir.join(name);
                std::fs::write(&path, "#!/bin/sh\n").expect("write program");
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                    .expect("chmod program");
            }
            dir
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn pg_config_wins_when_its_directory_is_complete() {
        let scratch = Scratch::new("pg-config");
        let named = scratch.bin("named/bin", &REQUIRED);
        scratch.bin("debian/16/bin", &REQUIRED);
        let found = find(Some(&named), &scratch.0.join("debian"), None).expect("found");
        assert_eq!(found.dir(), named);
    }

    #[test]
    fn a_client_only_pg_config_falls_through_to_the_debian_directories() {
        let scratch = Scratch::new("libpq-dev");
        let usr_bin = scratch.bin("usr/bin", &["pg_config", "psql", "createdb"]);
        let debian = scratch.bin("debian/15/bin", &REQUIRED);
        let found = find(Some(&usr_bin), &scratch.0.join("debian"), None).expect("found");
        assert_eq!(found.dir(), debian);
    }

    #[test]
    fn the_newest_debian_major_is_chosen_by_number_not_by_text() {
        let scratch = Scratch::new("newest");
        scratch.bin("debian/9.6/bin", &REQUIRED);
        let fifteen = scratch.bin("debian/15/bin", &REQUIRED);
        scratch.bin("debian/16/bin", &["initdb"]);
        let found = find(None, &scratch.0.join("debian"), None).expect("found");
        assert_eq!(found.dir(), fifteen);
    }

    #[test]
    fn initdb_on_path_is_followed_through_its_symlink() {
        let scratch = Scratch::new("path");
        let real = scratch.bin("real/bin", &REQUIRED);
        let links = scratch.0.join("links");
        std::fs::create_dir_all(&links).expect("links dir");
        std::os::unix::fs::symlink(real.join("initdb"), links.join("initdb")).expect("symlink");
        let path = std::env::join_paths([scratch.0.join("nothing"), links]).expect("PATH");
        let found = find(None, &scratch.0.join("no-debian"), Some(&path)).expect("found");
        assert_eq!(
            std::fs::canonicalize(found.dir()).expect("canonical found"),
            std::fs::canonicalize(real).expect("canonical real")
        );
    }

    #[test]
    fn nothing_found_is_unavailable_and_says_what_was_missing_and_how_to_install() {
        let scratch = Scratch::new("none");
        let partial = scratch.bin("debian/15/bin", &["initdb", "pg_ctl"]);
        let error = find(None, &scratch.0.join("debian"), Some(OsStr::new(""))).unwrap_err();
        assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
        let message = error.to_string();
        assert!(
            message.contains("apt-get install -y postgresql"),
            "{message}"
        );
        assert!(
            message.contains(&partial.display().to_string()),
            "{message}"
        );
        assert!(message.contains("postgres, createdb"), "{message}");
        assert!(message.contains("initdb is not on PATH"), "{message}");
    }
}
