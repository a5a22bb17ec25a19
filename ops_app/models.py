"""What operators switch (maintenance, a forced level) and the append-only record of
every security-relevant and operator action."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class OpsState(models.Model):
    """The operators' switches: one row, read through ops_app.state (cached per process
    for a second, so a switch reaches every process within two)."""

    SINGLETON = 1

    maintenance = models.BooleanField(default=False)
    maintenance_message = models.CharField(max_length=300, blank=True)
    maintenance_eta = models.CharField(
        max_length=80, blank=True, help_text='When service should be back, e.g. "14:30 UTC".'
    )
    maintenance_since = models.DateTimeField(null=True, blank=True)
    forced_level = models.PositiveSmallIntegerField(null=True, blank=True)
    forced_reason = models.CharField(max_length=200, blank=True)
    forced_until = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "operations state"
        verbose_name_plural = "operations state"
        permissions = [
            ("view_operations", "Can view the operations dashboard"),
            ("operate", "Can switch maintenance, force levels and reset breakers"),
        ]

    def __str__(self) -> str:
        return "maintenance" if self.maintenance else "in service"

    def forced_level_now(self) -> int | None:
        """The forced level while it has not expired."""
        if self.forced_level is None:
            return None
        if self.forced_until is not None and self.forced_until <= timezone.now():
            return None
        return self.forced_level


class AuditEvent(models.Model):
    """Append-only: on PostgreSQL a trigger refuses UPDATE and DELETE of these rows."""

    class Action(models.TextChoices):
        MAINTENANCE_ON = "maintenance_on"
        MAINTENANCE_OFF = "maintenance_off"
        LEVEL_FORCED = "level_forced"
        LEVEL_RELEASED = "level_released"
        BREAKER_RESET = "breaker_reset"
        CHECKLIST_STARTED = "checklist_started"
        CHECKLIST_TICKED = "checklist_ticked"
        CHECKLIST_COMPLETED = "checklist_completed"
        ADMIN_ADD = "admin_add"
        ADMIN_CHANGE = "admin_change"
        ADMIN_DELETE = "admin_delete"
        LOGIN = "login"
        LOGIN_FAILED = "login_failed"
        LOGOUT = "logout"
        LOCKED_OUT = "locked_out"
        TOOL_REFUSED = "tool_refused"
        WEBHOOK_REFUSED = "webhook_refused"
        RATE_LIMITED = "rate_limited"
        RETENTION_RUN = "retention_run"

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # No database constraint: deleting a user must not touch (and so be refused on)
    # the rows that record what they did; actor_name keeps who it was.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    actor_name = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=40, choices=Action.choices, db_index=True)
    target = models.CharField(max_length=200, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_name or 'system'} {self.action}"
