"""The `kfp` command line (installed with the SDK) against runledger: `kfp pipeline create`,
`kfp pipeline list`, `kfp recurring-run list`, as a user types them."""

import json
import os
import subprocess
import sys

import pytest
from conftest import servers


# The kfp CLI has no option for a CA certificate (only --existing-token and --namespace), so it
# cannot reach the multi-user server's self-signed TLS: these tests run against the plain server
# only, with an SDK client of that server for setup. The SDK suite covers multi-user.
@pytest.fixture(scope="module")
def plain():
    return servers()["plain"]


@pytest.fixture(scope="module")
def host(plain):
    return plain.host


@pytest.fixture(scope="module")
def client(plain):
    return plain.client()


def kfp(host, *args):
    """Runs the kfp CLI of this virtualenv with `args` (JSON output); returns the parsed output."""
    cli = os.path.join(os.path.dirname(sys.executable), "kfp")
    done = subprocess.run(
        [cli, "--endpoint", host, "--output", "json", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"kfp {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    # `pipeline create` prints the SDK's "Pipeline details: <link>" line before the JSON.
    lines = done.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(("{", "[")))
    return json.loads("\n".join(lines[start:]))


def test_pipeline_create_uploads_the_package(client, host, pipeline_file, unique):
    created = kfp(host, "pipeline", "create", "--pipeline-name", unique, pipeline_file)
    assert created["display_name"] == unique
    assert client.get_pipeline(created["pipeline_id"]).display_name == unique


def test_pipeline_list_shows_uploaded_pipelines(client, host, pipeline_file, unique):
    pipeline = client.upload_pipeline(pipeline_file, pipeline_name=unique)
    listed = kfp(host, "pipeline", "list", "--max-size", "200")
    assert pipeline.pipeline_id in [p["pipeline_id"] for p in listed]


def test_pipeline_list_as_a_table(host, client, pipeline_file, unique):
    client.upload_pipeline(pipeline_file, pipeline_name=unique)
    cli = os.path.join(os.path.dirname(sys.executable), "kfp")
    done = subprocess.run(
        [cli, "--endpoint", host, "pipeline", "list"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert unique in done.stdout


def test_recurring_run_list_shows_recurring_runs(client, host, pipeline_file, experiment, unique):
    recurring = client.create_recurring_run(
        experiment_id=experiment.experiment_id,
        job_name=unique,
        cron_expression="@weekly",
        pipeline_package_path=pipeline_file,
        enabled=False,
    )
    listed = kfp(host, "recurring-run", "list", "--experiment-id", experiment.experiment_id)
    assert [r["recurring_run_id"] for r in listed] == [recurring.recurring_run_id]
    assert listed[0]["status"] == "DISABLED"
    everywhere = kfp(host, "recurring-run", "list", "--max-size", "200")
    assert recurring.recurring_run_id in [r["recurring_run_id"] for r in everywhere]
