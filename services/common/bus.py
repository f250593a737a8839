"""The NATS JetStream side of TrainerAgent: streams, job records (KV), events and the work queue.

Every resource of DESIGN.md ("NATS JetStream") is created idempotently by :meth:`Bus.connect`,
so any service may start first. Payloads are serialized protobuf messages; every publish carries a
``Nats-Msg-Id`` so a retried publish is stored once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import nats
from google.protobuf.message import Message
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js import errors as js_errors
from nats.js.kv import KeyValue

from services.common.errors import NotFound, Unavailable
from services.common.logging import get_logger
from traineragent.v1 import common_pb2

log = get_logger(__name__)

EVENTS_STREAM = "TRAINERAGENT_EVENTS"
EVENTS_SUBJECTS = "traineragent.jobs.*.events"
WORK_STREAM = "TRAINERAGENT_WORK"
WORK_SUBJECTS = "traineragent.work.>"
TRIALS_SUBJECT = "traineragent.work.trials"
WORKERS_CONSUMER = "trainer-workers"
JOBS_BUCKET = "traineragent_jobs"
DEPLOYMENTS_BUCKET = "traineragent_deployments"
ARTIFACTS_BUCKET = "traineragent_artifacts"

# A trial's message is redelivered when its worker neither acks nor reports progress for this long.
WORK_ACK_WAIT_S = 60.0
WORK_MAX_DELIVER = 3

TERMINAL_STATES = frozenset(
    {
        common_pb2.JOB_STATE_SUCCEEDED,
        common_pb2.JOB_STATE_REJECTED,
        common_pb2.JOB_STATE_FAILED,
        common_pb2.JOB_STATE_CANCELLED,
    }
)

M = TypeVar("M", bound=Message)


def events_subject(job_id: str) -> str:
    return f"traineragent.jobs.{job_id}.events"


def new_id() -> str:
    """A short random id for jobs, operations and trials (hex, safe in NATS subjects and KV keys)."""
    return uuid.uuid4().hex[:16]


class Bus:
    """A NATS connection with the project's JetStream resources."""

    def __init__(self, nc: NATS, js: JetStreamContext, jobs: KeyValue, deployments: KeyValue) -> None:
        self.nc = nc
        self.js = js
        self.jobs = jobs
        self.deployments = deployments

    @classmethod
    async def connect(cls, url: str, name: str, connect_timeout_s: float = 30.0) -> Bus:
        """Connect (retrying until ``connect_timeout_s``) and create every stream and bucket if missing."""
        deadline = time.monotonic() + connect_timeout_s
        while True:
            try:
                nc = await nats.connect(
                    url,
                    name=name,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                    allow_reconnect=True,
                    error_cb=_log_nats_error,
                    disconnected_cb=_log_disconnected,
                    reconnected_cb=_log_reconnected,
                )
                break
            except Exception as exc:  # noqa: BLE001 - nats raises several types while the server starts
                if time.monotonic() > deadline:
                    raise Unavailable(f"cannot reach NATS at {url}: {exc}; is nats-server running?") from exc
                await asyncio.sleep(0.3)
        js = nc.jetstream(timeout=10)
        await ensure_stream(
            js,
            js_api.StreamConfig(
                name=EVENTS_STREAM,
                subjects=[EVENTS_SUBJECTS],
                retention=js_api.RetentionPolicy.LIMITS,
                storage=js_api.StorageType.FILE,
                max_age=30 * 24 * 3600,
                duplicate_window=120,
            ),
        )
        await ensure_stream(
            js,
            js_api.StreamConfig(
                name=WORK_STREAM,
                subjects=[WORK_SUBJECTS],
                retention=js_api.RetentionPolicy.WORK_QUEUE,
                storage=js_api.StorageType.FILE,
                duplicate_window=120,
            ),
        )
        jobs = await ensure_kv(js, JOBS_BUCKET, history=16)
        deployments = await ensure_kv(js, DEPLOYMENTS_BUCKET, history=4)
        await ensure_object_store(js, ARTIFACTS_BUCKET)
        return cls(nc, js, jobs, deployments)

    async def close(self) -> None:
        """Flush what is pending and close (``drain``), as on shutdown."""
        if not self.nc.is_closed:
            try:
                await self.nc.drain()
            except Exception:  # noqa: BLE001 - closing anyway
                await self.nc.close()

    # --- events -------------------------------------------------------------------------------

    async def publish_event(self, event: common_pb2.JobEvent, msg_id: str | None = None) -> None:
        """Publish a job event; the time is stamped here when unset. Retries keep the same msg id."""
        if not event.time.seconds:
            event.time.GetCurrentTime()
        msg_id = msg_id or new_id()
        payload = event.SerializeToString()
        for attempt in range(5):
            try:
                await self.js.publish(
                    events_subject(event.job_id), payload, headers={"Nats-Msg-Id": msg_id}, timeout=5
                )
                return
            except (nats.errors.TimeoutError, js_errors.NoStreamResponseError) as exc:
                if attempt == 4:
                    raise Unavailable(f"cannot publish the job event: {exc}") from exc
                await asyncio.sleep(0.2 * (attempt + 1))

    async def event_history(
        self, job_id: str, idle_timeout_s: float | None = None
    ) -> AsyncIterator[common_pb2.JobEvent]:
        """Every event of a job from the first, then new ones as they come (seq = position from 0).

        With ``idle_timeout_s`` the iteration ends after that long without a new event.
        """
        sub = await self.js.subscribe(
            events_subject(job_id),
            ordered_consumer=True,
            deliver_policy=js_api.DeliverPolicy.ALL,
            stream=EVENTS_STREAM,
        )
        seq = 0
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=idle_timeout_s if idle_timeout_s else 3600 * 24)
                except nats.errors.TimeoutError:
                    if idle_timeout_s:
                        return
                    continue
                event = common_pb2.JobEvent.FromString(msg.data)
                event.seq = seq
                seq += 1
                yield event
        finally:
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001 - the connection may be closing
                pass

    async def wait_for_event(
        self,
        job_id: str,
        match: Callable[[common_pb2.JobEvent], bool],
        timeout_s: float,
    ) -> common_pb2.JobEvent:
        """The first event of the job (replayed or new) for which ``match`` is true."""

        async def first() -> common_pb2.JobEvent:
            async for event in self.event_history(job_id):
                if match(event):
                    return event
            raise AssertionError("event history ended")  # pragma: no cover - history never ends by itself

        return await asyncio.wait_for(first(), timeout_s)

    # --- job records --------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> tuple[common_pb2.Job, int]:
        """The job record and its KV revision."""
        entry = await _entry(self.jobs, job_id, f"job {job_id!r} not found; `trainer-agent jobs` lists the jobs")
        return common_pb2.Job.FromString(entry.value), entry.revision

    async def create_job(self, job: common_pb2.Job) -> int:
        return await self.jobs.create(job.job_id, job.SerializeToString())

    async def update_job(
        self, job_id: str, mutate: Callable[[common_pb2.Job], bool | None]
    ) -> common_pb2.Job:
        """Compare-and-set loop: apply ``mutate`` to the latest record; ``mutate`` returning False skips the write."""
        while True:
            job, revision = await self.get_job(job_id)
            if mutate(job) is False:
                return job
            job.updated_at.GetCurrentTime()
            try:
                await self.jobs.update(job_id, job.SerializeToString(), last=revision)
                return job
            except js_errors.KeyWrongLastSequenceError:
                continue

    async def list_jobs(self) -> list[common_pb2.Job]:
        return [common_pb2.Job.FromString(value) for value in await _values(self.jobs)]

    # --- deployments --------------------------------------------------------------------------

    async def put_deployment(self, deployment: common_pb2.Deployment) -> None:
        await self.deployments.put(deployment.name, deployment.SerializeToString())

    async def get_deployment(self, name: str) -> common_pb2.Deployment:
        message = f"deployment {name!r} not found; `trainer-agent deployments` lists them"
        return common_pb2.Deployment.FromString((await _entry(self.deployments, name, message)).value)

    async def delete_deployment(self, name: str) -> None:
        await self.deployments.delete(name)

    async def list_deployments(self) -> list[common_pb2.Deployment]:
        return [common_pb2.Deployment.FromString(value) for value in await _values(self.deployments)]

    # --- work queue ---------------------------------------------------------------------------

    async def enqueue_trial(self, spec: Message, trial_key: str) -> None:
        """Put a trial on the work queue, de-duplicated by ``trial_key``."""
        await self.js.publish(
            TRIALS_SUBJECT, spec.SerializeToString(), headers={"Nats-Msg-Id": trial_key}, timeout=10
        )

    async def trial_subscription(self) -> JetStreamContext.PullSubscription:
        """The shared durable pull consumer every training worker fetches trials from."""
        return await self.js.pull_subscribe(
            TRIALS_SUBJECT,
            durable=WORKERS_CONSUMER,
            stream=WORK_STREAM,
            config=js_api.ConsumerConfig(
                ack_policy=js_api.AckPolicy.EXPLICIT,
                ack_wait=WORK_ACK_WAIT_S,
                max_deliver=WORK_MAX_DELIVER,
                max_ack_pending=64,
            ),
        )


async def _log_nats_error(exc: Exception) -> None:
    log.debug("nats_error", error=str(exc) or type(exc).__name__)


async def _log_disconnected() -> None:
    log.warning("nats_disconnected")


async def _log_reconnected() -> None:
    log.info("nats_reconnected")


async def _entry(kv: KeyValue, key: str, not_found: str) -> KeyValue.Entry:
    """The entry under ``key``; NotFound with ``not_found`` as its message when there is none."""
    if not _valid_key(key):
        raise NotFound(not_found)
    try:
        return await kv.get(key)
    except (js_errors.KeyNotFoundError, js_errors.KeyDeletedError) as exc:
        raise NotFound(not_found) from exc


async def _values(kv: KeyValue) -> list[bytes]:
    """Every live value in a bucket (keys deleted meanwhile are skipped)."""
    try:
        keys = await kv.keys()
    except js_errors.NoKeysError:
        return []
    values = []
    for key in keys:
        try:
            values.append((await kv.get(key)).value)
        except (js_errors.KeyNotFoundError, js_errors.KeyDeletedError):
            continue
    return values


def _valid_key(key: str) -> bool:
    return bool(key) and all(c.isalnum() or c in "-_=." for c in key) and not key.startswith(".")


async def ensure_stream(js: JetStreamContext, config: js_api.StreamConfig) -> None:
    """Create the stream, or bring an existing one to ``config``."""
    try:
        await js.add_stream(config)
    except js_errors.BadRequestError:
        await js.update_stream(config)


async def ensure_kv(js: JetStreamContext, bucket: str, history: int) -> KeyValue:
    try:
        return await js.key_value(bucket)
    except js_errors.BucketNotFoundError:
        return await js.create_key_value(bucket=bucket, history=history)


async def ensure_object_store(js: JetStreamContext, bucket: str) -> None:
    try:
        await js.object_store(bucket)
    except js_errors.BucketNotFoundError:
        await js.create_object_store(bucket=bucket)
