"""Pipelines and pipeline versions through the official kfp SDK: the multipart uploads, lookups
by name, listing, runs of a version, and deletion."""

import datetime
import json

import kfp_server_api
import pytest


def upload(client, pipeline_file, name, **kwargs):
    return client.upload_pipeline(pipeline_file, pipeline_name=name, **kwargs)


def versions_of(client, pipeline_id):
    return client.list_pipeline_versions(pipeline_id, page_size=100).pipeline_versions or []


def test_upload_pipeline_creates_it_with_a_first_version(client, pipeline_file, unique):
    pipeline = upload(client, pipeline_file, unique, description="a greeting")
    assert pipeline.pipeline_id
    assert pipeline.display_name == unique
    assert pipeline.description == "a greeting"
    assert isinstance(pipeline.created_at, datetime.datetime)

    assert client.get_pipeline(pipeline.pipeline_id).display_name == unique
    [first] = versions_of(client, pipeline.pipeline_id)
    assert first.pipeline_id == pipeline.pipeline_id
    assert first.display_name == unique
    # The version keeps the compiled spec (its pipelineInfo.name is the pipeline function's).
    assert first.pipeline_spec["pipelineInfo"]["name"] == "greeting"
    assert "root" in first.pipeline_spec


def test_upload_pipeline_version_adds_versions_by_pipeline_id_and_by_name(
    client, pipeline_file, unique
):
    pipeline = upload(client, pipeline_file, unique)
    by_id = client.upload_pipeline_version(
        pipeline_file,
        pipeline_version_name=f"{unique}-v2",
        pipeline_id=pipeline.pipeline_id,
        description="second",
    )
    assert by_id.pipeline_id == pipeline.pipeline_id
    assert by_id.display_name == f"{unique}-v2"
    assert by_id.description == "second"
    # By name: the SDK looks the pipeline up with a display_name filter first.
    by_name = client.upload_pipeline_version(
        pipeline_file, pipeline_version_name=f"{unique}-v3", pipeline_name=unique
    )
    assert by_name.pipeline_id == pipeline.pipeline_id

    names = [v.display_name for v in versions_of(client, pipeline.pipeline_id)]
    assert names == [unique, f"{unique}-v2", f"{unique}-v3"]
    got = client.get_pipeline_version(pipeline.pipeline_id, by_id.pipeline_version_id)
    assert got.pipeline_version_id == by_id.pipeline_version_id
    assert got.pipeline_spec["pipelineInfo"]["name"] == "greeting"


def test_a_taken_version_name_is_a_conflict(client, pipeline_file, unique):
    pipeline = upload(client, pipeline_file, unique)
    with pytest.raises(kfp_server_api.ApiException) as raised:
        client.upload_pipeline_version(
            pipeline_file, pipeline_version_name=unique, pipeline_id=pipeline.pipeline_id
        )
    assert raised.value.status == 409


def test_a_taken_pipeline_name_is_a_conflict(client, pipeline_file, unique):
    upload(client, pipeline_file, unique)
    with pytest.raises(kfp_server_api.ApiException) as raised:
        upload(client, pipeline_file, unique)
    assert raised.value.status == 409
    assert "already exists" in json.loads(raised.value.body)["message"]


def test_get_pipeline_id_finds_a_pipeline_by_name(client, pipeline_file, unique):
    pipeline = upload(client, pipeline_file, unique)
    assert client.get_pipeline_id(unique) == pipeline.pipeline_id
    assert client.get_pipeline_id(f"missing-{unique}") is None


def test_list_pipelines_pages_sorts_and_filters(client, pipeline_file, unique):
    created = [upload(client, pipeline_file, f"{unique}-{i}") for i in range(3)]
    only_these = json.dumps(
        {"predicates": [{"operation": "IS_SUBSTRING", "key": "name", "stringValue": unique}]}
    )
    first = client.list_pipelines(page_size=2, sort_by="created_at desc", filter=only_these)
    assert first.total_size == 3
    assert [p.pipeline_id for p in first.pipelines] == [
        created[2].pipeline_id,
        created[1].pipeline_id,
    ]
    assert first.next_page_token
    second = client.list_pipelines(
        page_token=first.next_page_token, page_size=2, filter=only_these
    )
    assert [p.pipeline_id for p in second.pipelines] == [created[0].pipeline_id]
    assert not second.next_page_token


def test_run_pipeline_with_pipeline_and_version_ids_records_the_version(
    client, pipeline_file, experiment, unique
):
    pipeline = upload(client, pipeline_file, unique)
    version = client.upload_pipeline_version(
        pipeline_file, pipeline_version_name=f"{unique}-v2", pipeline_id=pipeline.pipeline_id
    )
    run = client.run_pipeline(
        experiment_id=experiment.experiment_id,
        job_name=unique,
        params={"message": "hi", "count": 2},
        pipeline_id=pipeline.pipeline_id,
        version_id=version.pipeline_version_id,
    )
    got = client.get_run(run.run_id)
    assert got.pipeline_version_reference.pipeline_id == pipeline.pipeline_id
    assert got.pipeline_version_reference.pipeline_version_id == version.pipeline_version_id
    assert got.runtime_config.parameters == {"message": "hi", "count": 2}

    # ListRuns filters on the pipeline id of a version reference.
    by_pipeline = client.list_runs(
        experiment_id=experiment.experiment_id,
        filter=json.dumps(
            {
                "predicates": [
                    {"operation": "EQUALS", "key": "pipeline_id", "stringValue": pipeline.pipeline_id}
                ]
            }
        ),
    )
    assert [r.run_id for r in by_pipeline.runs] == [run.run_id]


def test_run_of_a_missing_version_is_not_found(client, pipeline_file, experiment, unique):
    pipeline = upload(client, pipeline_file, unique)
    with pytest.raises(kfp_server_api.ApiException) as raised:
        client.run_pipeline(
            experiment_id=experiment.experiment_id,
            job_name=unique,
            pipeline_id=pipeline.pipeline_id,
            version_id="no-such-version",
        )
    assert raised.value.status == 404


def test_delete_pipeline_refuses_while_it_has_versions(client, pipeline_file, unique):
    pipeline = upload(client, pipeline_file, unique)
    with pytest.raises(kfp_server_api.ApiException) as raised:
        client.delete_pipeline(pipeline.pipeline_id)
    assert raised.value.status == 400
    assert "cascade" in json.loads(raised.value.body)["message"]

    for version in versions_of(client, pipeline.pipeline_id):
        client.delete_pipeline_version(pipeline.pipeline_id, version.pipeline_version_id)
    client.delete_pipeline(pipeline.pipeline_id)
    with pytest.raises(kfp_server_api.ApiException) as raised:
        client.get_pipeline(pipeline.pipeline_id)
    assert raised.value.status == 404


def test_a_package_that_is_not_a_pipeline_is_refused(client, tmp_path, unique):
    broken = tmp_path / "broken.yaml"
    broken.write_text("pipelineInfo:\n  name: x\n")
    with pytest.raises(kfp_server_api.ApiException) as raised:
        upload(client, str(broken), unique)
    assert raised.value.status == 400
    assert "root" in json.loads(raised.value.body)["message"]
