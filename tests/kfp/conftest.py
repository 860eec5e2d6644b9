"""Fixtures for the kfp SDK suite: a kfp.Client on the runledger that run.sh started, and a
small pipeline compiled with the SDK's own compiler."""

import os
import uuid

import pytest
from kfp import compiler, dsl


@dsl.component(base_image="python:3.11")
def repeat(message: str, count: int) -> str:
    return message * count


@dsl.pipeline(name="greeting", description="Repeats a message.")
def greeting(message: str = "hello", count: int = 1):
    repeat(message=message, count=count)


@pytest.fixture(scope="session")
def host() -> str:
    url = os.environ.get("RUNLEDGER_HTTP_URL")
    if not url:
        pytest.fail("RUNLEDGER_HTTP_URL is not set: run this suite with tests/kfp/run.sh")
    return url


@pytest.fixture(scope="session")
def client(host):
    import kfp

    # Building the client calls GET /apis/v2beta1/healthz.
    return kfp.Client(host=host)


@pytest.fixture(scope="session")
def pipeline_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("pipeline") / "greeting.yaml"
    compiler.Compiler().compile(pipeline_func=greeting, package_path=str(path))
    return str(path)


@pytest.fixture
def unique() -> str:
    """A name no other test uses (the suite shares one server)."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def experiment(client, unique):
    return client.create_experiment(name=f"exp-{unique}")
