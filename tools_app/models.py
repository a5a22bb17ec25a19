"""Tool executions: one row per (session, call_id), whatever door it came through."""

from __future__ import annotations

from django.db import models

from sessions_app.models import VoiceSession


class ToolExecution(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    FINISHED = (Status.SUCCEEDED, Status.FAILED)

    session = models.ForeignKey(
        VoiceSession, related_name="tool_executions", on_delete=models.CASCADE
    )
    call_id = models.CharField(max_length=80)
    tool = models.CharField(max_length=80)
    arguments = models.JSONField(default=dict)
    origin = models.CharField(max_length=12, default="client")  # sideband | client
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    output = models.TextField(blank=True)
    error = models.TextField(blank=True)
    worker = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.FloatField(null=True, blank=True)

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
