"""Tool executions: one row per (session, call_id), whatever door it came through; and
tasks: the executions that went on in the background while the conversation did."""

from __future__ import annotations

import json
import secrets
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.functions import Cast, Length, Substr

from sessions_app.models import ApiKey, VoiceSession

# What a page or an export shows of one call's arguments, as JSON text: enough to see
# what the call did; the rest is left in the database, never loaded.
ARGUMENTS_SHOWN_CHARS = 4096


class ToolExecutionQuerySet(models.QuerySet):
    def in_flight(self) -> ToolExecutionQuerySet:
        """Calls queued or running: each holds, or waits for, a worker (an agent's own
        steps run within its task's call, on its worker)."""
        return self.filter(
            status__in=(ToolExecution.Status.QUEUED, ToolExecution.Status.RUNNING)
        ).exclude(origin=ToolExecution.Origin.AGENT)

    def with_arguments_shown(self, chars: int = ARGUMENTS_SHOWN_CHARS) -> ToolExecutionQuerySet:
        """Without the arguments themselves: their first chars as JSON text
        (arguments_head) and their whole length (arguments_chars), cut in the database,
        so a page or an export holds a bounded share of each call whatever it was sent."""
        text = Cast("arguments", models.TextField())
        return self.defer("arguments").annotate(
            arguments_head=Substr(text, 1, chars), arguments_chars=Length(text)
        )


def shown_arguments(head: str | None, chars: int | None) -> Any:
    """The arguments as with_arguments_shown() read them: the object itself when it was
    read whole, else its first characters saying how long it was."""
    if head is None:
        return None
    if chars is not None and chars <= len(head):
        return json.loads(head)
    return f"{head}… [cut: {chars} characters in all]"


class ToolExecution(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    class Origin(models.TextChoices):
        SIDEBAND = "sideband"  # the server saw the model's call on the call itself
        CLIENT = "client"  # the browser relayed it to POST /tools/<name>
        AGENT = "agent"  # an agent's own step, within its task

    FINISHED = (Status.SUCCEEDED, Status.FAILED)
    # Failures of the service (kinds of ours), as against a tool's own answer (a path
    # refused, a tool this server has not configured): /ops/'s error rate and
    # voice_errors_total{component="tools"} count these only.
    SERVICE_FAILURES = frozenset(
        {"worker_lost", "out_of_time", "workspace_unavailable", "storage_full", "tool_raised"}
    )

    session = models.ForeignKey(
        VoiceSession, related_name="tool_executions", on_delete=models.CASCADE
    )
    call_id = models.CharField(max_length=80)
    tool = models.CharField(max_length=80)
    arguments = models.JSONField(default=dict)
    # Their size as compact JSON in UTF-8 (tools_app.calls): a session's calls may send
    # only so much in all (0 for calls made before it was counted).
    arguments_bytes = models.PositiveIntegerField(default=0)
    origin = models.CharField(max_length=12, choices=Origin.choices, default=Origin.CLIENT)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    output = models.TextField(blank=True)
    error = models.TextField(blank=True)
    # Empty unless failed; then what kind of failure (worker.finish).
    failure = models.CharField(max_length=40, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.FloatField(null=True, blank=True)
    # The task this call is a step of (an agent's own tool calls), if any.
    task = models.ForeignKey(
        "Task", null=True, blank=True, related_name="steps", on_delete=models.CASCADE
    )

    objects = ToolExecutionQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["session", "call_id"], name="one_execution_per_call")
        ]
        indexes = [models.Index(fields=["status", "started_at"])]

    def __str__(self) -> str:
        return f"{self.tool} {self.call_id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    def as_result(self) -> dict:
        return {
            "call_id": self.call_id,
            "tool": self.tool,
            "status": self.status if self.is_finished else "failed",
            "output": self.output,
            "error": self.error
            or (None if self.is_finished else "The tool did not finish in time."),
        }


def new_task_id() -> str:
    return "task_" + secrets.token_urlsafe(9)


class TaskQuerySet(models.QuerySet):
    def running(self) -> TaskQuerySet:
        return self.filter(status=Task.Status.RUNNING)

    def undelivered(self) -> TaskQuerySet:
        """Finished, and not yet told to the model on the call."""
        return self.exclude(status=Task.Status.RUNNING).filter(delivery=Task.Delivery.PENDING)


class Task(models.Model):
    """A tool call that went on in the background: the model heard at once that it
    started, and hears how it ended when it does (tools_app.tasks_flow)."""

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    class Kind(models.TextChoices):
        TOOL = "tool"
        AGENT = "agent"

    class Delivery(models.TextChoices):
        PENDING = "pending"  # finished; to be told to the model on the call
        SPOKEN = "spoken"  # told to the model on the call
        KEPT = "kept"  # the call had ended: kept on the session and shown, not spoken

    id = models.CharField(primary_key=True, max_length=40, default=new_task_id, editable=False)
    session = models.ForeignKey(VoiceSession, related_name="tasks", on_delete=models.CASCADE)
    execution = models.OneToOneField(
        ToolExecution, related_name="as_task", on_delete=models.CASCADE
    )
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.TOOL)
    tool = models.CharField(max_length=80)
    agent = models.CharField(max_length=80, blank=True)
    summary = models.CharField(max_length=200, blank=True)  # what it is, for its card
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    progress = models.TextField(blank=True)  # the last progress line
    output = models.TextField(blank=True)
    error = models.TextField(blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    cancelled_by = models.CharField(max_length=150, blank=True)
    delivery = models.CharField(max_length=8, choices=Delivery.choices, default=Delivery.PENDING)
    delivered_at = models.DateTimeField(null=True, blank=True)
    steps_count = models.PositiveIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = TaskQuerySet.as_manager()

    # As has_perm() names it: staff who may stop a caller's task from /ops/.
    CANCEL_PERMISSION = "tools_app.cancel_task"

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["status", "created_at"]),
            models.Index(fields=["session", "delivery"]),
        ]
        permissions = [("cancel_task", "Can cancel a running background task")]

    def __str__(self) -> str:
        return f"{self.pk} {self.tool} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status != self.Status.RUNNING

    def as_started(self) -> dict:
        """POST /tools/<name>'s answer for a call that became a task (202)."""
        return {
            "call_id": self.execution.call_id,
            "tool": self.tool,
            "status": "running",
            "task_id": self.pk,
        }

    def to_dict(self) -> dict:
        """What GET /session/<id>/tasks/<task_id> and the live events say of it."""
        return {
            "task_id": self.pk,
            "call_id": self.execution.call_id if self.execution_id else None,
            "tool": self.tool,
            "kind": self.kind,
            "agent": self.agent or None,
            "summary": self.summary,
            "status": self.status,
            "progress": self.progress,
            "output": self.output if self.is_finished else None,
            "error": self.error or None,
            "cancelled_by": self.cancelled_by or None,
            "steps": self.steps_count,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


class ToolGrant(models.Model):
    """The tools one user or one API key may use, replacing the settings' default."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE
    )
    api_key = models.OneToOneField(ApiKey, null=True, blank=True, on_delete=models.CASCADE)
    tools = models.JSONField(
        default=list, blank=True, help_text='Tool names, or ["*"] for every tool; [] for none.'
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(user__isnull=False, api_key__isnull=True)
                | models.Q(user__isnull=True, api_key__isnull=False),
                name="grant_for_a_user_or_a_key",
            )
        ]

    def __str__(self) -> str:
        return f"{self.user or self.api_key}: {', '.join(self.tools) or 'no tools'}"

    def clean(self) -> None:
        if not isinstance(self.tools, list) or not all(isinstance(t, str) for t in self.tools):
            raise ValidationError({"tools": "A list of tool names."})
        # Whether the names are tools we have is the admin form's to say
        # (tools_app.admin.ToolGrantForm): the registry's tools read these models.
        if (self.user_id is None) == (self.api_key_id is None):
            raise ValidationError("Grant the tools to a user or to an API key, not both.")
