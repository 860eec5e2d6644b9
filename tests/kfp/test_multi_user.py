"""What only multi-user mode has, through the kfp SDK as a KFP multi-user script uses it
(kfp.Client with existing_token, namespace and ssl_ca_cert over TLS): no token is
UNAUTHENTICATED, another namespace sees nothing of this one, the executor reports but does not
delete, and listing everything needs a namespace."""

import json

import kfp_server_api
import pytest


def api_error(call):
    """The ApiException a call raises, and its JSON body."""
    with pytest.raises(kfp_server_api.ApiException) as failure:
        call()
    return failure.value, json.loads(failure.value.body)


def test_without_a_token_the_sdk_gets_401_with_a_bearer_challenge(multi_user):
    # Building the client reads healthz, which stays open and says multi_user.
    anonymous = multi_user.client(principal=None)
    assert anonymous.get_kfp_healthz().multi_user is True
    error, body = api_error(lambda: anonymous.list_experiments())
    assert error.status == 401
    assert error.headers["WWW-Authenticate"].startswith("Bearer")
    assert body["code"] == 16


def test_another_namespace_sees_nothing_and_changes_nothing(multi_user, pipeline_file, unique):
    owner = multi_user.client()
    experiment = owner.create_experiment(name=unique)
    assert experiment.namespace == multi_user.namespace
    run = owner.create_run_from_pipeline_package(
        pipeline_file, run_name=unique, experiment_id=experiment.experiment_id
    )

    outsider = multi_user.client(principal="outsider", namespace=multi_user.other_namespace)
    # Unreadable is answered exactly as missing: no existence leak.
    error, body = api_error(lambda: outsider.get_run(run.run_id))
    _, missing = api_error(lambda: outsider.get_run(f"missing-{unique}"))
    assert error.status == 404
    assert body["message"] == missing["message"].replace(f"missing-{unique}", run.run_id)
    error, _ = api_error(lambda: outsider.get_experiment(experiment_id=experiment.experiment_id))
    assert error.status == 404
    error, _ = api_error(lambda: outsider.delete_run(run.run_id))
    assert error.status == 404
    error, body = api_error(lambda: outsider.list_runs(namespace=multi_user.namespace))
    assert error.status == 403
    assert multi_user.namespace in body["message"]
    # In its own namespace it lists only its own runs.
    assert not outsider.list_runs(filter=json.dumps(
        {"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": unique}]}
    )).runs

    assert owner.get_run(run.run_id).display_name == unique


def test_the_executor_reports_state_but_may_not_delete(multi_user, pipeline_file, unique):
    owner = multi_user.client()
    run = owner.create_run_from_pipeline_package(
        pipeline_file, run_name=unique, experiment_name=f"exec-{unique}"
    )
    runner = multi_user.client(principal="runner")
    assert runner.get_run(run.run_id).state == "PENDING"
    response = multi_user.http("runner").post(
        f"{multi_user.host}/apis/v2beta1/runs/{run.run_id}:reportState",
        json={"state": "RUNNING"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    error, body = api_error(lambda: runner.delete_run(run.run_id))
    assert error.status == 403
    assert "DeleteRun" in body["message"] and multi_user.namespace in body["message"]
    assert owner.get_run(run.run_id).state == "RUNNING"


def test_listing_every_namespace_needs_a_grant_on_all_of_them(multi_user):
    response = multi_user.http().get(f"{multi_user.host}/apis/v2beta1/runs", timeout=30)
    assert response.status_code == 403, response.text
    assert "namespace" in response.json()["message"]


def test_shared_pipelines_need_a_grant_on_the_shared_namespace_to_publish(
    multi_user, pipeline_file, unique
):
    # The owner holds editor on "" and publishes; anyone signed in reads shared pipelines.
    owner = multi_user.client()
    shared = owner.upload_pipeline(pipeline_file, pipeline_name=unique)
    outsider = multi_user.client(principal="outsider", namespace=multi_user.other_namespace)
    assert outsider.get_pipeline(shared.pipeline_id).display_name == unique
    assert outsider.get_pipeline_id(unique) == shared.pipeline_id

    # Without a grant on "" the outsider can neither publish nor change a shared pipeline...
    error, body = api_error(
        lambda: outsider.upload_pipeline(pipeline_file, pipeline_name=f"{unique}-outsider")
    )
    assert error.status == 403
    assert body["message"] == 'outsider may not CreatePipeline in namespace ""'
    error, _ = api_error(
        lambda: outsider.upload_pipeline_version(
            pipeline_file, pipeline_version_name="v2", pipeline_id=shared.pipeline_id
        )
    )
    assert error.status == 403
    error, _ = api_error(lambda: outsider.delete_pipeline(shared.pipeline_id))
    assert error.status == 403
    assert outsider.get_pipeline_id(f"{unique}-outsider") is None
    assert len(owner.list_pipeline_versions(shared.pipeline_id).pipeline_versions) == 1

    # ...but keeps private pipelines in its own namespace, which the owner cannot see.
    private = outsider.upload_pipeline(
        pipeline_file, pipeline_name=unique, namespace=multi_user.other_namespace
    )
    assert private.namespace == multi_user.other_namespace
    error, _ = api_error(lambda: owner.get_pipeline(private.pipeline_id))
    assert error.status == 404
