"""The Server agent: deploys model bundles as Open Inference Protocol v2 endpoints and proves their latency.

Each deployment is its own gRPC server on its own port (from ``endpoint_port_start`` up), running
onnxruntime in this process with the training preprocessing inside: image, text and table bundles
alike, each through the runtime :func:`load_runtime` picks by the bundle's task type. Latency is measured by a
client in another process after warm-up. Records live in the ``traineragent_deployments`` KV
bucket, and on start every recorded deployment is brought back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import pathlib
import shutil
import time

from services.common.artifacts import ArtifactStore
from services.common.bundle import read_bundle
from services.common.bus import Bus
from services.common.config import Settings
from services.common.errors import InvalidArgument, NotFound, TrainerAgentError
from services.common.jsonfmt import enum_from_json
from services.common.logging import get_logger
from services.server.bench import benchmark_endpoint
from services.server.endpoint import Endpoint, find_free_port
from services.server.oip import InferenceServicer
from services.server.runtime import Runtime, load_runtime
from traineragent.v1 import common_pb2, server_pb2

log = get_logger(__name__)

BENCH_WARMUP = 50
BENCH_REQUESTS = 300
BENCH_TIMEOUT_S = 180.0


@dataclasses.dataclass
class LiveDeployment:
    record: common_pb2.Deployment
    endpoint: Endpoint
    runtime: Runtime
    directory: pathlib.Path


class ServerAgent:
    def __init__(self, bus: Bus, store: ArtifactStore, settings: Settings) -> None:
        self.bus = bus
        self.store = store
        self.settings = settings
        self.live: dict[str, LiveDeployment] = {}
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    # --- calls ---------------------------------------------------------------------------------

    def start_deploy(self, request: server_pb2.DeployRequest) -> None:
        if not request.name or not request.bundle_artifact:
            raise InvalidArgument("a deployment needs a name and a bundle_artifact")
        task = asyncio.create_task(self._deploy_job(request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def list_deployments(self) -> list[common_pb2.Deployment]:
        records = await self.bus.list_deployments()
        for record in records:
            record.status = "ready" if record.name in self.live else "stopped"
        return sorted(records, key=lambda d: d.created_at.seconds, reverse=True)

    async def delete_deployment(self, name: str) -> common_pb2.Deployment:
        async with self._lock:
            record = await self.bus.get_deployment(name)
            live = self.live.pop(name, None)
            if live is not None:
                await asyncio.to_thread(live.endpoint.stop, 2.0)
                shutil.rmtree(live.directory, ignore_errors=True)
            await self.bus.delete_deployment(name)
        record.status = "stopped"
        log.info("deployment_deleted", name=name)
        return record

    # --- lifecycle ---------------------------------------------------------------------------------

    async def restore(self) -> None:
        """Bring back every recorded deployment, on its recorded port when that port is free."""
        for record in await self.bus.list_deployments():
            try:
                port = int(record.endpoint.rsplit(":", 1)[1]) if ":" in record.endpoint else 0
                live = await self._serve(record.name, record.bundle_artifact, preferred_port=port)
                record.endpoint = live.record.endpoint
                live.record = record
                await self.bus.put_deployment(record)
                log.info("deployment_restored", name=record.name, endpoint=record.endpoint)
            except Exception:  # noqa: BLE001 - one broken record must not stop the others
                log.exception("deployment_restore_failed", name=record.name)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for live in self.live.values():
            await asyncio.to_thread(live.endpoint.stop, 2.0)
        self.live.clear()

    # --- work ---------------------------------------------------------------------------------------

    async def _deploy_job(self, request: server_pb2.DeployRequest) -> None:
        job_id, op = request.job_id, request.operation_id
        started = time.monotonic()
        await self._event(job_id, op, common_pb2.EVENT_KIND_STAGE_STARTED, f"deploying {request.name}")
        try:
            live = await self._serve(request.name, request.bundle_artifact, preferred_port=0)
            record = live.record
            record.job_id = job_id
            await self._event(job_id, op, common_pb2.EVENT_KIND_DECISION,
                              f"endpoint {record.endpoint} is serving {record.model_name}; measuring latency")
            sample = live.runtime.sample_inputs[0] if live.runtime.sample_inputs else None
            if sample is None:
                raise TrainerAgentError("the model bundle has no sample input to benchmark with")
            bench = await benchmark_endpoint(record.endpoint, record.model_name, sample, live.directory,
                                             BENCH_WARMUP, BENCH_REQUESTS, BENCH_TIMEOUT_S)
            record.latency_ms.CopyFrom(common_pb2.LatencyStats(**bench["latency_ms"]))
            if bench.get("raw_onnx_latency_ms"):
                record.raw_onnx_latency_ms.CopyFrom(common_pb2.LatencyStats(**bench["raw_onnx_latency_ms"]))
            if request.HasField("max_latency_ms") and record.latency_ms.p95 > request.max_latency_ms:
                await self._event(job_id, op, common_pb2.EVENT_KIND_WARNING,
                                  f"p95 latency {record.latency_ms.p95:.2f} ms is above the target "
                                  f"{request.max_latency_ms:g} ms")
            await self.bus.put_deployment(record)
            seconds = round(time.monotonic() - started, 3)
            message = (f"{record.model_name} live at {record.endpoint}: p50 {record.latency_ms.p50:.2f} ms, "
                       f"p95 {record.latency_ms.p95:.2f} ms (bare ONNX p50 {record.raw_onnx_latency_ms.p50:.3f} ms)")
            event = self._make_event(job_id, op, common_pb2.EVENT_KIND_STAGE_FINISHED, message)
            event.deployment.CopyFrom(record)
            event.metrics["seconds"] = seconds
            await self.bus.publish_event(event)
            log.info("deployed", name=record.name, endpoint=record.endpoint, p95=record.latency_ms.p95)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the job must hear about it
            if isinstance(exc, TrainerAgentError):
                message = exc.message
            else:
                log.exception("deploy_crashed", job_id=job_id)
                message = f"internal error in the Server agent ({type(exc).__name__}); the server service log has details"
            await self._event(job_id, op, common_pb2.EVENT_KIND_STAGE_FINISHED, f"deploy failed: {message}",
                              error=message)

    async def _serve(self, name: str, bundle_key: str, preferred_port: int) -> LiveDeployment:
        """Fetch a bundle and serve it under ``name`` (replacing what served that name before)."""
        directory = self.settings.work_dir / "deployments" / name / bundle_key
        tar_path = directory.with_suffix(".tar")
        try:
            await self.store.get_to_file(bundle_key, tar_path)
        except NotFound as exc:
            raise TrainerAgentError(f"the model bundle {bundle_key} is not in the artifact store") from exc
        await asyncio.to_thread(read_bundle, tar_path, directory)
        tar_path.unlink(missing_ok=True)
        runtime = await asyncio.to_thread(load_runtime, directory)
        async with self._lock:
            old = self.live.pop(name, None)
            if old is not None:
                await asyncio.to_thread(old.endpoint.stop, 2.0)
            servicer = InferenceServicer()
            servicer.add_model(name, runtime)
            endpoint = Endpoint(servicer)
            port = self._port(preferred_port)
            bound = await asyncio.to_thread(endpoint.start, self.settings.bind_host, port)
            record = common_pb2.Deployment(
                name=name,
                model_name=name,
                endpoint=f"{self.settings.endpoint_host}:{bound}",
                bundle_artifact=bundle_key,
                classes=list(runtime.classes),
                task_type=enum_from_json(common_pb2.TaskType.DESCRIPTOR, runtime.task_type),
                inputs=[i["name"] for i in runtime.inputs()],
                outputs=[o["name"] for o in runtime.outputs()],
                status="ready",
                model_size_mb=round(runtime.size_bytes / 1e6, 4),
            )
            record.created_at.GetCurrentTime()
            live = LiveDeployment(record=record, endpoint=endpoint, runtime=runtime, directory=directory)
            self.live[name] = live
        return live

    def _port(self, preferred: int) -> int:
        if preferred:
            try:
                return find_free_port(self.settings.bind_host, preferred, attempts=1)
            except Exception:  # noqa: BLE001 - taken: any free one will do
                pass
        return find_free_port(self.settings.bind_host, self.settings.endpoint_port_start)

    def _make_event(self, job_id: str, op: str, kind: int, message: str, error: str = "") -> common_pb2.JobEvent:
        return common_pb2.JobEvent(job_id=job_id, state=common_pb2.JOB_STATE_RUNNING, stage=common_pb2.STAGE_DEPLOY,
                                   kind=kind, message=message, operation_id=op, source="server", error=error)

    async def _event(self, job_id: str, op: str, kind: int, message: str, error: str = "") -> None:
        await self.bus.publish_event(self._make_event(job_id, op, kind, message, error))
