//! Getting a cluster in a test: one per process, or one per test, or a loud skip.
//!
//! A machine without PostgreSQL skips the tests that need it, saying so on stderr, so that a
//! developer without the package can still run the rest. CI must never skip silently: with
//! `CI=true` a missing PostgreSQL fails the test instead. A broken installation (initdb fails,
//! the server does not start) is a failure everywhere.

use std::io::Write;
use std::sync::OnceLock;

use super::cluster::Cluster;
use super::error::Error;

static SHARED: OnceLock<Result<Cluster, Error>> = OnceLock::new();

/// The process-wide cluster, started by the first call; later calls (from any thread) get the
/// same one. Give each test its own database with [`Cluster::create_database`].
///
/// It is never dropped (it lives in a static); its guard process stops it and removes its
/// directory when the test binary exits.
pub fn shared() -> Result<&'static Cluster, Error> {
    SHARED
        .get_or_init(Cluster::start)
        .as_ref()
        .map_err(Clone::clone)
}

/// [`Cluster::start`] for a test that needs a cluster of its own (to stop, kill or restart it).
/// `None` means "return now": PostgreSQL is not installed and this is not CI.
///
/// # Panics
/// When PostgreSQL is not installed and `CI=true`, or when it is installed but fails.
pub fn cluster_or_skip(test_name: &str) -> Option<Cluster> {
    skip_unless_ci(
        test_name,
        Cluster::start(),
        running_in_ci(),
        &mut std::io::stderr(),
    )
}

/// [`shared`] with the same skip rule as [`cluster_or_skip`].
///
/// # Panics
/// As [`cluster_or_skip`].
pub fn shared_or_skip(test_name: &str) -> Option<&'static Cluster> {
    skip_unless_ci(test_name, shared(), running_in_ci(), &mut std::io::stderr())
}

fn running_in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true")
}

/// The rule itself, with CI and the notice's destination passed in so that it can be tested
/// without touching the environment.
///
/// The notice goes to the stderr handle itself, not through eprintln!: libtest captures
/// eprintln! of passing tests, and a skip nobody sees is a skip nobody fixes.
fn skip_unless_ci<T>(
    test_name: &str,
    outcome: Result<T, Error>,
    in_ci: bool,
    notice: &mut dyn Write,
) -> Option<T> {
    match outcome {
        Ok(cluster) => Some(cluster),
        Err(error @ Error::Unavailable { .. }) if !in_ci => {
            let _ = writeln!(notice, "SKIPPED: {test_name}: {error}");
            None
        }
        Err(error @ Error::Unavailable { .. }) => {
            panic!("{test_name}: CI=true, so PostgreSQL must be available: {error}")
        }
        Err(error) => panic!("{test_name}: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable() -> Result<(), Error> {
        Err(Error::Unavailable {
            missing: "initdb is not on PATH".to_string(),
        })
    }

    #[test]
    fn a_missing_postgres_is_skipped_outside_ci_with_a_line_naming_the_test() {
        let mut notice = Vec::new();
        assert_eq!(
            skip_unless_ci("some_test", unavailable(), false, &mut notice),
            None
        );
        let notice = String::from_utf8(notice).expect("utf8");
        assert!(
            notice.starts_with(
                "SKIPPED: some_test: PostgreSQL is not installed (initdb is not on PATH)"
            ),
            "{notice}"
        );
        assert!(notice.contains("apt-get install -y postgresql"), "{notice}");
    }

    #[test]
    #[should_panic(expected = "CI=true, so PostgreSQL must be available")]
    fn a_missing_postgres_fails_the_test_in_ci() {
        skip_unless_ci("some_test", unavailable(), true, &mut Vec::new());
    }

    #[test]
    #[should_panic(expected = "initdb failed")]
    fn a_broken_installation_fails_even_outside_ci() {
        skip_unless_ci::<()>(
            "some_test",
            Err(Error::failed("initdb", "exited with exit status: 1")),
            false,
            &mut Vec::new(),
        );
    }

    #[test]
    fn an_available_cluster_is_handed_through() {
        assert_eq!(
            skip_unless_ci("some_test", Ok(7), true, &mut Vec::new()),
            Some(7)
        );
    }
}
