"""Tool executions: one row per (session, call_id), whatever door it came through."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.functions import Cast, Length, Substr

from sessions_app.models import ApiKey, VoiceSession
from tools_app import registry

# What a page or an export shows of one call's arguments, as JSON text: enough to see
# what the call did; the rest is left in the database, never loaded.
ARGUMENTS_SHOWN_CHARS = 4096


class ToolExecutionQuerySet(models.QuerySet):
    def in_flight(self) -> ToolExecutionQuerySet:
        """Calls queued or running: each holds, or waits for, a worker."""
        return self.filter(status__in=(ToolExecution.Status.QUEUED, ToolExecution.Status.RUNNING))

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

    FINISHED = (Status.SUCCEEDED, Status.FAILED)

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
    worker = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.FloatField(null=True, blank=True)

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
        unknown = sorted(set(self.tools) - set(registry.all_tools()) - {"*"})
        if unknown:
            raise ValidationError({"tools": f"Unknown tools: {', '.join(unknown)}."})
        if (self.user_id is None) == (self.api_key_id is None):
            raise ValidationError("Grant the tools to a user or to an API key, not both.")
