"""Tool execution in Celery workers (task names end in _task; they take ids)."""

from __future__ import annotations

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from ops_app import audit
from tools_app import registry, retention, worker
from tools_app.models import ToolExecution


# Time limits come from CELERY_TASK_ANNOTATIONS (settings): backstops behind each
# tool's own, shorter, limits.
@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True)
def execute_tool_task(self, execution_id: int) -> None:
    try:
        worker.run(execution_id, worker=self.request.hostname)
    except SoftTimeLimitExceeded:
        worker.fail_for_the_bridge(ToolExecution.objects.get(pk=execution_id), worker.OUT_OF_TIME)


@shared_task
def fail_lost_executions_task() -> int:
    """Periodic: executions whose worker vanished do not stay 'running' forever, and
    those whose queueing was lost are queued again."""
    failed, stranded = worker.fail_lost()
    for execution_id, tool in stranded:
        execute_tool_task.apply_async((execution_id,), queue=registry.queue_for(tool))
    return failed


@shared_task
def remove_expired_workspaces_task() -> int:
    """Periodic: workspaces of sessions over for longer than their retention (or gone)
    are deleted; a run that removed any leaves one audit event saying how many."""
    removed = retention.remove_expired_workspaces()
    if removed:
        audit.record(
            audit.Action.RETENTION_RUN,
            actor_name="system",
            target="workspaces",
            details={"removed": removed},
        )
    return removed
