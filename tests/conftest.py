"""Shared fixtures: the real stack (nats-server + six processes) on free loopback ports, once per session."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

from cli.client import GatewayClient
from cli.launcher import DEFAULT_PORTS, Stack, free_port, nats_server_binary, port_open
from tests.tools.scripted_openai import ScriptedOpenAI

# Tests turn the training budget down; the pipeline is the same.
TEST_ENV = {
    "TRAINERAGENT_TRAIN_BUDGET_S": "75",
    "TRAINERAGENT_MAX_EPOCHS": "25",
    "TRAINERAGENT_LOG_LEVEL": "INFO",
}


@pytest.fixture(scope="session")
def data_root() -> Iterator[pathlib.Path]:
    """The one folder server paths may point into (TRAINERAGENT_DATA_ROOTS)."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="ta-data-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def llm_server() -> Iterator[ScriptedOpenAI]:
    """The stack's LLM endpoint: a scripted OpenAI-compatible server, down (HTTP 500) unless a test scripts it.

    So every job of the session also exercises the fallback to the rule brain.
    """
    with ScriptedOpenAI([{"status": 500, "body": {"error": {"message": "scripted outage"}}}]) as server:
        yield server


@pytest.fixture(scope="session")
def stack(data_root: pathlib.Path, llm_server: ScriptedOpenAI) -> Iterator[Stack]:
    state = pathlib.Path(tempfile.mkdtemp(prefix="ta-stack-"))
    ports = {name: free_port() for name in DEFAULT_PORTS}
    ports["endpoints"] = 20000 + (os.getpid() % 20000)
    env = dict(TEST_ENV, TRAINERAGENT_DATA_ROOTS=str(data_root), TRAINERAGENT_LLM_BASE_URL=llm_server.base_url,
               TRAINERAGENT_LLM_MODEL="scripted", TRAINERAGENT_LLM_TIMEOUT_S="5", OPENAI_API_KEY="test-key-not-secret")
    # Two training workers share the work queue, as scaled-out workers would.
    stack = Stack(state_dir=state, ports=ports, env=env, workers=2)
    stack.start(timeout_s=120)
    yield stack
    stack.stop()
    if os.environ.get("TRAINERAGENT_KEEP_TEST_STATE"):
        print(f"test stack state kept in {state}")
    else:
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def gateway(stack: Stack) -> Iterator[GatewayClient]:
    client = GatewayClient(stack.gateway, timeout_s=60)
    yield client
    client.close()


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory):
    """A bare nats-server with JetStream of the module's own (for tests of one service's parts)."""
    port = free_port()
    process = subprocess.Popen([nats_server_binary(), "-js", "-sd", str(tmp_path_factory.mktemp("nats")),
                                "-a", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not port_open(port):
        assert time.monotonic() < deadline, "nats-server did not start"
        time.sleep(0.05)
    yield f"nats://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)
