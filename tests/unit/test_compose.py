"""The container deployment matches the code: docker-compose.yml, the Dockerfile and the health probe.

No Docker engine is needed: the compose file is read as YAML and checked against the modules, ports and
settings the services really have, so a renamed module, a mistyped TRAINERAGENT_* variable or a wrong
health-check port fails here rather than in someone's `docker compose up`.
"""

from __future__ import annotations

import os
import pathlib
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from cli.launcher import SERVICES as LAUNCHER_SERVICES
from services.common import config
from services.common.config import Settings

ROOT = pathlib.Path(__file__).resolve().parents[2]
COMPOSE_PATH = ROOT / "docker-compose.yml"
DOCKERFILE_PATH = ROOT / "Dockerfile"
PROBE = ROOT / "scripts" / "grpc_health_probe.py"

# Every project service and the module its container runs; NATS comes from its official image.
MODULES = {
    "task": "services.task",
    "data": "services.data",
    "model": "services.model",
    "server": "services.server",
    "worker": "services.model.worker",
    "gateway": "gateway",
}
GRPC_SERVICES = ("task", "data", "model", "server", "gateway")
TORCH_PIN = "2.13.0"


@pytest.fixture(scope="module")
def compose_text() -> str:
    return COMPOSE_PATH.read_text()


@pytest.fixture(scope="module")
def compose(compose_text: str) -> dict:
    return yaml.safe_load(compose_text)


@pytest.fixture(scope="module")
def services(compose: dict) -> dict[str, dict]:
    return compose["services"]


def _env(service: dict) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):  # KEY=VALUE list form
        environment = dict(item.split("=", 1) for item in environment)
    return {key: str(value) for key, value in environment.items()}


def _depends_on(service: dict) -> dict[str, str]:
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):  # short form: started, not healthy
        return {name: "service_started" for name in depends}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in depends.items()}


def _mounts(service: dict) -> list[tuple[str, str, str]]:
    """(source, target, mode) of each volume in short or long syntax."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            mode = "ro" if volume.get("read_only") else "rw"
            mounts.append((volume.get("source", ""), volume["target"], mode))
        else:
            parts = volume.split(":")
            if len(parts) == 1:  # an anonymous volume: one per container
                parts = ["", parts[0]]
            mounts.append((parts[0], parts[1], parts[2] if len(parts) > 2 else "rw"))
    return mounts


def _published(service: dict) -> list[tuple[str, str]]:
    """(host, container) port specs of each published port, without host IP or protocol."""
    published = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            published.append((str(port.get("published", "")), str(port["target"])))
            continue
        spec = str(port).split("/", 1)[0]
        host, _, container = spec.rpartition(":")
        published.append((host.rsplit(":", 1)[-1] if host else "", container))
    return published


def _module_file(module: str) -> pathlib.Path:
    """The file `python -m module` runs: a package's __main__.py, or the module's own .py file."""
    path = ROOT.joinpath(*module.split("."))
    return path / "__main__.py" if path.is_dir() else path.with_suffix(".py")


def _env_names_read_by_settings(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The TRAINERAGENT_* names Settings.from_env() looks up, recorded while it runs."""
    seen: set[str] = set()

    class RecordingEnviron(dict):
        def get(self, key: str, default: str | None = None) -> str | None:
            seen.add(key)
            return super().get(key, default)

        def __getitem__(self, key: str) -> str:
            seen.add(key)
            return super().__getitem__(key)

        def __contains__(self, key: object) -> bool:
            seen.add(key)
            return super().__contains__(key)

    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRAINERAGENT_")}
    monkeypatch.setattr(config.os, "environ", RecordingEnviron(clean))
    Settings.from_env()
    return {name for name in seen if name.startswith("TRAINERAGENT_")}


# --- docker-compose.yml -------------------------------------------------------------------------------


def test_every_service_is_present(services: dict[str, dict]) -> None:
    assert set(services) == {"nats", *MODULES}


def test_nats_is_the_official_image_with_jetstream_and_a_healthcheck(services: dict[str, dict]) -> None:
    nats = services["nats"]
    repository = nats["image"].split(":", 1)[0]
    assert repository in ("nats", "library/nats", "docker.io/library/nats"), nats["image"]
    assert "build" not in nats
    command = nats["command"] if isinstance(nats["command"], list) else nats["command"].split()
    assert "-js" in command or "--jetstream" in command
    assert "-sd" in command or "--store_dir" in command
    store_dir = command[command.index("-sd" if "-sd" in command else "--store_dir") + 1]
    assert store_dir in {target for _, target, _ in _mounts(nats)}, "JetStream's store must be on a volume"
    test = " ".join(nats["healthcheck"]["test"])
    assert "8222" in test and "healthz" in test


@pytest.mark.parametrize("name", sorted(MODULES))
def test_each_service_builds_from_the_dockerfile_and_runs_its_module(
    services: dict[str, dict], name: str
) -> None:
    service = services[name]
    build = service["build"]
    if isinstance(build, str):
        context, dockerfile = build, "Dockerfile"
    else:
        context, dockerfile = build.get("context", "."), build.get("dockerfile", "Dockerfile")
    assert (ROOT / context / dockerfile).resolve() == DOCKERFILE_PATH
    command = service["command"] if isinstance(service["command"], list) else service["command"].split()
    assert command == ["python", "-m", MODULES[name]]
    assert _module_file(MODULES[name]).is_file(), f"{MODULES[name]} has no {_module_file(MODULES[name])}"
    assert service.get("restart") == "unless-stopped"


def test_compose_runs_the_same_processes_as_the_embedded_launcher() -> None:
    assert dict(LAUNCHER_SERVICES) == MODULES


@pytest.mark.parametrize("name", GRPC_SERVICES)
def test_grpc_services_are_health_checked_on_their_own_port(services: dict[str, dict], name: str) -> None:
    service = services[name]
    port = int(_env(service).get(f"TRAINERAGENT_{name.upper()}_PORT", getattr(Settings, f"{name}_port")))
    healthcheck = service["healthcheck"]
    assert healthcheck["test"] == ["CMD", "python", "scripts/grpc_health_probe.py", str(port)]
    assert {k: healthcheck[k] for k in ("interval", "timeout", "retries", "start_period")} == {
        "interval": "10s", "timeout": "5s", "retries": 5, "start_period": "20s"}
    # The other services reach it by its compose name on that port.
    for other in MODULES:
        addr = _env(services[other]).get(f"TRAINERAGENT_{name.upper()}_ADDR")
        assert addr in (None, f"{name}:{port}"), f"{other} looks for {name} at {addr}"


def test_services_listen_on_all_interfaces_and_find_nats_by_name(services: dict[str, dict]) -> None:
    for name in MODULES:
        env = _env(services[name])
        assert env["TRAINERAGENT_NATS_URL"] == "nats://nats:4222", name
        if name in GRPC_SERVICES:
            assert env["TRAINERAGENT_BIND_HOST"] == "0.0.0.0", name


def test_task_and_gateway_know_where_the_other_services_are(services: dict[str, dict]) -> None:
    needs = {"task": ("data", "model", "server"), "gateway": ("task", "data", "model", "server")}
    for name, others in needs.items():
        env = _env(services[name])
        for other in others:
            expected = f"{other}:{getattr(Settings, f'{other}_port')}"
            assert env.get(f"TRAINERAGENT_{other.upper()}_ADDR") == expected, name


def test_start_order_waits_for_health(services: dict[str, dict]) -> None:
    for name in MODULES:
        assert _depends_on(services[name]).get("nats") == "service_healthy", name
    gateway = _depends_on(services["gateway"])
    assert gateway.get("task") == "service_healthy" and gateway.get("server") == "service_healthy"
    task = _depends_on(services["task"])
    assert all(task.get(other) == "service_healthy" for other in ("data", "model", "server"))
    for name, service in services.items():  # a dependency waited on as healthy must have a health check
        for dependency, condition in _depends_on(service).items():
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}, which has none"


def test_gateway_and_endpoint_ports_are_published(services: dict[str, dict]) -> None:
    assert ("50051", "50051") in _published(services["gateway"])
    server = services["server"]
    env = _env(server)
    start = int(env.get("TRAINERAGENT_ENDPOINT_PORT_START", Settings.endpoint_port_start))
    ranges = [(host, container) for host, container in _published(server) if "-" in container]
    assert ranges, "the server publishes no range of endpoint ports"
    low, high = (int(p) for p in ranges[0][1].split("-"))
    assert ranges[0][0] == ranges[0][1], "endpoints are advertised with their container port"
    assert low == start < high
    assert env["TRAINERAGENT_ENDPOINT_HOST"] == "localhost"
    for name in set(MODULES) - {"gateway", "server"}:
        assert not services[name].get("ports"), f"{name} is internal and publishes nothing"


def test_data_service_reads_the_mounted_datasets_read_only(services: dict[str, dict]) -> None:
    data = services["data"]
    roots = _env(data)["TRAINERAGENT_DATA_ROOTS"].split(":")
    assert roots == ["/data/datasets"]
    assert ("./datasets", "/data/datasets", "ro") in _mounts(data)


def test_worker_reserves_the_gpus(services: dict[str, dict]) -> None:
    worker = services["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    assert _env(worker)["TRAINERAGENT_DEVICE"] == "auto"


def test_every_traineragent_variable_is_a_setting(compose_text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    known = _env_names_read_by_settings(monkeypatch)
    assert {"TRAINERAGENT_NATS_URL", "TRAINERAGENT_TASK_PORT", "TRAINERAGENT_SERVER_ADDR"} <= known
    used = set(re.findall(r"\bTRAINERAGENT_[A-Z0-9_]*[A-Z0-9]\b", compose_text))
    assert used, "the compose file configures nothing"
    assert used <= known, f"not read by Settings.from_env(): {sorted(used - known)}"


def test_each_service_has_its_own_scratch_volume(compose: dict, services: dict[str, dict]) -> None:
    declared = set(compose.get("volumes") or {})
    owners: dict[str, str] = {}
    for name, service in services.items():
        for source, _, _ in _mounts(service):
            if source in declared:
                assert source not in owners, f"{name} and {owners[source]} share the volume {source}"
                owners[source] = name
    for name in MODULES:
        work_dir = _env(services[name])["TRAINERAGENT_WORK_DIR"]
        sources = [source for source, target, _ in _mounts(services[name]) if target == work_dir]
        # A named volume of its own, or an anonymous one (each container its own: scaled workers).
        assert sources and (sources[0] in declared or sources[0] == ""), f"{name}: {work_dir} is no volume"


# --- Dockerfile ---------------------------------------------------------------------------------------


def test_dockerfile_pins_torch_like_the_makefile() -> None:
    dockerfile = DOCKERFILE_PATH.read_text()
    pins = set(re.findall(r"torch==([0-9][0-9A-Za-z.+]*)", dockerfile))
    assert pins == {TORCH_PIN}
    makefile_pins = set(re.findall(r"torch==([0-9][0-9A-Za-z.+]*)", (ROOT / "Makefile").read_text()))
    assert makefile_pins <= {TORCH_PIN}, "the Makefile and the Dockerfile install different torch builds"


def test_dockerfile_copies_what_the_containers_run() -> None:
    dockerfile = DOCKERFILE_PATH.read_text()
    copied = {line.split()[1].rstrip("/") for line in dockerfile.splitlines() if line.startswith("COPY ")}
    needed = {module.split(".")[0] for module in MODULES.values()}
    assert needed | {"traineragent", "inference", "scripts"} <= copied
    assert re.search(r"^USER (?!root\b)\S+", dockerfile, re.M), "the image must not run as root"
    assert 'CMD ["python", "-m", "gateway"]' in dockerfile


# --- scripts/grpc_health_probe.py ---------------------------------------------------------------------


@pytest.fixture
def health_server() -> Iterator[tuple[int, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port, servicer
    server.stop(None)


def _probe(port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(PROBE), str(port)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_probe_passes_when_serving(health_server: tuple[int, health.HealthServicer]) -> None:
    port, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    result = _probe(port)
    assert result.returncode == 0, result.stderr


def test_probe_fails_when_not_serving(health_server: tuple[int, health.HealthServicer]) -> None:
    port, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    result = _probe(port)
    assert result.returncode == 1
    assert "NOT_SERVING" in result.stderr


def test_probe_fails_when_nothing_listens() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = _probe(port)
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stderr
