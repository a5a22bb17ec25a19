"""Metrics observed inside a Celery worker reach Prometheus through the worker's own
port (WORKER_METRICS_PORT, with PROMETHEUS_MULTIPROC_DIR for its pool processes)."""

from __future__ import annotations

import os
import re
import signal
from datetime import timedelta

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from sessions_app.models import VoiceSession
from sessions_app.tasks import expire_sessions_task
from tests.support import eventually, free_port, start_worker, wait_for_worker
from voiceplatform.celery import app as celery_app

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def metered_worker(settings, tmp_path):
    celery_app.conf.task_always_eager = False
    settings.CELERY_TASK_ALWAYS_EAGER = False
    celery_app.control.purge()
    port = free_port()
    (tmp_path / "prom").mkdir()
    process = start_worker(
        "metered",
        tmp_path / "metered.log",
        env={
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
            "WORKER_METRICS_PORT": str(port),
            "WORKER_METRICS_ADDR": "127.0.0.1",
        },
    )
    wait_for_worker("metered")
    yield port
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    celery_app.control.purge()
    celery_app.conf.task_always_eager = True


async def test_a_session_ended_by_the_workers_sweep_is_counted_at_the_workers_port(
    metered_worker,
):
    overdue = await VoiceSession.objects.acreate(
        status="active",
        model="gpt-realtime",
        voice="marin",
        expires_at=timezone.now() - timedelta(seconds=1),
        connected_at=timezone.now() - timedelta(minutes=2),
    )

    await sync_to_async(expire_sessions_task.delay)()

    async def expired():
        return (await VoiceSession.objects.aget(pk=overdue.pk)).status == "expired"

    assert await eventually(expired, timeout=30)
    async with httpx.AsyncClient(timeout=5) as http:
        page = (await http.get(f"http://127.0.0.1:{metered_worker}/metrics")).text
    count = re.search(r"^voice_session_duration_seconds_count (\S+)$", page, re.MULTILINE)
    assert count and float(count.group(1)) >= 1


async def test_a_call_the_workers_sweep_fails_counts_a_tools_error_at_the_workers_port(
    metered_worker, settings
):
    from tools_app.models import ToolExecution
    from tools_app.tasks import fail_lost_executions_task

    session = await VoiceSession.objects.acreate(
        status="active", model="gpt-realtime", expires_at=timezone.now() + timedelta(minutes=10)
    )
    longest = max(settings.TOOL_TIMEOUT_SECONDS, settings.TASK_MAX_SECONDS)
    lost = await ToolExecution.objects.acreate(
        session=session,
        call_id="call_lost",
        tool="bash",
        status="running",
        started_at=timezone.now() - timedelta(seconds=longest + 120),
    )

    await sync_to_async(fail_lost_executions_task.delay)()

    async def failed():
        return (await ToolExecution.objects.aget(pk=lost.pk)).failure == "worker_lost"

    assert await eventually(failed, timeout=30)
    async with httpx.AsyncClient(timeout=5) as http:
        page = (await http.get(f"http://127.0.0.1:{metered_worker}/metrics")).text
    errors = re.search(
        r'^voice_errors_total\{component="tools",error_type="worker_lost"\} (\S+)$',
        page,
        re.MULTILINE,
    )
    assert errors and float(errors.group(1)) >= 1
