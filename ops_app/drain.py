"""Draining: a process that is about to stop takes no new sessions and hands its calls'
sidebands over to other processes. Two ways in: the marker, a file in VAR_DIR that
every process of a pod (or container) shares, so `manage.py drain` run beside the
server (a preStop hook) reaches it; and SIGTERM, which drains the process it reaches.

A marker made before a process started is not that process's: a container restarted
in a pod whose old process drained must not start out draining."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog
from django.conf import settings

log = structlog.get_logger(__name__)

_started_at = time.time()
_here = threading.Event()  # this process received SIGTERM
_handing_over: set[asyncio.Task] = set()  # referenced until done


def marker() -> Path:
    return Path(settings.VAR_DIR) / "draining"


def is_draining() -> bool:
    if _here.is_set():
        return True
    try:
        return marker().stat().st_mtime >= _started_at
    except FileNotFoundError:
        return False


def start() -> None:
    path = marker()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def stop() -> None:
    _here.clear()
    marker().unlink(missing_ok=True)


def on_sigterm(hand_over: Callable[[], Awaitable[object]], bound: float) -> bool:
    """Makes SIGTERM drain this process: it stops taking sessions, runs hand_over
    (at most `bound` seconds), then stops as it would have (the handler it replaces,
    e.g. daphne's reactor's). Call from the main thread with the server's loop
    running; False where signals cannot be handled."""
    if threading.current_thread() is not threading.main_thread():
        return False
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)

    def stop_as_before(signum: int, frame) -> None:
        if callable(previous):
            previous(signum, frame)
        else:
            signal.signal(signal.SIGTERM, previous or signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    async def drain_then_stop(signum: int, frame) -> None:
        started = time.monotonic()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(hand_over(), bound)
        log.info("drained_on_sigterm", seconds=round(time.monotonic() - started, 3))
        stop_as_before(signum, frame)

    def handler(signum: int, frame) -> None:
        if _here.is_set():  # a second SIGTERM: stop now
            stop_as_before(signum, frame)
            return
        _here.set()
        log.info("sigterm_draining")
        loop.call_soon_threadsafe(_start, loop.create_task, drain_then_stop(signum, frame))

    signal.signal(signal.SIGTERM, handler)
    return True


def _start(create_task, coroutine) -> None:
    task = create_task(coroutine)
    _handing_over.add(task)
    task.add_done_callback(_handing_over.discard)
