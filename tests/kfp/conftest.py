"""Fixtures for the kfp SDK suite: the runledger servers that run.sh started (plain, and
multi-user: TLS + bearer tokens + per-namespace grants), a kfp.Client on each, and a small
pipeline compiled with the SDK's own compiler.

Every test that takes `server` (or `client`, `experiment`) runs once per server."""

import dataclasses
import json
import os
import uuid
from typing import Dict, Optional

import pytest
import requests
from kfp import compiler, dsl


@dsl.component(base_image="python:3.11")
def repeat(message: str, count: int) -> str:
    return message * count


@dsl.pipeline(name="greeting", description="Repeats a message.")
def greeting(message: str = "hello", count: int = 1):
    repeat(message=message, count=count)


@dataclasses.dataclass(frozen=True)
class Server:
    """One runledger as run.sh started it, and how a user of that deployment reaches it."""

    mode: str
    host: str
    grpc_port_url: str
    ca: Optional[str] = None
    namespace: str = ""
    other_namespace: str = ""
    tokens: Dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def multi_user(self) -> bool:
        return bool(self.tokens)

    def client(self, host: Optional[str] = None, principal: Optional[str] = "owner", namespace=None):
        """kfp.Client as a user of this deployment builds it (building it calls healthz).
        Multi-user: over TLS with the server's certificate, as `principal` (None: no token), in
        its namespace."""
        import kfp

        if not self.multi_user:
            return kfp.Client(host=host or self.host)
        return kfp.Client(
            host=host or self.host,
            existing_token=self.tokens[principal] if principal else None,
            namespace=namespace or self.namespace,
            ssl_ca_cert=self.ca,
        )

    def http(self, principal: Optional[str] = "owner") -> requests.Session:
        """A requests session on the REST API, with `principal`'s token when multi-user."""
        session = requests.Session()
        # REQUESTS_CA_BUNDLE and the like would override session.verify; and loopback needs
        # no proxy.
        session.trust_env = False
        if self.multi_user:
            session.verify = self.ca
            if principal:
                session.headers["Authorization"] = f"Bearer {self.tokens[principal]}"
        return session


def servers() -> Dict[str, Server]:
    path = os.environ.get("RUNLEDGER_KFP_SERVERS")
    if not path:
        pytest.fail("RUNLEDGER_KFP_SERVERS is not set: run this suite with tests/kfp/run.sh")
    with open(path) as f:
        return {mode: Server(mode=mode, **fields) for mode, fields in json.load(f).items()}


@pytest.fixture(scope="session", params=["plain", "multi-user"])
def server(request) -> Server:
    return servers()[request.param]


@pytest.fixture(scope="session")
def multi_user() -> Server:
    """The multi-user server alone, for what only multi-user mode has."""
    return servers()["multi-user"]


@pytest.fixture(scope="session")
def client(server):
    return server.client()


@pytest.fixture(scope="session")
def pipeline_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("pipeline") / "greeting.yaml"
    compiler.Compiler().compile(pipeline_func=greeting, package_path=str(path))
    return str(path)


@pytest.fixture
def unique() -> str:
    """A name no other test uses (the suite shares one server per mode)."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def experiment(client, unique):
    return client.create_experiment(name=f"exp-{unique}")
