"""The NATS side against a real nats-server: idempotent resources, compare-and-set, replay, artifacts."""

from __future__ import annotations

import asyncio
import os

import pytest

from services.common.artifacts import NatsArtifactStore
from services.common.bus import Bus, new_id
from services.common.errors import NotFound
from traineragent.v1 import common_pb2


@pytest.mark.asyncio
async def test_resources_are_idempotent_and_updates_compare_and_set(nats_url):
    first = await Bus.connect(nats_url, "test-a")
    second = await Bus.connect(nats_url, "test-b")  # creating the same streams and buckets again is fine
    try:
        job = common_pb2.Job(job_id=new_id(), state=common_pb2.JOB_STATE_PENDING)
        await first.create_job(job)

        async def bump(bus: Bus) -> None:
            for _ in range(20):
                await bus.update_job(job.job_id, lambda j: j.answers.__setitem__(str(len(j.answers)), "x"))

        await asyncio.gather(bump(first), bump(second))
        stored, _ = await first.get_job(job.job_id)
        assert len(stored.answers) == 40, "a concurrent update was lost"
        assert job.job_id in {j.job_id for j in await second.list_jobs()}
        with pytest.raises(NotFound, match="trainer-agent jobs"):
            await first.get_job("no-such-job")
        with pytest.raises(NotFound):
            await first.get_job("bad key with spaces")
    finally:
        await first.close()
        await second.close()


@pytest.mark.asyncio
async def test_events_replay_in_order_and_duplicates_are_dropped(nats_url):
    bus = await Bus.connect(nats_url, "test-events")
    try:
        job_id = new_id()
        for i in range(3):
            await bus.publish_event(common_pb2.JobEvent(job_id=job_id, message=f"e{i}"), msg_id=f"{job_id}-{i}")
        await bus.publish_event(common_pb2.JobEvent(job_id=job_id, message="e2 again"), msg_id=f"{job_id}-2")
        events = [e async for e in bus.event_history(job_id, idle_timeout_s=0.5)]
        assert [(e.seq, e.message) for e in events] == [(0, "e0"), (1, "e1"), (2, "e2")]
        assert all(e.time.seconds for e in events)
        waited = await bus.wait_for_event(job_id, lambda e: e.message == "e1", timeout_s=5)
        assert waited.seq == 1
        with pytest.raises(TimeoutError):
            await bus.wait_for_event(job_id, lambda e: e.message == "never", timeout_s=0.5)
    finally:
        await bus.close()


@pytest.mark.asyncio
async def test_artifacts_by_content_hash(nats_url, tmp_path):
    bus = await Bus.connect(nats_url, "test-artifacts")
    try:
        store = NatsArtifactStore(bus.js)
        data = os.urandom(2_500_000)
        key = await store.put_bytes(data)
        assert key.startswith("sha256-") and await store.put_bytes(data) == key
        assert await store.size(key) == len(data)
        path = tmp_path / "blob"
        path.write_bytes(data)
        assert await store.put_file(path) == key
        assert (await store.get_to_file(key, tmp_path / "copy")).read_bytes() == data
        assert not await store.exists("sha256-" + "0" * 64)
        with pytest.raises(NotFound):
            await store.get_bytes("sha256-" + "0" * 64)
    finally:
        await bus.close()
