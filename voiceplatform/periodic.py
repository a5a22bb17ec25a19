"""Periodic work without a beat process: in the embedded default (tasks in-process, no
broker) the beat schedule (CELERY_BEAT_SCHEDULE) runs on a thread of the server, so
abandoned sessions expire and lost tool calls are failed there too. With Redis, the
run command starts a worker with beat instead."""

from __future__ import annotations

import logging
import threading
import time

import structlog
from django.conf import settings
from django.db import close_old_connections

from voiceplatform.celery import app
from voiceplatform.logconfig import PERIODIC_THREAD

log = structlog.get_logger(__name__)

_started = threading.Event()


def start_in_process() -> bool:
    """Starts the schedule on a daemon thread, once per process; False when this
    process should not run it (a broker and a beat process do that)."""
    if not settings.PERIODIC_IN_PROCESS or _started.is_set():
        return False
    _started.set()
    threading.Thread(target=_loop, name=PERIODIC_THREAD, daemon=True).start()
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
        # This thread's database connection may have died since the last run (a
        # database restart): drop it, as Django does around each request.
        close_old_connections()
        try:
            result = app.tasks[entry["task"]].apply().result
        except Exception:  # one failed run must not stop the schedule
            log.exception("periodic_task_failed", task=entry["task"])
        else:
            # Every 30 s a run that found nothing to do: worth a line only when debugging.
            level = logging.INFO if did_something(result) else logging.DEBUG
            log.log(level, "periodic_task_ran", task=entry["task"], result=result)
        finally:
            close_old_connections()
        due[name] = time.monotonic() + float(entry["schedule"])


def did_something(result: object) -> bool:
    """Whether a periodic task's result counts any work: a number above zero, or a
    mapping of counts with one above zero (retention)."""
    if isinstance(result, dict):
        return any(did_something(value) for value in result.values())
    if isinstance(result, bool) or result is None:
        return bool(result)
    if isinstance(result, int | float):
        return result > 0
    return True
