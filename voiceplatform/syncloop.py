"""Async code called from the synchronous code of a Celery worker, on one event loop
per thread that is kept: what binds to a loop (the channel layer's Redis connections)
is made once per worker process, not again for every call. asgiref's async_to_sync
would start a thread and a loop per call there. Elsewhere (in a server, where sync
code runs on threads below the server's loop) it is async_to_sync as before."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from asgiref.sync import async_to_sync

P = ParamSpec("P")
R = TypeVar("R")

_local = threading.local()
_enabled = False


def enable() -> None:
    """In a worker process (celery's worker_process_init): keep a loop per thread."""
    global _enabled
    _enabled = True


def _loop() -> asyncio.AbstractEventLoop:
    loop = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = _local.loop = asyncio.new_event_loop()
    return loop


def run(awaitable: Awaitable[R]) -> R:
    """Runs a coroutine to its end from synchronous code: on this thread's kept loop in
    a worker, on a loop of its own (asyncio.run) elsewhere. As asyncio.run does, what
    the coroutine started and left running is cancelled when it returns."""
    if not _enabled:
        return asyncio.run(awaitable)
    loop = _loop()
    before = asyncio.all_tasks(loop)
    try:
        return loop.run_until_complete(awaitable)
    finally:
        left = [task for task in asyncio.all_tasks(loop) - before if not task.done()]
        for task in left:
            task.cancel()
        if left:
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))


def from_sync(function: Callable[P, Awaitable[R]]) -> Callable[P, R]:
    bridged = async_to_sync(function)

    @functools.wraps(function)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        if not _enabled:
            return bridged(*args, **kwargs)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return _loop().run_until_complete(function(*args, **kwargs))
        return bridged(*args, **kwargs)  # refuses, as async_to_sync does on a loop

    return call
