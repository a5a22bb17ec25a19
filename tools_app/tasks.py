"""Tool execution in Celery workers (task names end in _task; they take ids)."""

from __future__ import annotations

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from tools_app import actions
from tools_app.models import ToolExecution


# Time limits come from CELERY_TASK_ANNOTATIONS (settings): backstops behind each
# tool's own, shorter, limits.
@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True)
def execute_tool_task(self, execution_id: int) -> None:
    try:
        actions.run(execution_id, worker=self.request.hostname)
    except SoftTimeLimitExceeded:
        execution = ToolExecution.objects.get(pk=execution_id)
        actions.finish(
            execution,
            ok=False,
            output="The tool ran out of time.",
            error="The tool ran out of time.",
            infrastructure_ok=False,
        )


@shared_task
def fail_lost_executions_task() -> int:
    """Periodic: executions whose worker vanished do not stay 'running' forever."""
    return actions.fail_lost()
