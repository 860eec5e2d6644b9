//! Which operating-system user runs initdb and postgres.
//!
//! Both refuse to run as root (a server bug must not own the machine), and CI runs as root. So
//! as root the programs run as the unprivileged `postgres` user that Debian's postgresql package
//! creates; otherwise they run as whoever runs the tests. The switch is done by std's
//! `CommandExt::uid/gid` (setgroups, setgid, setuid in the child before exec), which is what
//! `setpriv` does, without runuser's PAM session or a dependency on util-linux.

use std::ffi::{CString, OsString};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use super::error::Error;

/// The account Debian's postgresql-common creates for the server.
const SERVER_ACCOUNT: &str = "postgres";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ServerUser {
    /// Not root: run the programs directly.
    Current,
    /// Root: run them as this account.
    Switched { name: String, uid: u32, gid: u32 },
}

impl ServerUser {
    pub(crate) fn for_this_process() -> Result<ServerUser, Error> {
        // SAFETY: geteuid cannot fail and touches no memory.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(ServerUser::Current);
        }
        match lookup_account(SERVER_ACCOUNT) {
            Some((uid, gid)) => Ok(ServerUser::Switched {
                name: SERVER_ACCOUNT.to_string(),
                uid,
                gid,
            }),
            None => Err(Error::Unavailable {
                missing: format!(
                    "running as root, the server must run as the unprivileged user \
                     `{SERVER_ACCOUNT}` (initdb and postgres refuse root), and there is no such \
                     user; Debian's postgresql package creates it"
                ),
            }),
        }
    }

    /// A command for `program` that runs as this user, in `cwd`, with an environment that cannot
    /// steer it: PG* variables (PGDATA, PGPORT, PGOPTIONS, ...) are dropped and messages are in
    /// English, so that errors quoted in test failures read the same everywhere.
    pub(crate) fn command(&self, program: &Path, cwd: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(cwd).env("LC_ALL", "C");
        for key in steering_variables(std::env::vars_os().map(|(key, _)| key)) {
            cmd.env_remove(key);
        }
        if let ServerUser::Switched { uid, gid, .. } = self {
            cmd.uid(*uid).gid(*gid);
        }
        cmd
    }

    /// Makes `path` belong to this user (a no-op when running as it already).
    pub(crate) fn hand_over(&self, path: &Path) -> std::io::Result<()> {
        match self {
            ServerUser::Current => Ok(()),
            ServerUser::Switched { uid, gid, .. } => {
                std::os::unix::fs::chown(path, Some(*uid), Some(*gid))
            }
        }
    }

    /// Whether this user can walk into `dir`: every directory on the way needs the search bit
    /// for it. A temp dir under root's 0700 home is the case this catches.
    pub(crate) fn can_reach(&self, dir: &Path) -> bool {
        let ServerUser::Switched { uid, gid, .. } = self else {
            return true;
        };
        dir.ancestors().all(|step| match std::fs::metadata(step) {
            Ok(meta) => {
                let mode = meta.mode();
                // std drops supplementary groups when it switches, so only the primary
                // group counts.
                (meta.uid() == *uid && mode & 0o100 != 0)
                    || (meta.gid() == *gid && mode & 0o010 != 0)
                    || mode & 0o001 != 0
            }
            Err(_) => false,
        })
    }

    /// For messages: the user the server runs as.
    pub(crate) fn describe(&self) -> String {
        match self {
            ServerUser::Current => "the current user".to_string(),
            ServerUser::Switched { name, .. } => format!("user `{name}`"),
        }
    }
}

/// The variables libpq and the server programs read as defaults (PGDATA, PGPORT, PGOPTIONS, ...).
fn steering_variables(keys: impl Iterator<Item = OsString>) -> Vec<OsString> {
    keys.filter(|key| key.to_string_lossy().starts_with("PG"))
        .collect()
}

/// The uid and primary gid of `name`, through NSS like `id` does.
fn lookup_account(name: &str) -> Option<(u32, u32)> {
    let name = CString::new(name).ok()?;
    let mut buffer_len = 4096usize;
    loop {
        let mut buffer = vec![0 as libc::c_char; buffer_len];
        // SAFETY: passwd is plain data; getpwnam_r writes into it and into `buffer`, both alive
        // and of the sizes given, and we only read the integer fields afterwards.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc = unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                &mut entry,
                buffer.as_mut_ptr(),
                buffer.len(),
                &mut found,
            )
        };
        if rc == libc::ERANGE && buffer_len < 1 << 20 {
            buffer_len *= 4;
            continue;
        }
        if rc != 0 || found.is_null() {
            return None;
        }
        return Some((entry.pw_uid, entry.pw_gid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_account_is_not_found() {
        assert_eq!(lookup_account("runledger-no-such-user-here"), None);
    }

    #[test]
    fn the_root_account_is_uid_zero() {
        assert_eq!(lookup_account("root").map(|(uid, _)| uid), Some(0));
    }

    #[test]
    fn a_directory_under_a_private_parent_is_unreachable_for_another_user() {
        use std::os::unix::fs::PermissionsExt;
        let parent = std::env::temp_dir().join(format!("runledger-reach-{}", std::process::id()));
        let child = parent.join("inner");
        std::fs::create_dir_all(&child).expect("create dirs");
        std::fs::set_permissions(&child, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let stranger = ServerUser::Switched {
            name: "stranger".to_string(),
            uid: 54321,
            gid: 54321,
        };
        let private = stranger.can_reach(&child);
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o711)).expect("chmod");
        let opened = stranger.can_reach(&child);
        let _ = std::fs::remove_dir_all(&parent);
        assert!(!private, "0700 parent must block");
        assert!(opened, "0711 parent must let through");
    }

    #[test]
    fn pg_variables_are_the_ones_removed_from_commands() {
        let keys = ["PATH", "PGDATA", "HOME", "PGOPTIONS", "APG"].map(OsString::from);
        let removed = steering_variables(keys.into_iter());
        assert_eq!(removed, ["PGDATA", "PGOPTIONS"].map(OsString::from));
    }

    #[test]
    fn commands_print_english_messages() {
        let cmd = ServerUser::Current.command(Path::new("/bin/true"), Path::new("/"));
        let lc_all = cmd.get_envs().find(|(key, _)| *key == "LC_ALL");
        assert_eq!(
            lc_all,
            Some((
                std::ffi::OsStr::new("LC_ALL"),
                Some(std::ffi::OsStr::new("C"))
            ))
        );
    }
}
