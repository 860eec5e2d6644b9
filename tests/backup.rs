//! Online backup: `runledger backup --to DIR` (the real CLI binary) against a running server
//! under concurrent writes gives a copy that passes `runledger check`, holds every write
//! acknowledged before the backup started and is one point in time; a server restored from it
//! serves it and takes writes; every way to get it wrong has its status code.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::process;
use common::{Config, TestServer, create_experiment, expect_code, new_run};
use runledger::admin_api::BackupRequest;
use runledger::admin_api::admin_client::AdminClient;
use runledger::api::*;
use runledger::auth::{Auth, AuthConfig, hash_token};
use runledger::server::ServerOptions;
use tonic::Code;

const PATIENCE: Duration = Duration::from_secs(120);

/// Runs the CLI against `server` (off the async threads).
async fn cli(server: &TestServer, args: &[&str]) -> std::process::Output {
    let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    all.extend(["--server".to_owned(), server.url()]);
    tokio::task::spawn_blocking(move || {
        let args: Vec<&std::ffi::OsStr> = all.iter().map(|a| a.as_ref()).collect();
        process::runledger(&args, None)
    })
    .await
    .unwrap()
}

fn run_in(id: &str, experiment_id: &str) -> CreateRunRequest {
    let mut run = new_run(id);
    run.run_id = id.to_owned();
    run.experiment_id = experiment_id.to_owned();
    CreateRunRequest {
        run: Some(run),
        ..Default::default()
    }
}

/// `request` with an inline pipeline spec named `name` (equal names: equal specs, stored once).
fn with_spec(mut request: CreateRunRequest, name: &str) -> CreateRunRequest {
    let spec: pbjson_types::Struct = serde_json::from_value(serde_json::json!({
        "pipelineInfo": {"name": name},
        "root": {"dag": {"tasks": {"train": {}}}}
    }))
    .unwrap();
    if let Some(run) = request.run.as_mut() {
        run.pipeline_source = Some(run::PipelineSource::PipelineSpec(spec.into()));
    }
    request
}

fn report(run_id: &str, state: RuntimeState) -> ReportRunStateRequest {
    ReportRunStateRequest {
        run_id: run_id.to_owned(),
        state: state as i32,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_backup_under_writes_is_checked_holds_every_earlier_write_and_is_one_point_in_time() {
    let server = TestServer::start().await;
    let mut experiments = server.experiments().await;
    let bulk = create_experiment(&mut experiments, "bulk", "").await;
    let series = create_experiment(&mut experiments, "series", "").await;
    let churn = create_experiment(&mut experiments, "churn", "").await;
    // Some data, so that the copy takes a while.
    let mut loaders = Vec::new();
    for l in 0..8 {
        let mut runs = server.runs().await;
        let bulk = bulk.experiment_id.clone();
        loaders.push(tokio::spawn(async move {
            for i in 0..60 {
                runs.create_run(run_in(&format!("bulk-{l}-{i}"), &bulk))
                    .await
                    .unwrap();
            }
        }));
    }
    for loader in loaders {
        loader.await.unwrap();
    }

    // One writer creates s-0, s-1, ... one after the other, all with one pipeline spec (its use
    // count changes with each); another moves a run between RUNNING and PAUSED (state indexes and
    // counters); a third creates and deletes runs, each with a spec of its own (a spec blob
    // stored, then removed). The backup must catch all of it at one instant.
    let stop = Arc::new(AtomicBool::new(false));
    let created = Arc::new(Mutex::new(Vec::<usize>::new()));
    let mut runs = server.runs().await;
    common::create_run(&mut runs, {
        let mut run = new_run("toggled");
        run.run_id = "toggled".into();
        run
    })
    .await;
    runs.report_run_state(report("toggled", RuntimeState::Running))
        .await
        .unwrap();
    let creator = tokio::spawn({
        let (stop, created, mut runs) = (stop.clone(), created.clone(), server.runs().await);
        let series = series.experiment_id.clone();
        async move {
            let mut i = 0;
            while !stop.load(Ordering::Acquire) {
                runs.create_run(with_spec(run_in(&format!("s-{i}"), &series), "series"))
                    .await
                    .unwrap();
                created.lock().unwrap().push(i);
                i += 1;
            }
        }
    });
    let toggler = tokio::spawn({
        let (stop, mut runs) = (stop.clone(), server.runs().await);
        async move {
            let mut paused = false;
            while !stop.load(Ordering::Acquire) {
                let next = if paused {
                    RuntimeState::Running
                } else {
                    RuntimeState::Paused
                };
                runs.report_run_state(report("toggled", next))
                    .await
                    .unwrap();
                paused = !paused;
            }
        }
    });
    let churner = tokio::spawn({
        let (stop, mut runs) = (stop.clone(), server.runs().await);
        let churn = churn.experiment_id.clone();
        async move {
            let mut i = 0;
            while !stop.load(Ordering::Acquire) {
                let id = format!("c-{i}");
                runs.create_run(with_spec(run_in(&id, &churn), &id))
                    .await
                    .unwrap();
                runs.delete_run(DeleteRunRequest {
                    run_id: id,
                    ..Default::default()
                })
                .await
                .unwrap();
                i += 1;
            }
        }
    });
    while created.lock().unwrap().len() < 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("backup");
    let acknowledged_before = created.lock().unwrap().len();
    let out = tokio::time::timeout(
        PATIENCE,
        cli(&server, &["backup", "--to", dir.to_str().unwrap()]),
    )
    .await
    .expect("the backup finished");
    stop.store(true, Ordering::Release);
    creator.await.unwrap();
    toggler.await.unwrap();
    churner.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("backed up"), "{stdout}");
    assert!(stdout.contains(dir.to_str().unwrap()), "{stdout}");

    let (consistent, check) = process::check(&dir);
    assert!(consistent, "{check}");

    // Restore: a server on the backup serves it.
    let restored = TestServer::start_at(&dir, Config::default()).await;
    let mut runs = restored.runs().await;
    let series_ids: Vec<usize> = common::list_all(
        &mut runs,
        ListRunsRequest {
            experiment_id: series.experiment_id.clone(),
            ..Default::default()
        },
    )
    .await
    .iter()
    .map(|r| r.run_id.trim_start_matches("s-").parse().unwrap())
    .collect();
    let mut sorted = series_ids.clone();
    sorted.sort_unstable();
    // One point in time: the sequential writer's runs up to some point, none missing, none later.
    assert_eq!(sorted, (0..sorted.len()).collect::<Vec<_>>(), "a gap");
    assert!(
        sorted.len() >= acknowledged_before,
        "{} runs acknowledged before the backup began, {} in it",
        acknowledged_before,
        sorted.len()
    );
    assert!(sorted.len() <= created.lock().unwrap().len() + 1);
    let bulk_count = common::list_all(
        &mut runs,
        ListRunsRequest {
            experiment_id: bulk.experiment_id.clone(),
            ..Default::default()
        },
    )
    .await
    .len();
    assert_eq!(bulk_count, 8 * 60);
    let toggled = runs
        .get_run(GetRunRequest {
            run_id: "toggled".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        [RuntimeState::Running as i32, RuntimeState::Paused as i32].contains(&toggled.state),
        "{toggled:?}"
    );
    let series_spec = runs
        .get_run(GetRunRequest {
            run_id: "s-0".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .pipeline_source;
    assert!(
        matches!(series_spec, Some(run::PipelineSource::PipelineSpec(_))),
        "{series_spec:?}"
    );
    // At most the one churn run that existed at the backup's instant.
    let churned = common::list_all(
        &mut runs,
        ListRunsRequest {
            experiment_id: churn.experiment_id.clone(),
            ..Default::default()
        },
    )
    .await
    .len();
    assert!(churned <= 1, "{churned} churn runs in the backup");
    assert!(
        stdout.contains(&format!(
            "backed up {} runs",
            sorted.len() + bulk_count + 1 + churned
        )),
        "{stdout}"
    );
    // The restored server takes writes.
    common::create_run(&mut runs, new_run("after restore")).await;
    restored.stop().await;
    server.stop().await;
}

async fn admin(server: &TestServer) -> AdminClient<tonic::transport::Channel> {
    AdminClient::new(server.channel().await)
}

/// Starts a backup and reads it to the end: Ok(last message) or the status it failed with.
async fn backup(
    client: &mut AdminClient<tonic::transport::Channel>,
    to: &str,
) -> Result<runledger::admin_api::BackupProgress, tonic::Status> {
    let mut stream = client
        .backup(BackupRequest { to: to.to_owned() })
        .await?
        .into_inner();
    let mut last = None;
    while let Some(message) = stream.message().await? {
        last = Some(message);
    }
    Ok(last.expect("at least one message"))
}

fn code_of(result: Result<runledger::admin_api::BackupProgress, tonic::Status>) -> (Code, String) {
    let status = result.expect_err("the backup must fail");
    (status.code(), status.message().to_owned())
}

#[tokio::test]
async fn a_backup_to_a_bad_directory_has_a_clear_code_and_writes_nothing() {
    let server = TestServer::start().await;
    common::create_run(&mut server.runs().await, new_run("one")).await;
    let mut client = admin(&server).await;
    let root = tempfile::tempdir().unwrap();

    let full = root.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("keep.txt"), b"mine").unwrap();
    let (code, message) = code_of(backup(&mut client, full.to_str().unwrap()).await);
    assert_eq!(code, Code::FailedPrecondition, "{message}");
    assert!(message.contains("exists and is not empty"), "{message}");
    assert_eq!(std::fs::read(full.join("keep.txt")).unwrap(), b"mine");
    assert_eq!(std::fs::read_dir(&full).unwrap().count(), 1);

    let file = root.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let (code, message) = code_of(backup(&mut client, file.to_str().unwrap()).await);
    assert_eq!(code, Code::FailedPrecondition, "{message}");
    assert!(message.contains("not a directory"), "{message}");

    let (code, message) = code_of(backup(&mut client, "relative/dir").await);
    assert_eq!(code, Code::InvalidArgument, "{message}");
    assert!(message.contains("absolute"), "{message}");

    let (code, message) = code_of(
        backup(
            &mut client,
            server.data_dir().join("copy").to_str().unwrap(),
        )
        .await,
    );
    assert_eq!(code, Code::FailedPrecondition, "{message}");
    assert!(message.contains("inside the data directory"), "{message}");
    assert!(!server.data_dir().join("copy").exists());

    // The CLI says the same and exits 1.
    let out = cli(&server, &["backup", "--to", full.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("runledger: FAILED_PRECONDITION: the backup directory"),
        "{stderr}"
    );

    // After all that, a good backup still works.
    let good = root.path().join("good");
    let last = backup(&mut client, good.to_str().unwrap()).await.unwrap();
    assert!(last.done);
    assert_eq!(last.runs, 1);
    server.stop().await;
}

/// A directory the server cannot write to. As root (CI), permission bits do not stop anything,
/// so a read-only tmpfs is mounted instead; None (after saying so) where that is not allowed.
fn unwritable(root: &Path) -> Option<(std::path::PathBuf, Option<std::path::PathBuf>)> {
    let dir = root.join("locked");
    std::fs::create_dir(&dir).unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o500)).unwrap();
        return Some((dir.join("backup"), None));
    }
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
        .arg(&dir)
        .output();
    match mounted {
        Ok(out) if out.status.success() => Some((dir.join("backup"), Some(dir))),
        other => {
            common::skip_unless_ci(
                "a_backup_where_the_server_may_not_write",
                &format!("cannot mount a read-only tmpfs as root ({other:?})"),
            );
            None
        }
    }
}

#[tokio::test]
async fn a_backup_where_the_server_may_not_write_is_failed_precondition() {
    let root = tempfile::tempdir().unwrap();
    let Some((target, mount)) = unwritable(root.path()) else {
        return;
    };
    let server = TestServer::start().await;
    let mut client = admin(&server).await;
    let (code, message) = code_of(backup(&mut client, target.to_str().unwrap()).await);
    if let Some(mount) = mount {
        let _ = std::process::Command::new("umount").arg(&mount).status();
    }
    assert_eq!(code, Code::FailedPrecondition, "{message}");
    assert!(
        message.contains("cannot create the backup directory")
            && (message.contains("Permission denied") || message.contains("Read-only")),
        "{message}"
    );
    server.stop().await;
}

const ADMIN: &str = "admin-token";
const EDITOR: &str = "editor-token";
const TEAM_ADMIN: &str = "team-admin-token";

#[tokio::test]
async fn only_an_admin_of_every_namespace_may_back_up() {
    let text = format!(
        r#"
[[principals]]
name = "root"
token_sha256 = "{}"
[[principals]]
name = "ed"
token_sha256 = "{}"
[[principals]]
name = "lead"
token_sha256 = "{}"
[[grants]]
who = "root"
namespace = "*"
role = "admin"
[[grants]]
who = "ed"
namespace = "*"
role = "editor"
[[grants]]
who = "lead"
namespace = "team"
role = "admin"
"#,
        hash_token(ADMIN),
        hash_token(EDITOR),
        hash_token(TEAM_ADMIN)
    );
    let auth = Auth::from_config(AuthConfig::parse(&text).unwrap());
    let server = TestServer::start_with(Config {
        server: ServerOptions {
            auth: Some(Arc::new(auth)),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let root = tempfile::tempdir().unwrap();
    let to = |name: &str| root.path().join(name).to_str().unwrap().to_owned();
    let with_token = |to: String, token: Option<&str>| {
        let mut request = tonic::Request::new(BackupRequest { to });
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        request
    };
    let mut client = admin(&server).await;
    for (token, code) in [
        (None, Code::Unauthenticated),
        (Some(EDITOR), Code::PermissionDenied),
        (Some(TEAM_ADMIN), Code::PermissionDenied),
    ] {
        let message = expect_code(
            client
                .backup(with_token(to("denied"), token))
                .await
                .map(|response| response.map(|_| ())),
            code,
        );
        assert!(!root.path().join("denied").exists(), "{token:?}: {message}");
        if code == Code::PermissionDenied {
            assert!(
                message.contains(r#"admin role on namespace "*""#),
                "{message}"
            );
        }
    }
    let mut stream = client
        .backup(with_token(to("allowed"), Some(ADMIN)))
        .await
        .expect("an admin of every namespace may back up")
        .into_inner();
    let mut done = false;
    while let Some(message) = stream.message().await.unwrap() {
        done = message.done;
    }
    assert!(done);
    let (consistent, check) = process::check(&root.path().join("allowed"));
    assert!(consistent, "{check}");
    server.stop().await;
}

#[tokio::test]
async fn a_server_on_postgresql_points_at_the_database_backup_tools() {
    let Some(location) = common::database_location("backup_on_postgresql").await else {
        return;
    };
    let server = TestServer::start_at_location(location).await;
    common::create_run(&mut server.runs().await, new_run("one")).await;
    let root = tempfile::tempdir().unwrap();
    let to = root.path().join("copy");
    let (code, message) = code_of(backup(&mut admin(&server).await, to.to_str().unwrap()).await);
    assert_eq!(code, Code::FailedPrecondition, "{message}");
    assert!(message.contains("pg_dump"), "{message}");
    assert!(message.contains("runledger export"), "{message}");
    assert!(message.contains("PostgreSQL"), "{message}");
    assert!(!to.exists());
    let out = cli(&server, &["backup", "--to", to.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pg_dump"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop().await;
}
