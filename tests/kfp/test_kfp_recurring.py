"""Recurring runs through the official kfp SDK: cron and periodic triggers, the runs the
server's scheduler creates, listing, disabling, enabling and deleting."""

import datetime
import json
import re
import time

import kfp_server_api
import pytest


def scheduled_runs(client, experiment, recurring_run_id):
    """The runs a recurring run created, oldest first."""
    only_these = json.dumps(
        {
            "predicates": [
                {
                    "operation": "EQUALS",
                    "key": "recurring_run_id",
                    "stringValue": recurring_run_id,
                }
            ]
        }
    )
    response = client.list_runs(
        experiment_id=experiment.experiment_id,
        filter=only_these,
        sort_by="scheduled_at",
        page_size=100,
    )
    return response.runs or []


def wait_for_runs(client, experiment, recurring_run_id, count, limit=120):
    """Waits (at most `limit` seconds, whatever the machine's load) for `count` runs."""
    deadline = time.monotonic() + limit
    while True:
        runs = scheduled_runs(client, experiment, recurring_run_id)
        if len(runs) >= count:
            return runs
        if time.monotonic() > deadline:
            pytest.fail(f"{len(runs)} runs after {limit} s, expected {count}")
        time.sleep(0.2)


def test_create_recurring_run_with_cron(client, pipeline_file, experiment, unique):
    recurring = client.create_recurring_run(
        experiment_id=experiment.experiment_id,
        job_name=unique,
        description="weekday mornings",
        cron_expression="0 0 9 ? * 2-6",
        max_concurrency=2,
        params={"message": "hi", "count": 2},
        pipeline_package_path=pipeline_file,
        start_time="2030-01-01T00:00:00Z",
    )
    assert recurring.recurring_run_id
    assert recurring.status == "ENABLED"
    assert recurring.mode == "ENABLE"
    assert recurring.max_concurrency == "2"
    assert recurring.trigger.cron_schedule.cron == "0 0 9 ? * 2-6"
    assert recurring.trigger.cron_schedule.start_time == datetime.datetime(
        2030, 1, 1, tzinfo=datetime.timezone.utc
    )
    assert recurring.experiment_id == experiment.experiment_id

    got = client.get_recurring_run(recurring.recurring_run_id)
    assert got.display_name == unique
    assert got.description == "weekday mornings"
    assert got.runtime_config.parameters == {"message": "hi", "count": 2}
    assert got.pipeline_spec["pipelineInfo"]["name"] == "greeting"
    # Its first time is in 2030: no run yet.
    assert scheduled_runs(client, experiment, recurring.recurring_run_id) == []


def test_a_bad_cron_expression_is_refused(client, pipeline_file, experiment, unique):
    with pytest.raises(kfp_server_api.ApiException) as raised:
        client.create_recurring_run(
            experiment_id=experiment.experiment_id,
            job_name=unique,
            cron_expression="0 0 25 * * *",
            pipeline_package_path=pipeline_file,
        )
    assert raised.value.status == 400
    assert "hour field" in json.loads(raised.value.body)["message"]


def test_periodic_recurring_run_of_a_pipeline_version_creates_runs(
    client, pipeline_file, experiment, unique
):
    pipeline = client.upload_pipeline(pipeline_file, pipeline_name=unique)
    [version] = client.list_pipeline_versions(pipeline.pipeline_id).pipeline_versions
    recurring = client.create_recurring_run(
        experiment_id=experiment.experiment_id,
        job_name=unique,
        interval_second=1,
        max_concurrency=2,
        pipeline_id=pipeline.pipeline_id,
        version_id=version.pipeline_version_id,
        params={"message": "again", "count": 1},
    )
    assert recurring.trigger.periodic_schedule.interval_second == "1"

    # Runs stay PENDING (nothing executes them here), so max_concurrency stops it at two.
    first, second = wait_for_runs(client, experiment, recurring.recurring_run_id, 2)
    for index, run in enumerate([first, second], start=1):
        assert run.recurring_run_id == recurring.recurring_run_id
        assert run.experiment_id == experiment.experiment_id
        assert run.state == "PENDING"
        assert run.pipeline_version_reference.pipeline_version_id == version.pipeline_version_id
        assert run.runtime_config.parameters == {"message": "again", "count": 1}
        # KFP's generated name: <scheduled workflow name>-<index>-<hash>.
        assert re.fullmatch(rf"{unique}[b-z2-9]{{5}}-{index}-\d+", run.display_name), run.display_name
    assert second.scheduled_at - first.scheduled_at == datetime.timedelta(seconds=1)

    client.disable_recurring_run(recurring.recurring_run_id)
    assert client.get_recurring_run(recurring.recurring_run_id).status == "DISABLED"
    client.enable_recurring_run(recurring.recurring_run_id)
    assert client.get_recurring_run(recurring.recurring_run_id).status == "ENABLED"
    client.disable_recurring_run(recurring.recurring_run_id)


def test_list_recurring_runs_by_experiment_with_pages(
    server, client, pipeline_file, experiment, unique
):
    created = [
        client.create_recurring_run(
            experiment_id=experiment.experiment_id,
            job_name=f"{unique}-{i}",
            cron_expression="@daily",
            pipeline_package_path=pipeline_file,
            enabled=False,
        )
        for i in range(3)
    ]
    assert {r.status for r in created} == {"DISABLED"}
    first = client.list_recurring_runs(
        experiment_id=experiment.experiment_id, page_size=2, sort_by="display_name desc"
    )
    assert first.total_size == 3
    assert [r.display_name for r in first.recurring_runs] == [f"{unique}-2", f"{unique}-1"]
    second = client.list_recurring_runs(
        experiment_id=experiment.experiment_id, page_token=first.next_page_token, page_size=2
    )
    assert [r.display_name for r in second.recurring_runs] == [f"{unique}-0"]
    # Multi-user: listing beyond one experiment needs a namespace (or a grant on "*").
    everywhere = client.list_recurring_runs(page_size=100, namespace=server.namespace or None)
    ids = {r.recurring_run_id for r in everywhere.recurring_runs}
    assert {r.recurring_run_id for r in created} <= ids


def test_delete_recurring_run(client, pipeline_file, experiment, unique):
    recurring = client.create_recurring_run(
        experiment_id=experiment.experiment_id,
        job_name=unique,
        cron_expression="@hourly",
        pipeline_package_path=pipeline_file,
    )
    client.delete_recurring_run(recurring.recurring_run_id)
    with pytest.raises(kfp_server_api.ApiException) as raised:
        client.get_recurring_run(recurring.recurring_run_id)
    assert raised.value.status == 404
    with pytest.raises(kfp_server_api.ApiException) as raised:
        client.disable_recurring_run(recurring.recurring_run_id)
    assert raised.value.status == 404
