"""The official kfp SDK (kfp.Client) against runledger's JSON/HTTP API, unchanged.

Each test drives the SDK the way a KFP user's script does and checks what the SDK hands back:
if runledger's JSON differed from KFP's (camelCase keys, numeric enums, "" timestamps, a
non-boolean multi_user), these calls would fail or return empty fields. Each runs against the
plain server and against the multi-user one (TLS, a bearer token, a namespace; see conftest.py).
"""

import datetime
import json

import kfp_server_api
import pytest


def report(server, run_id, state, **extra):
    """Moves a run to `state` through runledger's ReportRunState route, as the machine that runs
    pipelines does (multi-user: with the executor's token)."""
    body = {"run_id": run_id, "state": state, **extra}
    response = server.http("runner").post(
        f"{server.host}/apis/v2beta1/runs/{run_id}:reportState", json=body, timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()


def new_run(client, pipeline_file, experiment, name, **arguments):
    result = client.create_run_from_pipeline_package(
        pipeline_file,
        arguments=arguments or {"message": "hi", "count": 2},
        run_name=name,
        experiment_id=experiment.experiment_id,
    )
    return client.get_run(result.run_id)


def test_client_construction_reads_healthz_and_its_mode(client, server):
    assert client.get_kfp_healthz().multi_user is server.multi_user
    # kfp-server-api 2.17's model keeps only multi_user; the rest of the body is KFP's too. It
    # stays open without credentials.
    raw = server.http(principal=None).get(f"{server.host}/apis/v2beta1/healthz", timeout=30)
    assert raw.status_code == 200, raw.text
    assert raw.json()["multi_user"] is server.multi_user
    assert raw.json()["tag_name"] and raw.json()["commit_sha"]


def test_experiment_is_created_once_and_found_by_name_and_id(client, unique):
    created = client.create_experiment(name=unique, description="for the suite")
    assert created.experiment_id
    assert created.display_name == unique
    assert isinstance(created.created_at, datetime.datetime)
    assert created.storage_state == "AVAILABLE"

    # The SDK looks the name up first (a filter on display_name) and reuses what it finds.
    again = client.create_experiment(name=unique)
    assert again.experiment_id == created.experiment_id

    by_name = client.get_experiment(experiment_name=unique)
    assert by_name.experiment_id == created.experiment_id
    by_id = client.get_experiment(experiment_id=created.experiment_id)
    assert by_id.description == "for the suite"


def test_unknown_experiment_name_is_reported_by_the_sdk(client, unique):
    with pytest.raises(ValueError, match="No experiment is found"):
        client.get_experiment(experiment_name=f"missing-{unique}")


def test_run_from_compiled_pipeline_keeps_its_parameters(client, pipeline_file, experiment, unique):
    result = client.create_run_from_pipeline_package(
        pipeline_file,
        arguments={"message": "hi", "count": 3},
        run_name=unique,
        experiment_name=experiment.display_name,
    )
    run = client.get_run(result.run_id)
    assert run.display_name == unique
    assert run.experiment_id == experiment.experiment_id
    assert run.state == "PENDING"
    assert run.storage_state == "AVAILABLE"
    assert run.runtime_config.parameters == {"message": "hi", "count": 3}
    assert type(run.runtime_config.parameters["count"]) is int
    assert run.pipeline_spec["pipelineInfo"]["name"] == "greeting"
    assert isinstance(run.created_at, datetime.datetime)
    assert run.created_at.utcoffset() == datetime.timedelta(0)
    assert run.finished_at is None
    assert [s.state for s in run.state_history] == ["PENDING"]


def test_run_pipeline_with_experiment_id_and_service_account(client, pipeline_file, experiment, unique):
    run = client.run_pipeline(
        experiment_id=experiment.experiment_id,
        job_name=unique,
        pipeline_package_path=pipeline_file,
        params={"message": "yo"},
        service_account="runner",
    )
    fetched = client.get_run(run.run_id)
    assert fetched.service_account == "runner"
    assert fetched.runtime_config.parameters == {"message": "yo"}


def test_run_from_pipeline_func_lands_in_the_named_experiment(client, unique):
    from conftest import greeting

    result = client.create_run_from_pipeline_func(
        greeting,
        arguments={"message": "func"},
        run_name=unique,
        experiment_name=f"func-{unique}",
    )
    run = client.get_run(result.run_id)
    experiment = client.get_experiment(experiment_name=f"func-{unique}")
    assert run.experiment_id == experiment.experiment_id


def test_list_runs_pages_in_the_requested_order(client, pipeline_file, experiment):
    names = [f"run-{i}" for i in range(5)]
    for name in names:
        new_run(client, pipeline_file, experiment, name)

    seen, token = [], ""
    while True:
        page = client.list_runs(
            experiment_id=experiment.experiment_id,
            page_size=2,
            page_token=token,
            sort_by="display_name desc",
        )
        assert page.total_size == 5
        assert len(page.runs) <= 2
        seen += [r.display_name for r in page.runs]
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(names, reverse=True)


def test_list_runs_filters_with_the_sdk_filter_format(client, pipeline_file, experiment):
    for name in ["alpha", "beta", "alphabet"]:
        new_run(client, pipeline_file, experiment, name)

    equals = json.dumps(
        {"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": "alpha"}]}
    )
    page = client.list_runs(experiment_id=experiment.experiment_id, filter=equals)
    assert [r.display_name for r in page.runs] == ["alpha"]
    assert page.total_size == 1

    # Numeric operations, as the SDK's own helpers send them (9 = IS_SUBSTRING).
    substring = json.dumps(
        {"predicates": [{"operation": 9, "key": "display_name", "string_value": "alpha"}]}
    )
    page = client.list_runs(
        experiment_id=experiment.experiment_id, filter=substring, sort_by="display_name"
    )
    assert [r.display_name for r in page.runs] == ["alpha", "alphabet"]


def test_empty_listing_returns_no_runs(client, experiment):
    page = client.list_runs(experiment_id=experiment.experiment_id)
    assert not page.runs
    assert not page.next_page_token
    assert not page.total_size


def test_archive_and_unarchive_a_run(client, pipeline_file, experiment, unique):
    run = new_run(client, pipeline_file, experiment, unique)
    client.archive_run(run.run_id)
    assert client.get_run(run.run_id).storage_state == "ARCHIVED"
    client.unarchive_run(run.run_id)
    assert client.get_run(run.run_id).storage_state == "AVAILABLE"


def test_terminating_a_pending_run_cancels_it(client, pipeline_file, experiment, unique):
    run = new_run(client, pipeline_file, experiment, unique)
    client.terminate_run(run.run_id)
    fetched = client.get_run(run.run_id)
    assert fetched.state == "CANCELED"
    assert isinstance(fetched.finished_at, datetime.datetime)


def test_terminating_a_running_run_asks_the_executor_to_cancel(
    client, server, pipeline_file, experiment, unique
):
    run = new_run(client, pipeline_file, experiment, unique)
    report(server, run.run_id, "RUNNING")
    client.terminate_run(run.run_id)
    assert client.get_run(run.run_id).state == "CANCELING"


def test_deleted_run_is_gone(client, pipeline_file, experiment, unique):
    run = new_run(client, pipeline_file, experiment, unique)
    client.delete_run(run.run_id)
    with pytest.raises(kfp_server_api.ApiException) as failure:
        client.get_run(run.run_id)
    assert failure.value.status == 404
    body = json.loads(failure.value.body)
    assert body["code"] == 5
    assert run.run_id in body["message"]


def test_reported_success_ends_wait_for_run_completion(client, server, pipeline_file, experiment, unique):
    run = new_run(client, pipeline_file, experiment, unique)
    report(server, run.run_id, "RUNNING")
    report(server, run.run_id, "SUCCEEDED", expected_state="RUNNING")

    # The run is already finished, so the first poll returns.
    done = client.wait_for_run_completion(run.run_id, timeout=600, sleep_duration=1)
    assert done.state == "SUCCEEDED"
    assert isinstance(done.finished_at, datetime.datetime)
    assert [s.state for s in done.state_history] == ["PENDING", "RUNNING", "SUCCEEDED"]


def test_reported_failure_carries_the_error(client, server, pipeline_file, experiment, unique):
    run = new_run(client, pipeline_file, experiment, unique)
    report(server, run.run_id, "FAILED", error={"code": 13, "message": "step crashed"})
    done = client.wait_for_run_completion(run.run_id, timeout=600, sleep_duration=1)
    assert done.state == "FAILED"
    assert done.error.message == "step crashed"


def test_experiment_archive_unarchive_and_delete(client, pipeline_file, unique):
    experiment = client.create_experiment(name=unique)
    run = new_run(client, pipeline_file, experiment, f"{unique}-run")

    client.archive_experiment(experiment.experiment_id)
    assert client.get_experiment(experiment_id=experiment.experiment_id).storage_state == "ARCHIVED"
    assert client.get_run(run.run_id).storage_state == "ARCHIVED"

    client.unarchive_experiment(experiment.experiment_id)
    assert client.get_experiment(experiment_id=experiment.experiment_id).storage_state == "AVAILABLE"

    client.delete_experiment(experiment.experiment_id)
    with pytest.raises(kfp_server_api.ApiException) as failure:
        client.get_experiment(experiment_id=experiment.experiment_id)
    assert failure.value.status == 404


def test_list_experiments_pages_and_filters(client, unique):
    for i in range(3):
        client.create_experiment(name=f"{unique}-{i}")
    substring = json.dumps(
        {"predicates": [{"operation": "IS_SUBSTRING", "key": "display_name", "stringValue": unique}]}
    )
    first = client.list_experiments(page_size=2, sort_by="display_name desc", filter=substring)
    assert [e.display_name for e in first.experiments] == [f"{unique}-2", f"{unique}-1"]
    assert first.total_size == 3
    second = client.list_experiments(
        page_size=2, page_token=first.next_page_token, sort_by="display_name desc", filter=substring
    )
    assert [e.display_name for e in second.experiments] == [f"{unique}-0"]
    assert not second.next_page_token


def test_run_without_an_experiment_lands_in_default(client, server, pipeline_file, unique):
    # The SDK finds or creates an experiment named "Default" (in its namespace); a run created
    # over plain HTTP with no experiment_id must land in that same experiment.
    result = client.create_run_from_pipeline_package(pipeline_file, run_name=unique)
    via_sdk = client.get_run(result.run_id)
    default = client.get_experiment(experiment_name="Default")
    assert via_sdk.experiment_id == default.experiment_id

    body = {"display_name": f"{unique}-raw", "pipeline_spec": {"pipelineInfo": {"name": "x"}}}
    if server.namespace:
        body["namespace"] = server.namespace
    raw = server.http().post(f"{server.host}/apis/v2beta1/runs", json=body, timeout=30)
    assert raw.status_code == 200, raw.text
    assert raw.json()["experiment_id"] == default.experiment_id


def test_list_all_runs_newest_first_with_a_name_filter(client, pipeline_file, experiment, unique):
    for i in range(3):
        new_run(client, pipeline_file, experiment, f"{unique}-{i}")
    substring = json.dumps(
        {"predicates": [{"operation": "IS_SUBSTRING", "key": "display_name", "stringValue": unique}]}
    )
    # No experiment: the SDK sends its namespace (plain: namespace= (empty), meaning every run).
    page = client.list_runs(sort_by="created_at desc", filter=substring)
    assert [r.display_name for r in page.runs] == [f"{unique}-2", f"{unique}-1", f"{unique}-0"]


def test_bad_sort_key_is_an_api_exception_with_status_400(client):
    with pytest.raises(kfp_server_api.ApiException) as failure:
        client.list_runs(sort_by="colour")
    assert failure.value.status == 400
    assert json.loads(failure.value.body)["code"] == 3


def test_client_also_works_against_the_grpc_port(server, pipeline_file, unique):
    client = server.client(host=server.grpc_port_url)
    result = client.create_run_from_pipeline_package(
        pipeline_file, run_name=unique, experiment_name=f"grpc-port-{unique}"
    )
    assert client.get_run(result.run_id).display_name == unique
