"""Deployment checklists (seed section 10): operators start a run of one, tick and
annotate its items, have the app re-check the items it can verify itself, and complete
it. Each of these changes and its audit event are written together; a completed run is
kept as it was."""

from __future__ import annotations

import asyncio
from typing import Any

from asgiref.sync import sync_to_async
from django.db import transaction
from django.utils import timezone

from ops_app import audit, verifications
from ops_app.models import (
    AuditEvent,
    ChecklistEntry,
    ChecklistRun,
    ChecklistTemplate,
    VerificationStatus,
)
from voiceplatform.errors import Conflict

NOTE_MAX_CHARS = 2000
COMPLETED = "This run is completed; it is kept as it was."


async def start_run(
    template: ChecklistTemplate, *, actor: Any, ip: str | None = None
) -> ChecklistRun:
    """Opens a run with one entry per item, then runs the automatic checks once."""
    run = await sync_to_async(_start, thread_sensitive=True)(template, actor, ip)
    verdicts = await _run_checks(run)
    await sync_to_async(_record_verdicts, thread_sensitive=True)(run, verdicts)
    return run


async def tick(
    entry: ChecklistEntry, *, actor: Any, done: bool, note: str = "", ip: str | None = None
) -> ChecklistEntry:
    """Marks an item done (or not done again) with the operator's note. Who and when
    stay on the entry while it is done, and in the audit event either way."""
    return await sync_to_async(_tick, thread_sensitive=True)(entry, actor, done, note, ip)


async def reverify(
    run: ChecklistRun, *, actor: Any = None, ip: str | None = None
) -> dict[str, bool]:
    """Runs the automatic checks of an open run again; returns {check: passed}."""
    _refuse_if_completed(run)
    verdicts = await _run_checks(run)
    audited = {"actor": actor, "ip": ip}
    await sync_to_async(_record_verdicts, thread_sensitive=True)(run, verdicts, audited)
    return {name: verdict.passed for name, verdict in verdicts.items()}


async def complete(
    run: ChecklistRun, *, actor: Any, note: str = "", ip: str | None = None
) -> ChecklistRun:
    """Closes the run for good; what is left unticked is recorded as such."""
    _refuse_if_completed(run)
    return await sync_to_async(_complete, thread_sensitive=True)(run, actor, note, ip)


# --- the writes, each in one transaction with its audit event ------------------------


def _start(template: ChecklistTemplate, actor: Any, ip: str | None) -> ChecklistRun:
    with transaction.atomic():
        run = ChecklistRun.objects.create(template=template, started_by=_user(actor))
        items = list(template.items.all())
        ChecklistEntry.objects.bulk_create(ChecklistEntry(run=run, item=item) for item in items)
        audit.record(
            AuditEvent.Action.CHECKLIST_STARTED,
            actor=actor,
            actor_name=_name(actor),
            target=_target(run, template),
            ip=ip,
            details={"run": run.pk, "checklist": template.slug, "items": len(items)},
        )
    return run


def _tick(
    entry: ChecklistEntry, actor: Any, done: bool, note: str, ip: str | None
) -> ChecklistEntry:
    now = timezone.now()
    fields = {
        "done": done,
        "done_by": _user(actor) if done else None,
        "done_at": now if done else None,
        "note": note.strip()[:NOTE_MAX_CHARS],
        "updated_at": now,
    }
    with transaction.atomic():
        # Only while the run is open, even if another operator completes it meanwhile.
        changed = ChecklistEntry.objects.filter(pk=entry.pk, run__completed_at__isnull=True).update(
            **fields
        )
        if not changed:
            raise Conflict(COMPLETED)
        entry = ChecklistEntry.objects.select_related("run__template", "item").get(pk=entry.pk)
        audit.record(
            AuditEvent.Action.CHECKLIST_TICKED,
            actor=actor,
            actor_name=_name(actor),
            target=f"{_target(entry.run, entry.run.template)}: {entry.item.text}",
            ip=ip,
            details={
                "run": entry.run_id,
                "item": entry.item.text,
                "group": entry.item.group,
                "done": done,
                "note": entry.note,
            },
        )
    return entry


def _complete(run: ChecklistRun, actor: Any, note: str, ip: str | None) -> ChecklistRun:
    now = timezone.now()
    with transaction.atomic():
        # Only an open run is closed: of two operators completing it at once, one does.
        closed = ChecklistRun.objects.filter(pk=run.pk, completed_at__isnull=True).update(
            completed_at=now,
            completed_by=_user(actor),
            note=note.strip()[:NOTE_MAX_CHARS],
            updated_at=now,
        )
        if not closed:
            raise Conflict(COMPLETED)
        run = ChecklistRun.objects.with_progress().select_related("template").get(pk=run.pk)
        audit.record(
            AuditEvent.Action.CHECKLIST_COMPLETED,
            actor=actor,
            actor_name=_name(actor),
            target=_target(run, run.template),
            ip=ip,
            details={
                "run": run.pk,
                "done": run.done_count,
                "items": run.entry_count,
                "checks_failing": run.failed_count,
                "note": run.note,
            },
        )
    return run


def _record_verdicts(
    run: ChecklistRun,
    verdicts: dict[str, verifications.Verdict],
    audited: dict | None = None,
) -> None:
    """Stores each check's verdict on its entries (of a run still open); with audited
    (the operator who asked, and from where), as one re-check event."""
    now = timezone.now()
    with transaction.atomic():
        if not ChecklistRun.objects.filter(pk=run.pk, completed_at__isnull=True).exists():
            raise Conflict(COMPLETED)
        for name, verdict in verdicts.items():
            run.entries.filter(item__verifier=name).update(
                verified_status=(
                    VerificationStatus.PASSED if verdict.passed else VerificationStatus.FAILED
                ),
                verified_detail=verdict.detail,
                verified_at=now,
                updated_at=now,
            )
        run.verified_at = now
        run.save(update_fields=["verified_at", "updated_at"])
        if audited is not None:
            audit.record(
                AuditEvent.Action.CHECKLIST_RECHECKED,
                actor=audited["actor"],
                actor_name=_name(audited["actor"]),
                target=_target(run, run.template),
                ip=audited["ip"],
                details={
                    "run": run.pk,
                    "verified": {name: verdict.passed for name, verdict in verdicts.items()},
                },
            )


async def _run_checks(run: ChecklistRun) -> dict[str, verifications.Verdict]:
    """Each automatic check of the run's items, once, all at the same time (each is
    bounded in time, so together they are too)."""
    names = sorted(
        {
            name
            async for name in ChecklistEntry.objects.filter(run=run)
            .exclude(item__verifier="")
            .values_list("item__verifier", flat=True)
        }
    )
    verdicts = await asyncio.gather(*(verifications.run(name) for name in names))
    return dict(zip(names, verdicts, strict=True))


def _refuse_if_completed(run: ChecklistRun) -> None:
    if run.is_completed:
        raise Conflict(COMPLETED)


def _target(run: ChecklistRun, template: ChecklistTemplate) -> str:
    return f"checklist {template.slug} run {run.pk}"


def _user(actor: Any) -> Any:
    return actor if getattr(actor, "is_authenticated", False) else None


def _name(actor: Any) -> str:
    """Who, when the actor is not a user: a command's "cli:<login>", or the system."""
    if getattr(actor, "is_authenticated", False):
        return actor.get_username()
    return actor if isinstance(actor, str) else "system"
