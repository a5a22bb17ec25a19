"""The Celery app; tasks run in-process (eager) in the embedded default."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voiceplatform.settings")

app = Celery("voiceplatform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Touches the worker's heartbeat file for its container health check.
app.steps["worker"].add("voiceplatform.heartbeat.WorkerHeartbeat")


async def enqueue(task, *args) -> None:
    """Queues a task from async code without blocking the event loop (publishing to the
    broker, or running it in-process in the embedded default, is blocking work)."""
    from asgiref.sync import sync_to_async

    # Not the shared thread: an in-process task may run for minutes (a bash tool), and
    # the shared thread serialises every request's database access.
    await sync_to_async(task.delay, thread_sensitive=False)(*args)
