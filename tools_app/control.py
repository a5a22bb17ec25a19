"""What workers say about themselves when asked: a Celery remote-control command each
worker answers with the isolation bash gets there, and the call that asks them all."""

from __future__ import annotations

from celery.worker.control import inspect_command

from tools_app.sandbox import isolation
from voiceplatform.celery import app

IN_PROCESS = "this process (tasks run in-process)"


@inspect_command()
def tool_isolation(state, **kwargs) -> dict:
    """Answered by the worker's main process, which probes bubblewrap as its pool will."""
    return {"isolation": isolation()}


def worker_isolations(timeout: float) -> dict[str, str]:
    """{worker hostname: isolation} of every worker that answers within timeout
    (blocking: it waits the whole timeout for replies); in the embedded default, where
    tasks run in this process, this process's own."""
    if app.conf.task_always_eager:
        return {IN_PROCESS: isolation()}
    replies = app.control.broadcast("tool_isolation", reply=True, timeout=timeout) or []
    return {
        host: str((answer or {}).get("isolation", "unknown"))
        for reply in replies
        for host, answer in reply.items()
    }
