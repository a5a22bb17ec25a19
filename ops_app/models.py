"""What operators switch (maintenance, a forced level) and the append-only record of
every security-relevant and operator action."""

from __future__ import annotations

import re

from django.conf import settings
from django.db import models
from django.utils import timezone

# An ETA that names a time ("14:30 UTC", "2:30 pm", "2025-06-01T14:30Z"): said as "back
# at" it. Anything else ("in 10 minutes", "tomorrow morning") is said as written.
_ETA_TIME = re.compile(
    r"(?:\d{4}-\d{2}-\d{2}[ T])?"
    r"(?:(?:[01]?\d|2[0-3])[:.][0-5]\d(?::[0-5]\d)?(?:\s*[aApP]\.?[mM]\.?)?"
    r"|(?:0?[1-9]|1[0-2])\s*[aApP]\.?[mM]\.?)"
    r"(?:\s*(?:Z|[A-Z]{2,5}(?:[+-]\d{1,2}(?::?\d{2})?)?|[+-]\d{2}:?\d{2}))?"
)
MAINTENANCE_DEFAULT_MESSAGE = "The voice assistant is down for maintenance."


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text if not text or text[-1] in ".!?…" else f"{text}."


class OpsState(models.Model):
    """The operators' switches: one row, read through ops_app.state (cached per process
    for a second, so a switch reaches every process within two)."""

    SINGLETON = 1
    # The permissions below, as has_perm() names them.
    VIEW_PERMISSION = "ops_app.view_operations"
    OPERATE_PERMISSION = "ops_app.operate"
    END_CALL_PERMISSION = "ops_app.end_call"

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
            ("end_call", "Can end one live call"),
        ]

    def __str__(self) -> str:
        return "maintenance" if self.maintenance else "in service"

    def maintenance_said(self) -> str:
        """The operator's message for users, or the default one."""
        return _sentence(self.maintenance_message) or MAINTENANCE_DEFAULT_MESSAGE

    def expected_back(self) -> str:
        """When service should be back, in a sentence: "We expect it back at 14:30 UTC."
        for an ETA that is a time, "Expected back: in 10 minutes." for free text."""
        eta = " ".join(self.maintenance_eta.split())
        if not eta:
            return "Please try again in a few minutes."
        if _ETA_TIME.fullmatch(eta):
            return f"We expect it back at {eta}."
        return f"Expected back: {_sentence(eta)}"

    def maintenance_notice(self) -> str:
        """What a caller refused in maintenance reads: the operator's words and when."""
        return (
            "Service temporarily unavailable (maintenance): "
            f"{self.maintenance_said()} {self.expected_back()}"
        )

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
        CHECKLIST_RECHECKED = "checklist_rechecked"
        EXPORT = "export"
        TASK_CANCELLED = "task_cancelled"
        DRAIN_STARTED = "drain_started"
        DRAIN_CANCELLED = "drain_cancelled"
        CALL_ENDED = "call_ended"  # a member of staff ended one live call

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


class ChecklistTemplateQuerySet(models.QuerySet):
    def with_counts(self) -> ChecklistTemplateQuerySet:
        """Each checklist with item_count and verifiable_count (items the app checks)."""
        return self.annotate(
            item_count=models.Count("items"),
            verifiable_count=models.Count("items", filter=~models.Q(items__verifier="")),
        )


class ChecklistTemplate(models.Model):
    """One of the seed's deployment checklists (section 10), loaded by a data migration."""

    slug = models.SlugField(unique=True)
    section = models.CharField(max_length=10, blank=True, help_text='The seed\'s, e.g. "10.3".')
    title = models.CharField(max_length=100)
    order = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ChecklistTemplateQuerySet.as_manager()

    class Meta:
        ordering = ["order", "id"]

    def __str__(self) -> str:
        return f"{self.section} {self.title}".strip()


class ChecklistItem(models.Model):
    """One line of a checklist, under its group heading; `verifier` names the automatic
    check that proves it, when the app can prove it itself."""

    class Verifier(models.TextChoices):
        HEALTH = "health", "health endpoints answer 200"
        SESSION_CREATION = "session_creation", "a client secret is minted upstream"
        METRICS = "metrics", "every voice_* metric is exposed at /metrics"
        RATE_LIMITING = "rate_limiting", "limits set and the shared counter refuses"
        AUTHENTICATION = "authentication", "/ops and /admin send anonymous callers to log in"
        AUDIT_LOGGING = "audit_logging", "audit events are written and append-only"
        NO_SECRETS = "no_secrets", "no secret in our responses"
        SECURE_SETTINGS = "secure_settings", "DEBUG off, production settings, deploy checks"
        TOOL_ISOLATION = "tool_isolation", "every worker runs bash isolated"
        MIGRATIONS = "migrations", "every migration is applied"

    template = models.ForeignKey(ChecklistTemplate, related_name="items", on_delete=models.CASCADE)
    group = models.CharField(max_length=100)
    text = models.CharField(max_length=200)
    order = models.PositiveSmallIntegerField()
    verifier = models.CharField(max_length=40, choices=Verifier.choices, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["template__order", "order", "id"]
        constraints = [
            models.UniqueConstraint(fields=["template", "order"], name="one_item_per_place")
        ]

    def __str__(self) -> str:
        return f"{self.group}: {self.text}"


class VerificationStatus(models.TextChoices):
    PASSED = "passed"
    FAILED = "failed"
    NOT_RUN = "not_run", "not run"


class ChecklistRunQuerySet(models.QuerySet):
    def open(self) -> ChecklistRunQuerySet:
        return self.filter(completed_at__isnull=True)

    def completed(self) -> ChecklistRunQuerySet:
        return self.filter(completed_at__isnull=False)

    def with_progress(self) -> ChecklistRunQuerySet:
        """Each run with entry_count, done_count and failed_count (automatic checks)."""
        return self.annotate(
            entry_count=models.Count("entries"),
            done_count=models.Count("entries", filter=models.Q(entries__done=True)),
            failed_count=models.Count(
                "entries",
                filter=models.Q(entries__verified_status=VerificationStatus.FAILED),
            ),
        )


class ChecklistRun(models.Model):
    """One pass through a checklist by operators; kept once completed, as a record."""

    template = models.ForeignKey(ChecklistTemplate, related_name="runs", on_delete=models.PROTECT)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    completed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    completed_at = models.DateTimeField(null=True, blank=True)
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ChecklistRunQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"{self.template} run {self.pk} ({self.started_at:%Y-%m-%d %H:%M})"

    @property
    def is_completed(self) -> bool:
        return self.completed_at is not None


class ChecklistEntry(models.Model):
    """An item within a run: ticked (by whom, when, with a note) and, for items the app
    can verify, the result of its automatic check."""

    run = models.ForeignKey(ChecklistRun, related_name="entries", on_delete=models.CASCADE)
    item = models.ForeignKey(ChecklistItem, related_name="+", on_delete=models.PROTECT)
    done = models.BooleanField(default=False)
    done_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    done_at = models.DateTimeField(null=True, blank=True)
    note = models.TextField(blank=True)
    verified_status = models.CharField(
        max_length=10, choices=VerificationStatus.choices, default=VerificationStatus.NOT_RUN
    )
    verified_detail = models.TextField(blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "checklist entries"
        ordering = ["item__order", "id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "item"], name="one_entry_per_item_and_run")
        ]

    def __str__(self) -> str:
        return f"{'[x]' if self.done else '[ ]'} {self.item.text}"

    @property
    def is_verifiable(self) -> bool:
        return bool(self.item.verifier)
