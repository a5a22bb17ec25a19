"""Tool execution in Celery workers (task names end in _task; they take ids)."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import celeryd_after_setup, worker_shutting_down
from django.conf import settings
from django.dispatch import receiver

from ops_app import audit
from sessions_app.signals import session_ended
from tools_app import background, placement, retention, worker
from tools_app.models import ToolExecution


# Time limits come from CELERY_TASK_ANNOTATIONS (settings): backstops behind each
# tool's own, shorter, limits.
@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True)
def execute_tool_task(self, execution_id: int) -> None:
    execution = ToolExecution.objects.get(pk=execution_id)
    reset = False
    if execution.status == ToolExecution.Status.QUEUED:  # (a redelivery is judged by run)
        placed = placement.place(execution)
        if placed.forward_to is not None:  # its workspace is on another live worker
            execute_tool_task.apply_async((execution_id,), queue=placed.forward_to)
            return
        reset = placed.reset
    try:
        worker.run(execution_id, worker=self.request.hostname, reset=reset)
    except SoftTimeLimitExceeded:
        worker.fail_for_the_bridge(
            ToolExecution.objects.get(pk=execution_id), worker.OUT_OF_TIME, "out_of_time"
        )


@shared_task
def fail_lost_executions_task() -> int:
    """Periodic: executions whose worker vanished do not stay 'running' forever, those
    whose queueing was lost are queued again, and tasks past their time are stopped."""
    failed, stranded = worker.fail_lost()
    for execution in stranded:  # on its home's queue, or the shared one if that is gone
        execute_tool_task.apply_async((execution.pk,), queue=placement.queue_for(execution))
    background.stop_overdue()
    return failed


@celeryd_after_setup.connect
def hold_workspaces(sender: str, **kwargs) -> None:
    """Every worker may hold workspaces: a lease under its node name, taken before its
    pool starts (HomeQueues then consumes its own queues)."""
    placement.start_worker(sender)


@worker_shutting_down.connect
def hand_over_workspaces(**kwargs) -> None:
    placement.stop_taking_homes()


@receiver(session_ended)
async def keep_untold_task_results(sender, *, session_id: str, **kwargs) -> None:
    """The call ended: results of its tasks not told to the model are kept and shown."""
    await sync_to_async(background.keep_undelivered)(session_id)


@shared_task
def remove_expired_workspaces_task() -> int:
    """Periodic: workspaces of sessions over for longer than their retention (or gone)
    are deleted, those of other ended sessions shrunk to their contents. Workspaces are
    pod-local: between workers, every live worker is asked to do so for its own."""
    if not settings.CELERY_TASK_ALWAYS_EAGER:
        for queue in placement.every_worker():
            remove_own_workspaces_task.apply_async(queue=queue)
        return 0
    return remove_own_workspaces_task()


@shared_task
def remove_own_workspaces_task() -> int:
    """The workspaces under this worker's root: removes the expired, shrinks the ended;
    a run that removed any leaves one audit event saying how many."""
    removed = retention.remove_expired_workspaces()
    retention.shrink_ended_workspaces()
    if removed:
        audit.record(
            audit.Action.RETENTION_RUN,
            actor_name="system",
            target="workspaces",
            details={"removed": removed},
        )
    return removed
