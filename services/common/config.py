"""Configuration from ``TRAINERAGENT_*`` environment variables, with the embedded default's values.

Every service reads the same :class:`Settings`; each uses the part it needs. Names and defaults are
documented in the README's configuration table.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib


def _env(name: str, default: str) -> str:
    return os.environ.get(f"TRAINERAGENT_{name}", default)


def env_switch(name: str, default: bool) -> bool:
    """An on/off setting read now (1/true/yes/on or 0/false/no/off); ``default`` when unset or unclear."""
    value = os.environ.get(name, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return default


def _env_float(name: str, default: float) -> float:
    raw = _env(name, str(default))
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"TRAINERAGENT_{name}={raw!r} is not a number") from exc


def _env_int(name: str, default: int) -> int:
    raw = _env(name, str(default))
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"TRAINERAGENT_{name}={raw!r} is not an integer") from exc


@dataclasses.dataclass(frozen=True)
class Settings:
    """Settings shared by all services."""

    nats_url: str = "nats://127.0.0.1:4222"
    # Where each service listens (bind) and where the others find it (address).
    bind_host: str = "127.0.0.1"
    gateway_port: int = 50051
    task_port: int = 50061
    data_port: int = 50062
    model_port: int = 50063
    server_port: int = 50064
    gateway_addr: str = "127.0.0.1:50051"
    task_addr: str = "127.0.0.1:50061"
    data_addr: str = "127.0.0.1:50062"
    model_addr: str = "127.0.0.1:50063"
    server_addr: str = "127.0.0.1:50064"
    # Inference endpoints take ports from here upwards; advertised on endpoint_host.
    endpoint_port_start: int = 50100
    endpoint_host: str = "127.0.0.1"
    # A service's own scratch space (never shared with another service).
    work_dir: pathlib.Path = pathlib.Path(".trainer-agent/work")
    # Server paths a job may name (DatasetRef.server_path), separated by os.pathsep.
    data_roots: tuple[pathlib.Path, ...] = ()
    # Training budget when the request names none, in seconds.
    default_train_budget_s: float = 600.0
    # Most epochs a trial may run (tests turn this down).
    max_epochs: int = 40
    # Largest upload accepted, in bytes.
    max_upload_bytes: int = 2 * 1024**3
    # Timeout of unary calls between services, in seconds.
    rpc_timeout_s: float = 30.0
    # Grace period for in-flight calls on SIGTERM.
    shutdown_grace_s: float = 5.0
    # Prometheus metrics port of a service (0: off).
    metrics_port: int = 0
    log_level: str = "INFO"
    log_format: str = "auto"  # auto | json | console
    # API keys the gateway accepts (comma separated); empty: no authentication (local user).
    api_keys: tuple[str, ...] = ()
    # The LLM brain (OpenAI-compatible endpoint); empty base URL: the rule brain.
    llm_base_url: str = ""
    llm_model: str = ""
    llm_timeout_s: float = 30.0
    # Torch device for training workers: auto | cpu | cuda.
    device: str = "auto"
    worker_name: str = ""

    @classmethod
    def from_env(cls) -> Settings:
        bind_host = _env("BIND_HOST", cls.bind_host)
        ports = {
            name: _env_int(f"{name.upper()}_PORT", getattr(cls, f"{name}_port"))
            for name in ("gateway", "task", "data", "model", "server")
        }
        addrs = {
            name: _env(f"{name.upper()}_ADDR", f"127.0.0.1:{ports[name]}")
            for name in ports
        }
        roots = tuple(
            pathlib.Path(p).expanduser().resolve()
            for p in _env("DATA_ROOTS", "").split(os.pathsep)
            if p.strip()
        )
        keys = tuple(k.strip() for k in _env("API_KEYS", "").split(",") if k.strip())
        return cls(
            nats_url=_env("NATS_URL", cls.nats_url),
            bind_host=bind_host,
            gateway_port=ports["gateway"],
            task_port=ports["task"],
            data_port=ports["data"],
            model_port=ports["model"],
            server_port=ports["server"],
            gateway_addr=addrs["gateway"],
            task_addr=addrs["task"],
            data_addr=addrs["data"],
            model_addr=addrs["model"],
            server_addr=addrs["server"],
            endpoint_port_start=_env_int("ENDPOINT_PORT_START", cls.endpoint_port_start),
            endpoint_host=_env("ENDPOINT_HOST", cls.endpoint_host),
            work_dir=pathlib.Path(_env("WORK_DIR", str(cls.work_dir))).expanduser(),
            data_roots=roots,
            default_train_budget_s=_env_float("TRAIN_BUDGET_S", cls.default_train_budget_s),
            max_epochs=_env_int("MAX_EPOCHS", cls.max_epochs),
            max_upload_bytes=_env_int("MAX_UPLOAD_BYTES", cls.max_upload_bytes),
            rpc_timeout_s=_env_float("RPC_TIMEOUT_S", cls.rpc_timeout_s),
            shutdown_grace_s=_env_float("SHUTDOWN_GRACE_S", cls.shutdown_grace_s),
            metrics_port=_env_int("METRICS_PORT", cls.metrics_port),
            log_level=_env("LOG_LEVEL", cls.log_level).upper(),
            log_format=_env("LOG_FORMAT", cls.log_format),
            api_keys=keys,
            llm_base_url=_env("LLM_BASE_URL", cls.llm_base_url),
            llm_model=_env("LLM_MODEL", cls.llm_model),
            llm_timeout_s=_env_float("LLM_TIMEOUT_S", cls.llm_timeout_s),
            device=_env("DEVICE", cls.device),
            worker_name=_env("WORKER_NAME", cls.worker_name),
        )
