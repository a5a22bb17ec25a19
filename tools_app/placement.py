"""Where a session's workspace lives, and so where its tool calls run.

Workspaces are pod-local (a tmpfs each, tools_app.mounts): a session's calls must all
reach the worker that holds its workspace. Each worker also consumes two queues of its
own, `<tools-fast queue>.<nodename>` and `<tools-slow queue>.<nodename>` (added when it
starts consuming, whatever -Q said: HomeQueues), so a quick call still never waits
behind slow ones; and it keeps a lease in Redis that it renews every few seconds. A
session's first call waits in the shared tool queues; the worker that takes it claims
the session's workspace (its home, a Redis key); later calls are queued straight to
the home's own queue. A worker taking a call whose home is another live worker sends
it there instead of running it on a second workspace.

When the home's lease has lapsed (the worker died, or is shutting down), the next call
goes to the shared queues again and the worker that takes it claims the home in its
place: that call's output tells the model, once, that the workspace was reset.

A home is named `<Celery nodename>.<token>`, the token new at every start: a worker that
restarts under the same name has lost its mounts, so its old home is gone too. Nodenames
must be unique, as Celery needs anyway (`celery@<pod name>` in Kubernetes).

In-process (CELERY_TASK_ALWAYS_EAGER) there is one workspace root and no routing."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
import structlog
from celery import bootsteps
from django.conf import settings
from django.core.cache import cache
from django_redis import get_redis_connection
from kombu import Exchange, Queue

from tools_app import registry
from tools_app.models import ToolExecution

log = structlog.get_logger(__name__)

RESET_NOTICE = (
    "Note: this session's workspace was reset before this call (the worker that held it"
    " stopped): files written by earlier calls are gone.\n\n"
)
LIVE = "live"
DRAINING = "draining"  # shutting down: finishes what it runs, takes no new home

# Atomically: the workspace's home after this worker asks for it. Returns {home, how}:
# how is "kept" (ours already, or a live worker's: forward the call there), "new" (no
# home yet) or "taken" (the home's worker is gone: ours now, on a fresh workspace).
_CLAIM = """
local home = redis.call('GET', KEYS[1])
local ttl = tonumber(ARGV[2])
if home == ARGV[1] then
  redis.call('EXPIRE', KEYS[1], ttl)
  return {home, 'kept'}
end
if home then
  local node = string.match(home, '^(.*)%.[^.]*$') or home
  local lease = redis.call('HMGET', ARGV[3] .. node, 'home', 'state')
  if lease[1] == home and lease[2] == 'live' then
    return {home, 'kept'}
  end
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
  return {ARGV[1], 'taken'}
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
return {ARGV[1], 'new'}
"""


@dataclass(frozen=True)
class Placement:
    """Where a call taken by this worker runs: here (reset: on a workspace made afresh
    where the session had one before), or forwarded to the queue of its home."""

    forward_to: Queue | None = None
    reset: bool = False


# This worker's home, set at its start (None outside workers that take tool calls).
_home: str | None = None
_state = LIVE
_renew: Callable[[], None] | None = None


def workspace_of(execution: ToolExecution) -> str:
    """The name of the workspace a call uses: its session's own, or that of the session
    it resumed (VoiceSession.workspace)."""
    return execution.session.workspace


def queue_of(home: str, tool: str) -> Queue:
    """The queue for calls of tool that only the worker holding home consumes (declared
    alike by that worker, HomeQueues, and by whoever sends to it)."""
    return _own_queue(node_of(home), registry.queue_for(tool))


def _own_queue(node: str, shared: str) -> Queue:
    name = f"{shared}.{node}"
    return Queue(name, Exchange(name), routing_key=name)


def every_worker() -> list[Queue]:
    """The own quick queue of every live worker: for work each must do on the
    workspaces it holds (their retention)."""
    client = _redis()
    known = _lease_prefix().removesuffix(":") + "s"
    queues = []
    for raw in client.smembers(known):
        node = raw.decode()
        state = client.hget(_lease_prefix() + node, "state")
        if state is None:
            client.srem(known, node)  # gone for good: its lease lapsed
        elif state.decode() == LIVE:
            queues.append(_own_queue(node, settings.TOOL_QUEUE_FAST))
    return queues


class HomeQueues(bootsteps.StartStopStep):
    """The worker's consumer step that takes the calls of the sessions whose workspace
    it holds: its own fast and slow queues, whatever queues it was started with."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def start(self, consumer) -> None:
        if _home is None:
            return
        for shared in (settings.TOOL_QUEUE_FAST, settings.TOOL_QUEUE_SLOW):
            consumer.add_task_queue(f"{shared}.{node_of(_home)}")


def node_of(home: str) -> str:
    return home.rpartition(".")[0] or home


def _home_key(workspace: str) -> str:
    return cache.make_key(f"tools:home:{workspace}")


def _lease_prefix() -> str:
    return cache.make_key("tools:worker:")


def _home_ttl() -> int:
    # Longer than the workspace itself can last: the session, a task after it, retention.
    return (
        settings.SESSION_MAX_SECONDS
        + max(settings.TOOL_TIMEOUT_SECONDS, settings.TASK_MAX_SECONDS)
        + settings.TOOL_WORKSPACE_RETENTION_SECONDS
        + 3600
    )


def _redis():
    return get_redis_connection("default")


# --- the web side (and the sweep): where to queue a call -----------------------------
def queue_for(execution: ToolExecution) -> str | Queue:
    """The queue a call waits in: its workspace's home's own queue while that worker is
    live, else the shared queue of its tool (whoever takes it claims the workspace)."""
    shared = registry.queue_for(execution.tool)
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return shared
    try:
        home = _redis().get(_home_key(workspace_of(execution)))
        if home is not None and lease_of(home.decode()) == LIVE:
            return queue_of(home.decode(), execution.tool)
    except Exception as exc:  # no Redis, no broker either: the shared queue is as good
        log.warning("tool_home_unknown", error=type(exc).__name__)
    return shared


def lease_of(home: str) -> str | None:
    """LIVE or DRAINING while the worker holding home runs; None once it is gone."""
    home_now, state = _redis().hmget(_lease_prefix() + node_of(home), "home", "state")
    if home_now is None or home_now.decode() != home:
        return None
    return state.decode() if state else None


def run_is_gone(execution: ToolExecution) -> bool:
    """Whether the worker running execution is gone for sure: no lease under its
    nodename, or the lease of a later start. False while it is unknown (no Redis)."""
    node = execution.worker.rpartition(":")[0]
    if not node or execution.started_at is None:
        return False
    try:
        home, since = _redis().hmget(_lease_prefix() + node, "home", "since")
    except Exception:
        return False
    if home is None:
        return True
    return since is not None and float(since) > execution.started_at.timestamp()


# --- the worker side ---------------------------------------------------------------
def place(execution: ToolExecution) -> Placement:
    """Where this worker's call runs: it claims the call's workspace when it has no
    live home, or forwards the call to the worker that holds it."""
    if _home is None or settings.CELERY_TASK_ALWAYS_EAGER:
        return Placement()
    try:
        home, how = claim(workspace_of(execution), _home)
    except Exception as exc:  # run it here rather than not at all
        log.warning("tool_home_not_claimed", error=type(exc).__name__)
        return Placement()
    if home != _home:
        log.info("tool_call_forwarded", execution=execution.pk, home=home)
        return Placement(forward_to=queue_of(home, execution.tool))
    if how == "taken":
        log.warning("tool_workspace_reset", session_id=execution.session_id)
        return Placement(reset=True)
    if how == "new":
        # No home recorded (lost with Redis, or expired) while earlier calls ran:
        # their files are not here either.
        earlier = (
            ToolExecution.objects.filter(session_id=execution.session_id)
            .exclude(pk=execution.pk)
            .exclude(worker="")
            .exists()
        )
        return Placement(reset=earlier)
    return Placement()


def claim(workspace: str, home: str) -> tuple[str, str]:
    """(the workspace's home, how): home asks for the workspace, atomically. how is
    "kept" (home's already, or another live worker's), "new" (it had none) or "taken"
    (its worker was gone: home's now, on a fresh workspace)."""
    found, how = _redis().eval(_CLAIM, 1, _home_key(workspace), home, _home_ttl(), _lease_prefix())
    return found.decode(), how.decode()


def write_lease(node: str, home: str, state: str, since: float, client=None) -> None:
    """The lease of the worker named node: which home it holds, in what state, since
    when; it lapses after TOOL_WORKER_LEASE_SECONDS unless written again."""
    with (client or _redis()).pipeline() as pipe:
        key = _lease_prefix() + node
        pipe.hset(key, mapping={"home": home, "state": state, "since": since})
        pipe.expire(key, settings.TOOL_WORKER_LEASE_SECONDS)
        pipe.sadd(_lease_prefix().removesuffix(":") + "s", node)  # every_worker's list
        pipe.execute()


def start_worker(nodename: str) -> None:
    """Makes this worker a home for workspaces: a lease renewed every third of
    TOOL_WORKER_LEASE_SECONDS on a thread of the worker's main process, for as long as
    that process lives (its pool processes, forked later, know its home)."""
    global _home, _state, _renew
    if settings.CELERY_TASK_ALWAYS_EAGER or not settings.REDIS_URL:
        return  # one process does all: nothing to route
    _home = f"{nodename}.{secrets.token_hex(4)}"
    _state = LIVE
    since = time.time()
    client = redis.Redis.from_url(settings.REDIS_URL)  # the thread's own connection

    def renew() -> None:
        write_lease(nodename, _home, _state, since, client)

    _renew = renew
    try:
        renew()  # before it takes any call
    except Exception as exc:  # Redis not there yet: the thread renews it when it is
        log.warning("tool_worker_lease_not_renewed", error=type(exc).__name__)

    def keep() -> None:
        while True:
            time.sleep(settings.TOOL_WORKER_LEASE_SECONDS / 3)
            try:
                renew()
            except Exception as exc:  # Redis away: renewed again when it is back
                log.warning("tool_worker_lease_not_renewed", error=type(exc).__name__)

    threading.Thread(target=keep, name="workspace-lease", daemon=True).start()
    log.info("tool_worker_home", home=_home)


def stop_taking_homes() -> None:
    """Shutting down: the lease stays (what runs here is not lost), but no session is
    sent here any more; their next calls reset elsewhere, as this pod's workspaces go
    with it."""
    global _state
    _state = DRAINING
    if _renew is not None:
        try:
            _renew()
        except Exception as exc:
            log.warning("tool_worker_lease_not_renewed", error=type(exc).__name__)
