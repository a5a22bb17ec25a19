"""`manage.py summarize --since 7d` (or an ISO date, `--since 2025-01-31`): post-call
summaries for the sessions that ended since then without one; with `--force`, again
for those that have one. Each session is queued to the Celery workers
(summarize_session_task), and the command says how many; in process (no broker, the
embedded default) each is written here in turn, and the command says how each went."""

from __future__ import annotations

import argparse
import re
from collections import Counter
from datetime import datetime, timedelta

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from sessions_app.models import VoiceSession
from sessions_app.tasks import summarize_session_task
from tools_app.agents import summaries

SPAN = re.compile(r"(\d+)\s*([mhdw])")
UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def since(value: str) -> datetime:
    """The moment --since names: a span back from now (30m, 12h, 7d, 2w) or an ISO date
    or date and time (in the server's time zone unless it says its own)."""
    text = value.strip()
    if span := SPAN.fullmatch(text.lower()):
        amount = int(span.group(1))
        if amount == 0:
            raise argparse.ArgumentTypeError(f"{value!r} is no time at all; try 7d.")
        return timezone.now() - timedelta(**{UNITS[span.group(2)]: amount})
    try:
        moment = parse_datetime(text)
        day = parse_date(text) if moment is None else None
    except ValueError:  # well formed, but no such day or time (2025-02-30)
        moment = day = None
    if day is not None:
        moment = datetime.combine(day, datetime.min.time())
    if moment is None:
        raise argparse.ArgumentTypeError(
            f"{value!r} is neither a span back from now (30m, 12h, 7d, 2w) nor an ISO "
            "date or date and time (2025-01-31, 2025-01-31T08:00)."
        )
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    if moment > timezone.now():
        raise argparse.ArgumentTypeError(f"{value!r} is in the future.")
    return moment


class Command(BaseCommand):
    help = (
        "Writes post-call summaries for sessions that ended since --since and have none "
        "(--force: all of them): queued to the Celery workers, or written here in process."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--since",
            required=True,
            type=since,
            help="how far back: a span (30m, 12h, 7d, 2w) or an ISO date (2025-01-31)",
        )
        parser.add_argument(
            "--force", action="store_true", help="summarize again those that have a summary"
        )

    def handle(self, *args, since: datetime, force: bool, **options) -> None:
        sessions = (
            VoiceSession.objects.exclude(status__in=VoiceSession.LIVE_STATUSES)
            .alias(over_at=Coalesce("ended_at", "created_at"))
            .filter(over_at__gte=since)
        )
        if not force:
            sessions = sessions.exclude(summary_state=VoiceSession.SummaryState.DONE)
        found = list(sessions.order_by("over_at", "pk").values_list("pk", flat=True))
        in_process = settings.CELERY_TASK_ALWAYS_EAGER
        states: Counter[str] = Counter()
        for session_id in found:
            summaries.mark(session_id, VoiceSession.SummaryState.PENDING)
            queued = summarize_session_task.apply_async((session_id,), {"force": force})
            if in_process:
                states[queued.result or "left alone"] += 1
        when = timezone.localtime(since).strftime("%Y-%m-%d %H:%M %Z")
        if not in_process:
            self.stdout.write(
                f"Queued {len(found)} session(s) ended since {when} for summaries; "
                "the Celery workers write them."
            )
            return
        said = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
        self.stdout.write(
            f"Summarized {len(found)} session(s) ended since {when} here"
            + (f": {said}." if said else ".")
        )
