"""One call as it happens, for staff: its facts and its timeline as the history page
shows them (sessions_app.history), in parts a page updates in place. The live view's
page renders it whole; its socket (consumers.LiveCallConsumer) sends what changed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from asgiref.sync import sync_to_async
from django.http import HttpRequest
from django.template.loader import get_template, render_to_string
from django.utils import timezone

from ops_app import degradation
from ops_app.forms import EndCallForm
from sessions_app import history
from sessions_app.models import SESSION_ID, VoiceSession
from tools_app.models import Task

ENTRY = "admin/sessions_app/voicesession/entry.html"
FACTS = "ops/live/facts.html"
END = "ops/live/end.html"
SECTIONS = ("live-facts", "live-end")


@dataclass
class Call:
    """What the live view shows of one session at one moment."""

    session: VoiceSession
    entries: list[history.Entry]
    service: degradation.ServiceState
    running: list[Task] = field(default_factory=list)

    @property
    def live(self) -> bool:
        return self.session.is_live


def _read(session_id: str) -> tuple[VoiceSession, list[history.Entry], list[Task]] | None:
    session = VoiceSession.objects.select_related("user", "api_key").filter(pk=session_id).first()
    if session is None:
        return None
    entries, _ = history.conversation(session)
    running = list(
        Task.objects.filter(session=session, finished_at__isnull=True).order_by("created_at")
    )
    return session, entries, running


async def read(session_id: str) -> Call | None:
    """The call as the database has it now, with the service's level; None for no
    such session."""
    if not SESSION_ID.fullmatch(session_id):
        return None
    found = await sync_to_async(_read)(session_id)
    if found is None:
        return None
    session, entries, running = found
    return Call(session, entries, await degradation.current(), running)


def level_entry(at: datetime, service: degradation.ServiceState, start: datetime) -> history.Entry:
    """A line the live view adds when the service's level changes while it watches."""
    said = f"Service level now {service.level} ({service.level_name})"
    if service.reasons:
        said += ": " + "; ".join(service.reasons)
    delta = (at - start).total_seconds()
    return history.Entry(
        at,
        "event",
        text=said,
        offset=("−" if delta < 0 else "+") + history.clock(abs(delta)),
        key=f"level-{int(at.timestamp() * 1000)}",
    )


def _shown(obj: object) -> str:
    """What a model instance shows, as text: its loaded fields (and its steps')."""
    fields = sorted((name, value) for name, value in vars(obj).items() if name != "_state")
    steps = [_shown(step) for step in getattr(obj, "shown_steps", [])]
    return repr((fields, steps))


def _fingerprint(entry: history.Entry) -> str:
    """Everything an entry's HTML is made of: the same fingerprint, the same HTML."""
    shown = {name: value for name, value in vars(entry).items() if name != "task"}
    return repr((sorted(shown.items()), _shown(entry.task) if entry.task else None))


class Entries:
    """Renders a timeline's entries to HTML by key, in order, rendering again only the
    entries whose content changed since the last time (a 15-minute call is hundreds of
    entries; a turn changes one or two)."""

    def __init__(self) -> None:
        self.template = get_template(ENTRY)
        self.kept: dict[str, tuple[str, str]] = {}  # key -> (fingerprint, html)

    def render(self, entries: list[history.Entry]) -> dict[str, str]:
        rendered, kept = {}, {}
        for entry in entries:
            fingerprint = _fingerprint(entry)
            seen = self.kept.get(entry.key)
            if seen is None or seen[0] != fingerprint:
                seen = (fingerprint, self.template.render({"entry": entry}))
            kept[entry.key] = seen
            rendered[entry.key] = seen[1]
        self.kept = kept
        return rendered


def render_sections(
    call: Call,
    *,
    can_end: bool,
    can_cancel: bool,
    request: HttpRequest | None = None,
    form: EndCallForm | None = None,
) -> dict[str, str]:
    """The live view's sections by id (without a request, forms carry no CSRF token;
    the page's script adds its own, as on the dashboard)."""
    session = call.session
    start = session.connected_at or session.created_at
    elapsed = (session.ended_at or timezone.now()) - start
    context = {
        "session": session,
        "caller": history.caller(session),
        "elapsed": history.clock(elapsed.total_seconds()),
        "audio_quality": history.audio_quality(session.audio_stats),
        "service": call.service,
        "running": call.running,
        "can_end": can_end and call.live,
        "can_cancel": can_cancel,
        "form": form or EndCallForm(),
    }
    return {
        "live-facts": render_to_string(FACTS, context, request=request),
        # Its own section: a refused reason holds it (feed.js) while the facts go on.
        "live-end": render_to_string(END, context, request=request),
    }
