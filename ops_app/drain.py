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
_in_flight: set[object] = set()  # the HTTP requests this process is answering


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


@contextlib.contextmanager
def answering():
    """Around an HTTP request: a SIGTERM lets it finish before the process stops."""
    ticket = object()
    _in_flight.add(ticket)
    try:
        yield
    finally:
        _in_flight.discard(ticket)


async def _answered(waiting: set[object], deadline: float) -> int:
    """Waits until the requests of waiting (those in flight at the signal) have been
    answered, or the deadline (time.monotonic()) passed; returns how many were still in
    flight then. Later ones are not waited for: a draining process refuses new work."""
    while waiting and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        waiting &= _in_flight
    return len(waiting)


def on_sigterm(hand_over: Callable[[], Awaitable[object]], bound: float) -> bool:
    """Makes SIGTERM drain this process: it stops taking sessions, runs hand_over and
    lets the HTTP requests in flight be answered (at most `bound` seconds in all), then
    stops as it would have (the handler it replaces, e.g. daphne's reactor's, which
    drops open connections). Call from the main thread with the server's loop running;
    False where signals cannot be handled."""
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
        in_flight = set(_in_flight)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(hand_over(), bound)
        unanswered = await _answered(in_flight, started + bound)
        if in_flight:
            await asyncio.sleep(0.1)  # the last answers' bytes leave before the sockets close
        log.info(
            "drained_on_sigterm",
            seconds=round(time.monotonic() - started, 3),
            requests_cut=unanswered,
        )
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
