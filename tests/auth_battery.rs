//! Authentication and per-namespace authorization against a real server with an auth config:
//! every RPC with no credentials, a bad token, a forged trusted header from a non-proxy address,
//! a viewer of another namespace, an executor trying to change what it may not, page tokens and
//! watches of another namespace. Each gets its documented code, and the store, read back
//! afterwards, is unchanged.

mod common;

use std::sync::Arc;

use common::{Config, TestServer, new_run};
use runledger::api::*;
use runledger::auth::{Auth, AuthConfig, hash_token};
use runledger::server::ServerOptions;
use tonic::{Code, Request};

const ADMIN: &str = "admin-token";
const VIEWER_B: &str = "viewer-b-token";
const EXEC_A: &str = "exec-a-token";

fn config(trusted_from: &str) -> AuthConfig {
    let text = format!(
        r#"
[[principals]]
name = "root"
token_sha256 = "{}"
[[principals]]
name = "bob"
token_sha256 = "{}"
groups = ["b-team"]
[[principals]]
name = "runner"
token_sha256 = "{}"
[trusted_header]
name = "x-user"
from = ["{trusted_from}"]
[[grants]]
who = "root"
namespace = "*"
role = "admin"
[[grants]]
who = "group:b-team"
namespace = "team-b"
role = "viewer"
[[grants]]
who = "runner"
namespace = "team-a"
role = "executor"
"#,
        hash_token(ADMIN),
        hash_token(VIEWER_B),
        hash_token(EXEC_A)
    );
    AuthConfig::parse(&text).expect("config")
}

async fn start(trusted_from: &str) -> TestServer {
    TestServer::start_with(Config {
        server: ServerOptions {
            auth: Some(Arc::new(Auth::from_config(config(trusted_from)))),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
}

/// How a call is made.
#[derive(Debug, Clone, Copy)]
enum Who {
    Nobody,
    BadToken,
    Forged,
    Token(&'static str),
}

fn req<T>(who: Who, message: T) -> Request<T> {
    let mut request = Request::new(message);
    let md = request.metadata_mut();
    match who {
        Who::Nobody => {}
        Who::BadToken => {
            md.insert("authorization", "Bearer not-a-token".parse().unwrap());
        }
        Who::Forged => {
            md.insert("x-user", "root".parse().unwrap());
        }
        Who::Token(t) => {
            md.insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
    }
    request
}

struct World {
    experiment: Experiment,
    run: Run,
}

async fn setup(server: &TestServer) -> World {
    let mut experiments = server.experiments().await;
    let experiment = experiments
        .create_experiment(req(
            Who::Token(ADMIN),
            CreateExperimentRequest {
                experiment: Some(Experiment {
                    display_name: "a-exp".into(),
                    namespace: "team-a".into(),
                    ..Default::default()
                }),
            },
        ))
        .await
        .expect("admin creates")
        .into_inner();
    let mut runs = server.runs().await;
    let run = runs
        .create_run(req(
            Who::Token(ADMIN),
            CreateRunRequest {
                run: Some(Run {
                    experiment_id: experiment.experiment_id.clone(),
                    ..new_run("a-run")
                }),
                ..Default::default()
            },
        ))
        .await
        .expect("admin creates run")
        .into_inner();
    for i in 0..2 {
        runs.create_run(req(
            Who::Token(ADMIN),
            CreateRunRequest {
                run: Some(Run {
                    namespace: "team-b".into(),
                    ..new_run(&format!("b-run-{i}"))
                }),
                ..Default::default()
            },
        ))
        .await
        .expect("admin creates b run");
    }
    World { experiment, run }
}

/// What an admin sees: every run and experiment.
async fn snapshot(server: &TestServer) -> (Vec<Run>, Vec<Experiment>) {
    let mut runs = server.runs().await;
    let mut all = runs
        .list_runs(req(
            Who::Token(ADMIN),
            ListRunsRequest {
                page_size: 100,
                ..Default::default()
            },
        ))
        .await
        .expect("admin lists")
        .into_inner()
        .runs;
    all.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    let mut experiments = server.experiments().await;
    let mut exps = experiments
        .list_experiments(req(
            Who::Token(ADMIN),
            ListExperimentsRequest {
                page_size: 100,
                ..Default::default()
            },
        ))
        .await
        .expect("admin lists experiments")
        .into_inner()
        .experiments;
    exps.sort_by(|a, b| a.experiment_id.cmp(&b.experiment_id));
    (all, exps)
}

fn ok<T>(_: T) -> Code {
    Code::Ok
}

/// Makes every RPC as `who` on team-a's run and experiment; returns (rpc, code) per call.
async fn every_rpc(server: &TestServer, world: &World, who: Who) -> Vec<(&'static str, Code)> {
    let mut runs = server.runs().await;
    let mut exps = server.experiments().await;
    let run_id = world.run.run_id.clone();
    let exp_id = world.experiment.experiment_id.clone();
    let code = |r: Result<Code, tonic::Status>| match r {
        Ok(c) => c,
        Err(s) => s.code(),
    };
    let mut out = Vec::new();
    out.push((
        "CreateRun(experiment)",
        code(
            runs.create_run(req(
                who,
                CreateRunRequest {
                    run: Some(Run {
                        experiment_id: exp_id.clone(),
                        ..new_run("intruder")
                    }),
                    ..Default::default()
                },
            ))
            .await
            .map(ok),
        ),
    ));
    out.push((
        "CreateRun(namespace)",
        code(
            runs.create_run(req(
                who,
                CreateRunRequest {
                    run: Some(Run {
                        namespace: "team-a".into(),
                        ..new_run("intruder")
                    }),
                    ..Default::default()
                },
            ))
            .await
            .map(ok),
        ),
    ));
    let id = || run_id.clone();
    out.push((
        "GetRun",
        code(
            runs.get_run(req(
                who,
                GetRunRequest {
                    run_id: id(),
                    ..Default::default()
                },
            ))
            .await
            .map(ok),
        ),
    ));
    out.push((
        "ListRuns(namespace)",
        code(
            runs.list_runs(req(
                who,
                ListRunsRequest {
                    namespace: "team-a".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(ok),
        ),
    ));
    out.push((
        "ListRuns(experiment)",
        code(
            runs.list_runs(req(
                who,
                ListRunsRequest {
                    experiment_id: exp_id.clone(),
                    ..Default::default()
                },
            ))
            .await
            .map(ok),
        ),
    ));
    out.push((
        "ListRuns(all)",
        code(
            runs.list_runs(req(who, ListRunsRequest::default()))
                .await
                .map(ok),
        ),
    ));
    out.push((
        "ArchiveRun",
        code(
            runs.archive_run(req(
                who,
                ArchiveRunRequest {
                    run_id: id(),
                    ..Default::default()
                },
            ))
            .await
            .map(ok),
        ),
    ));
    out.push((
        "UnarchiveRun",
        code(
            runs.unarchive_run(req(
                who,
                UnarchiveRunRequest {
                    run_id: id(),
                    ..Default::default()
                },
            ))
            .await
            .map(ok),
        ),
    ));
    out.push((
        "TerminateRun",
        code(
            runs.terminate_run(req(
                who,
                TerminateRunRequest {
                    run_id: id(),
                    ..Default::default()
                },
            ))
            .await
            .map(ok),
        ),
    ));
    out.push((
        "RetryRun",
        code(
            runs.retry_run(req(
                who,
                RetryRunRequest {
                    run_id: id(),
                    ..Default::default()
                },
            ))
            .await
            .map(ok),
        ),
    ));
    out.push((
        "DeleteRun",
        code(
            runs.delete_run(req(
                who,
                DeleteRunRequest {
                    run_id: id(),
                    ..Default::default()
                },
            ))
            .await
            .map(ok),
        ),
    ));
    out.push((
        "WatchRuns(run)",
        code(
            runs.watch_runs(req(
                who,
                WatchRunsRequest {
                    run_id: id(),
                    ..Default::default()
                },
            ))
            .await
            .map(ok),
        ),
    ));
    out.push((
        "WatchRuns(namespace)",
        code(
            runs.watch_runs(req(
                who,
                WatchRunsRequest {
                    namespace: "team-a".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(ok),
        ),
    ));
    out.push((
        "WatchRuns(all)",
        code(
            runs.watch_runs(req(who, WatchRunsRequest::default()))
                .await
                .map(ok),
        ),
    ));
    out.push((
        "CreateExperiment",
        code(
            exps.create_experiment(req(
                who,
                CreateExperimentRequest {
                    experiment: Some(Experiment {
                        display_name: "x".into(),
                        namespace: "team-a".into(),
                        ..Default::default()
                    }),
                },
            ))
            .await
            .map(ok),
        ),
    ));
    out.push((
        "GetExperiment",
        code(
            exps.get_experiment(req(
                who,
                GetExperimentRequest {
                    experiment_id: exp_id.clone(),
                },
            ))
            .await
            .map(ok),
        ),
    ));
    out.push((
        "ListExperiments(namespace)",
        code(
            exps.list_experiments(req(
                who,
                ListExperimentsRequest {
                    namespace: "team-a".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(ok),
        ),
    ));
    out.push((
        "ListExperiments(all)",
        code(
            exps.list_experiments(req(who, ListExperimentsRequest::default()))
                .await
                .map(ok),
        ),
    ));
    out.push((
        "ArchiveExperiment",
        code(
            exps.archive_experiment(req(
                who,
                ArchiveExperimentRequest {
                    experiment_id: exp_id.clone(),
                },
            ))
            .await
            .map(ok),
        ),
    ));
    out.push((
        "UnarchiveExperiment",
        code(
            exps.unarchive_experiment(req(
                who,
                UnarchiveExperimentRequest {
                    experiment_id: exp_id.clone(),
                },
            ))
            .await
            .map(ok),
        ),
    ));
    out.push((
        "DeleteExperiment",
        code(
            exps.delete_experiment(req(
                who,
                DeleteExperimentRequest {
                    experiment_id: exp_id.clone(),
                },
            ))
            .await
            .map(ok),
        ),
    ));
    // The state report comes last for the executor, who may make it.
    out.push((
        "ReportRunState",
        code(
            runs.report_run_state(req(
                who,
                ReportRunStateRequest {
                    run_id: id(),
                    state: RuntimeState::Running as i32,
                    ..Default::default()
                },
            ))
            .await
            .map(ok),
        ),
    ));
    out
}

#[tokio::test]
async fn callers_without_valid_credentials_get_unauthenticated_on_every_rpc_and_change_nothing() {
    let server = start("10.0.0.0/8").await;
    let world = setup(&server).await;
    let before = snapshot(&server).await;
    for who in [Who::Nobody, Who::BadToken, Who::Forged] {
        for (rpc, code) in every_rpc(&server, &world, who).await {
            assert_eq!(code, Code::Unauthenticated, "{who:?} {rpc}");
        }
    }
    assert_eq!(snapshot(&server).await, before);
}

#[tokio::test]
async fn a_viewer_of_another_namespace_sees_nothing_and_changes_nothing() {
    let server = start("10.0.0.0/8").await;
    let world = setup(&server).await;
    let before = snapshot(&server).await;
    for (rpc, code) in every_rpc(&server, &world, Who::Token(VIEWER_B)).await {
        let expected = if rpc.ends_with("(namespace)")
            || rpc.ends_with("(all)")
            || rpc == "CreateExperiment"
        {
            Code::PermissionDenied
        } else {
            Code::NotFound
        };
        assert_eq!(code, expected, "{rpc}");
    }
    assert_eq!(snapshot(&server).await, before);

    // Not found says exactly what a missing run says.
    let mut runs = server.runs().await;
    let hidden = runs
        .get_run(req(
            Who::Token(VIEWER_B),
            GetRunRequest {
                run_id: world.run.run_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    let missing = runs
        .get_run(req(
            Who::Token(VIEWER_B),
            GetRunRequest {
                run_id: "no-such-run".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        hidden.message(),
        missing.message().replace("no-such-run", &world.run.run_id)
    );
}

#[tokio::test]
async fn an_executor_may_report_state_but_not_delete_or_edit() {
    let server = start("10.0.0.0/8").await;
    let world = setup(&server).await;
    let before = snapshot(&server).await;
    let results = every_rpc(&server, &world, Who::Token(EXEC_A)).await;
    for (rpc, code) in &results {
        let expected = match *rpc {
            "GetRun"
            | "ListRuns(namespace)"
            | "ListRuns(experiment)"
            | "WatchRuns(run)"
            | "WatchRuns(namespace)"
            | "GetExperiment"
            | "ListExperiments(namespace)"
            | "ReportRunState" => Code::Ok,
            _ => Code::PermissionDenied,
        };
        assert_eq!(*code, expected, "{rpc}");
    }
    // Only the report changed anything: the run is RUNNING, all else as before.
    let (runs_after, exps_after) = snapshot(&server).await;
    assert_eq!(exps_after, before.1);
    for (a, b) in runs_after.iter().zip(&before.0) {
        if a.run_id == world.run.run_id {
            assert_eq!(a.state, RuntimeState::Running as i32);
        } else {
            assert_eq!(a, b);
        }
    }
    let mut runs = server.runs().await;
    let denied = runs
        .delete_run(req(
            Who::Token(EXEC_A),
            DeleteRunRequest {
                run_id: world.run.run_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert!(
        denied.message().contains("DeleteRun") && denied.message().contains("team-a"),
        "{}",
        denied.message()
    );
}

#[tokio::test]
async fn page_tokens_stay_inside_the_namespace_they_were_issued_for() {
    let server = start("10.0.0.0/8").await;
    setup(&server).await;
    let mut runs = server.runs().await;
    let page = runs
        .list_runs(req(
            Who::Token(ADMIN),
            ListRunsRequest {
                namespace: "team-b".into(),
                page_size: 1,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!page.next_page_token.is_empty());
    // A team-a executor replaying team-b's token: its own namespace refuses a foreign token...
    let err = runs
        .list_runs(req(
            Who::Token(EXEC_A),
            ListRunsRequest {
                namespace: "team-a".into(),
                page_token: page.next_page_token.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    // ...team-b is not its to read, and unscoped needs a "*" grant.
    let err = runs
        .list_runs(req(
            Who::Token(EXEC_A),
            ListRunsRequest {
                namespace: "team-b".into(),
                page_token: page.next_page_token.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = runs
        .list_runs(req(
            Who::Token(EXEC_A),
            ListRunsRequest {
                page_token: page.next_page_token,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("pass a namespace"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn over_http_credentials_are_401_with_a_challenge_and_denials_are_403_and_404() {
    let server = start("10.0.0.0/8").await;
    let world = setup(&server).await;
    let client = reqwest::Client::new();
    let url = format!(
        "{}/apis/v2beta1/runs/{}",
        server.http_url(),
        world.run.run_id
    );
    let none = client.get(&url).send().await.unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    let bad = client.get(&url).bearer_auth("nope").send().await.unwrap();
    assert_eq!(bad.status(), 401);
    let forged = client
        .get(&url)
        .header("x-user", "root")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let hidden = client.get(&url).bearer_auth(VIEWER_B).send().await.unwrap();
    assert_eq!(hidden.status(), 404);
    let denied = client
        .delete(&url)
        .bearer_auth(EXEC_A)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let read = client.get(&url).bearer_auth(EXEC_A).send().await.unwrap();
    assert_eq!(read.status(), 200);
    // The same on the gRPC port's JSON routes.
    let on_grpc_port = format!("{}/apis/v2beta1/runs/{}", server.url(), world.run.run_id);
    assert_eq!(
        client.get(&on_grpc_port).send().await.unwrap().status(),
        401
    );
    let watch = format!(
        "{}/apis/v2beta1/runs:watch?namespace=team-a",
        server.http_url()
    );
    assert_eq!(
        client
            .get(&watch)
            .bearer_auth(VIEWER_B)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    // Health and the UI stay open; healthz says multi-user.
    let health: serde_json::Value = client
        .get(format!("{}/apis/v2beta1/healthz", server.http_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["multi_user"], true);
    assert_eq!(
        client
            .get(format!("{}/", server.http_url()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("gRPC health is open");
}

#[tokio::test]
async fn the_trusted_header_names_the_principal_from_a_proxy_address() {
    let server = start("127.0.0.1/32").await;
    let world = setup(&server).await;
    let mut runs = server.runs().await;
    let got = runs
        .get_run(req(
            Who::Forged,
            GetRunRequest {
                run_id: world.run.run_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("the header is honoured from 127.0.0.1");
    assert_eq!(got.into_inner().run_id, world.run.run_id);
    let client = reqwest::Client::new();
    let url = format!(
        "{}/apis/v2beta1/runs/{}",
        server.http_url(),
        world.run.run_id
    );
    assert_eq!(
        client
            .get(&url)
            .header("x-user", "root")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client
            .get(&url)
            .header("x-user", "bob")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn metrics_name_every_namespace_so_they_need_a_grant_on_all_of_them() {
    let server = start("10.0.0.0/8").await;
    setup(&server).await;
    let client = reqwest::Client::new();
    for base in [server.http_url(), server.url()] {
        let url = format!("{base}/metrics");
        let none = client.get(&url).send().await.unwrap();
        assert_eq!(none.status(), 401, "{url}");
        assert_eq!(none.headers()["www-authenticate"], "Bearer");
        // A grant on one namespace is not enough: the labels name the others.
        let partial = client.get(&url).bearer_auth(EXEC_A).send().await.unwrap();
        assert_eq!(partial.status(), 403, "{url}");
        let body: serde_json::Value = partial.json().await.unwrap();
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(r#"namespace "*""#), "{message}");
        let admin = client.get(&url).bearer_auth(ADMIN).send().await.unwrap();
        assert_eq!(admin.status(), 200, "{url}");
        let text = admin.text().await.unwrap();
        assert!(text.contains("namespace=\"team-a\""), "{text}");
    }
}
