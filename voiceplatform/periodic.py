"""Periodic work without a beat process: in the embedded default (tasks in-process, no
broker) the beat schedule (CELERY_BEAT_SCHEDULE) runs on a thread of the server, so
abandoned sessions expire and lost tool calls are failed there too. With Redis, the
run command starts a worker with beat instead."""

from __future__ import annotations

import threading
import time

import structlog
from django.conf import settings

from voiceplatform.celery import app

log = structlog.get_logger(__name__)

_started = threading.Event()


def start_in_process() -> bool:
    """Starts the schedule on a daemon thread, once per process; False when this
    process should not run it (a broker and a beat process do that)."""
    if not settings.PERIODIC_IN_PROCESS or _started.is_set():
        return False
    _started.set()
    threading.Thread(target=_loop, name="periodic", daemon=True).start()
    return True


def _loop() -> None:
    due = {
        name: time.monotonic() + float(entry["schedule"])
        for name, entry in settings.CELERY_BEAT_SCHEDULE.items()
    }
    while True:
        name, at = min(due.items(), key=lambda item: item[1])
        time.sleep(max(0.0, at - time.monotonic()))
        entry = settings.CELERY_BEAT_SCHEDULE[name]
        try:
            app.tasks[entry["task"]].apply()
        except Exception:  # one failed run must not stop the schedule
            log.exception("periodic_task_failed", task=entry["task"])
        due[name] = time.monotonic() + float(entry["schedule"])
