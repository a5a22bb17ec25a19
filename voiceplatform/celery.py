"""The Celery app; tasks run in-process (eager) in the embedded default."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import (
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
)

from voiceplatform import tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voiceplatform.settings")
# A worker's metrics (serve_worker_metrics): every process writes its samples here from
# the moment it imports a metric, so the directory must exist first (containers set
# it to a path under /tmp that nothing has made).
if _metrics_dir := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(_metrics_dir, exist_ok=True)

app = Celery("voiceplatform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Touches the worker's heartbeat file for its container health check.
app.steps["worker"].add("voiceplatform.heartbeat.WorkerHeartbeat")
# Consumes the worker's own tool queues: calls of sessions whose workspace it holds.
app.steps["consumer"].add("tools_app.placement.HomeQueues")


async def enqueue(task, *args, queue: str | None = None) -> None:
    """Queues a task from async code without blocking the event loop (publishing to the
    broker, or running it in-process in the embedded default, is blocking work); to
    queue, when named, rather than the task's default."""
    from asgiref.sync import sync_to_async

    # Not the shared thread: an in-process task may run for minutes (a bash tool), and
    # the shared thread serialises every request's database access.
    await sync_to_async(task.apply_async, thread_sensitive=False)(args, queue=queue)


_detached: set = set()  # in-process runs under way (asyncio keeps only weak references)


async def enqueue_detached(task, *args, queue: str | None = None) -> None:
    """Queues a task its caller does not wait for: with a broker, as enqueue does; in
    process (eager), on a thread of its own, started now and not awaited. Its failure
    there is logged; nothing waits on it."""
    import asyncio

    from django.conf import settings

    if not settings.CELERY_TASK_ALWAYS_EAGER:
        await enqueue(task, *args, queue=queue)
        return
    running = asyncio.create_task(_run_detached(task, args))
    _detached.add(running)
    running.add_done_callback(_detached.discard)


async def _run_detached(task, args: tuple) -> None:
    # Its database work on a thread of its own, not the caller's: the run may outlive
    # the request that queued it, and the request's thread-sensitive context ends with
    # its answer. That thread's connection is closed at the end.
    from concurrent.futures import ThreadPoolExecutor

    import structlog
    from asgiref.sync import ThreadSensitiveContext, sync_to_async
    from django.db import connections

    thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="task-in-process")
    try:
        async with ThreadSensitiveContext(executor=thread):
            try:
                await enqueue(task, *args)
            except Exception:
                structlog.get_logger(__name__).exception(
                    "task_failed_in_process", task=task.name, args=args
                )
            finally:
                await sync_to_async(connections.close_all)()
    finally:
        thread.shutdown(wait=False)


# Metrics observed in workers (sessions the sweep ends, upstream errors met there)
# reach Prometheus through the worker's own port: with WORKER_METRICS_PORT and
# PROMETHEUS_MULTIPROC_DIR set in the worker's environment (before it starts, so every
# pool process writes its samples there), the main process serves them all.
@worker_init.connect
def serve_worker_metrics(**kwargs) -> None:
    port = int(os.environ.get("WORKER_METRICS_PORT") or 0)
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not port or not directory:
        return
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    # Every interface by default: Prometheus scrapes workers by pod IP.
    address = os.environ.get("WORKER_METRICS_ADDR", "0.0.0.0")  # noqa: S104
    start_http_server(port, addr=address, registry=registry)


@worker_process_init.connect
def trace_pool_process(**kwargs) -> None:
    # Each pool process sets tracing up for itself, after the fork: an exporter's
    # threads and connections do not survive one.
    tracing.setup(tracing.WORKER)


@worker_init.connect
def trace_worker_without_pool_processes(sender=None, **kwargs) -> None:
    # A worker whose tasks run in its own process (solo, threads) has no pool process
    # to set tracing up in. (The pools are loaded here, in workers only.)
    from celery.concurrency import get_implementation
    from celery.concurrency.prefork import TaskPool as PreforkPool

    if sender is not None and not issubclass(get_implementation(sender.pool_cls), PreforkPool):
        tracing.setup(tracing.WORKER)


@worker_process_init.connect
def keep_an_event_loop(**kwargs) -> None:
    # Live events and tool results go out over the channel layer from sync task code:
    # on a loop the process keeps, with its Redis connections, not a new one each time.
    from voiceplatform import syncloop

    syncloop.enable()


@task_prerun.connect
@task_postrun.connect
def return_database_connections(task=None, **kwargs) -> None:
    # In a worker, what a request does at its start and end: a connection goes back to
    # the pool (or is closed, without one), and one that broke is not lent again. An
    # eager task runs inside its caller, whose connections are the caller's business.
    if task is not None and getattr(task.request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()


@worker_process_shutdown.connect
def send_last_spans(**kwargs) -> None:
    tracing.flush()


@worker_process_shutdown.connect
def forget_pool_process(pid: int | None = None, **kwargs) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())
