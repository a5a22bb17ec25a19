"""A session's history as support staff read it: the counts a list shows per row
(annotated in the list's own query, never per row), and one session as a timeline, its
background tasks in place with their steps."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.contrib.admin.utils import quote
from django.db.models import (
    Count,
    Exists,
    F,
    IntegerField,
    OuterRef,
    QuerySet,
    Subquery,
    Window,
)
from django.db.models.functions import Coalesce, Length, RowNumber, Substr
from django.urls import reverse

from sessions_app.models import ConversationItem as Item
from sessions_app.models import VoiceSession
from tools_app.models import Task, ToolExecution, shown_arguments

# Longer outputs and arguments are shown collapsed, their first line as a summary.
LONG = 200
# What the page shows of a task: its first steps (the rest counted), each step's output
# and error cut to a line, and its result cut; all cut in the database, so a page stays
# bounded however long an agent ran.
STEPS_SHOWN = 20
STEP_TEXT_SHOWN = 200
RESULT_SHOWN = 2000
DELIVERY_WORDS = {
    Task.Delivery.PENDING: "not yet: to be told to the model",
    Task.Delivery.SPOKEN: "spoken: told to the model on the call",
    Task.Delivery.KEPT: "kept on the session, not spoken: the call had ended",
}


def _count(rows: QuerySet) -> Coalesce:
    counted = rows.order_by().values("session").annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)


def failed_tool_calls() -> QuerySet:
    return ToolExecution.objects.filter(session=OuterRef("pk"), status=ToolExecution.Status.FAILED)


def with_counts(sessions: QuerySet) -> QuerySet:
    """Sessions with their turns (spoken or typed messages), tool calls and failed tool
    calls: one correlated count each, worked out only for the rows on the page."""
    return sessions.annotate(
        turns=_count(
            Item.objects.filter(
                session=OuterRef("pk"),
                kind=Item.Kind.MESSAGE,
                role__in=(Item.Role.USER, Item.Role.ASSISTANT),
            )
        ),
        tool_calls=_count(ToolExecution.objects.filter(session=OuterRef("pk"))),
        failed_tool_calls=_count(failed_tool_calls()),
    )


def with_failed_tool_call(sessions: QuerySet, failed: bool) -> QuerySet:
    has = Exists(failed_tool_calls())
    return sessions.filter(has if failed else ~has)


def with_tool(sessions: QuerySet, tool: str) -> QuerySet:
    return sessions.filter(Exists(ToolExecution.objects.filter(session=OuterRef("pk"), tool=tool)))


def caller(session: VoiceSession) -> str:
    """Who started it, in words: the user, the API key, or an anonymous address."""
    if session.user_id and session.user is not None:
        return session.user.get_username()
    if session.api_key_id and session.api_key is not None:
        return f"key “{session.api_key.name}”"
    if session.source == VoiceSession.Source.SIP:
        return "phone caller"
    return f"anonymous {session.client_ip or ''}".strip()


def clock(seconds: float | None) -> str:
    """m:ss (h:mm:ss past an hour); an empty string for no time."""
    if seconds is None:
        return ""
    whole = max(int(seconds), 0)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


@dataclass
class Entry:
    """One line of the timeline."""

    at: datetime
    kind: str  # user, assistant, system, tool, event, error
    text: str = ""
    offset: str = ""
    name: str = ""
    arguments: str = ""
    output: str = ""
    error: str = ""
    status: str = ""
    duration: float | None = None
    call_id: str = ""
    partial: bool = False
    details: dict = field(default_factory=dict)
    task: Task | None = None  # the call went on in the background (tasks_of())
    link: str = ""  # an event about another session: its page
    linked: str = ""  # that session's id
    key: str = ""  # stable while the session goes on: what a live view updates in place

    @property
    def long(self) -> bool:
        return len(self.output) > LONG or self.output.count("\n") > 3

    @property
    def long_arguments(self) -> bool:
        return len(self.arguments) > LONG


def _key(*parts: object) -> str:
    """An entry's key, safe as an HTML id whatever the ids it is made of hold."""
    return "e" + hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:16]


def _message(item: Item) -> Entry:
    if item.status == Item.Status.FAILED:
        return Entry(
            item.created_at,
            "error",
            text="The user's words could not be transcribed.",
            key=_key("item", item.pk),
        )
    return Entry(
        item.created_at,
        item.role,
        text=item.text,
        partial=item.status == Item.Status.IN_PROGRESS,
        key=_key("item", item.pk),
    )


def _tool_call(at: datetime, name: str, call_id: str, arguments: str) -> Entry:
    return Entry(
        at, "tool", name=name, call_id=call_id, arguments=arguments, key=_key("call", call_id)
    )


def tasks_of(session: VoiceSession) -> dict[int, Task]:
    """The session's tasks by the id of the call each went on from, with their first
    STEPS_SHOWN steps (shown_steps; more_steps says how many more) and their texts cut
    (output_head / error_head, with output_chars / error_chars): three queries."""
    tasks = list(
        Task.objects.filter(session=session)
        .defer("output", "error")
        .annotate(
            output_head=Substr("output", 1, RESULT_SHOWN),
            output_chars=Length("output"),
            error_head=Substr("error", 1, RESULT_SHOWN),
            error_chars=Length("error"),
        )
    )
    if not tasks:
        return {}
    steps = ToolExecution.objects.filter(session=session, task__isnull=False)
    counts = dict(steps.order_by().values("task").annotate(n=Count("pk")).values_list("task", "n"))
    shown: dict[str, list[ToolExecution]] = {}
    for step in (
        steps.defer("arguments", "output", "error")
        .annotate(
            rank=Window(
                RowNumber(),
                partition_by=[F("task")],
                order_by=[F("created_at").asc(), F("id").asc()],
            ),
            output_head=Substr("output", 1, STEP_TEXT_SHOWN),
            output_chars=Length("output"),
            error_head=Substr("error", 1, STEP_TEXT_SHOWN),
        )
        .filter(rank__lte=STEPS_SHOWN)
        .order_by("task", "created_at", "id")
    ):
        shown.setdefault(step.task_id, []).append(step)
    for task in tasks:
        task.shown_steps = shown.get(task.pk, [])
        task.more_steps = counts.get(task.pk, 0) - len(task.shown_steps)
        task.seconds = (
            (task.finished_at - task.created_at).total_seconds() if task.finished_at else None
        )
        task.delivery_words = (
            "not yet: still running" if not task.is_finished else DELIVERY_WORDS[task.delivery]
        )
    return {task.execution_id: task for task in tasks}


def session_page(session_id: str) -> str:
    return reverse("admin:sessions_app_voicesession_change", args=[quote(session_id)])


def timeline(
    session: VoiceSession,
    items: list[Item],
    runs: list[ToolExecution],
    tasks: dict[int, Task] | None = None,
    resumed_by: Sequence[VoiceSession] = (),
) -> list[Entry]:
    """The conversation in order: turns, tool calls in place (with their run's status,
    duration, output and error, whichever door ran them; a call that went on in the
    background with its task, from tasks_of()), how each task ended, how the call
    connected and ended, and the sessions it resumed or that resumed it. Times are
    relative to the start of the call. runs are the session's calls (not an agent's own
    steps: those are under their task), read with their arguments cut
    (ToolExecution.objects.with_arguments_shown())."""
    tasks = tasks or {}
    by_call = {run.call_id: run for run in runs}
    outputs = {
        item.call_id: item.text for item in items if item.kind == Item.Kind.FUNCTION_CALL_OUTPUT
    }
    entries: list[Entry] = []
    shown: set[str] = set()
    for item in items:
        if item.kind == Item.Kind.MESSAGE:
            entries.append(_message(item))
        elif item.kind == Item.Kind.FUNCTION_CALL:
            entries.append(_tool_call(item.created_at, item.name, item.call_id, item.arguments))
            shown.add(item.call_id)
        elif item.call_id not in by_call and item.call_id not in shown:
            entries.append(_tool_call(item.created_at, "", item.call_id, ""))  # an orphan output
            shown.add(item.call_id)
    for run in runs:  # runs the transcript does not show (a browser's relay, say)
        if run.call_id not in shown:
            entries.append(_tool_call(run.created_at, run.tool, run.call_id, ""))
    for entry in entries:
        if entry.kind != "tool":
            continue
        run = by_call.get(entry.call_id)
        entry.output = outputs.get(entry.call_id, "")
        if run is not None:
            entry.name = entry.name or run.tool
            entry.arguments = entry.arguments or _arguments(run)
            entry.status = run.status
            entry.duration = run.duration_seconds
            entry.task = tasks.get(run.pk)
            if entry.task is None:
                entry.output = _without_error(run.output or entry.output, run.error)
                entry.error = run.error
            # A task's result is shown with the task (cut); the call's own output is
            # what the model heard at once (that it started).
        elif entry.output:
            entry.status = ToolExecution.Status.SUCCEEDED
    for task in tasks.values():
        if task.finished_at:
            said = f"Task {task.pk} ({task.summary or task.tool}) {task.status}"
            entries.append(Entry(task.finished_at, "event", text=said, key=_key("task", task.pk)))
    if session.resumed_from_id:
        entries.append(
            Entry(
                session.created_at,
                "event",
                text="Resumed from",
                link=session_page(session.resumed_from_id),
                linked=session.resumed_from_id,
                key=_key("resumed from", session.resumed_from_id),
            )
        )
    for later in resumed_by:
        entries.append(
            Entry(
                later.created_at,
                "event",
                text="Resumed as",
                link=session_page(later.pk),
                linked=later.pk,
                key=_key("resumed as", later.pk),
            )
        )
    if session.connected_at:
        entries.append(
            Entry(session.connected_at, "event", text="Call connected", key=_key("connected"))
        )
    if session.ended_at:
        how = session.get_end_reason_display() or session.get_status_display()
        # Last of what was said: words said as it ended (a goodbye) are written a moment
        # after the end was.
        said = [item.created_at for item in items]
        ended_at = max([session.ended_at, *said])
        entries.append(Entry(ended_at, "event", text=f"Ended: {how}", key=_key("ended")))
    entries.sort(key=lambda entry: entry.at)
    start = session.connected_at or session.created_at
    for entry in entries:
        delta = entry.at - start
        entry.offset = ("−" if delta < timedelta(0) else "+") + clock(abs(delta.total_seconds()))
    return entries


def _without_error(output: str, error: str) -> str:
    """A failed call's output without the error it ends with (a tool's failure is told
    to the model as its output, and recorded as its error): the page shows it once."""
    error = error.strip()
    if error and output.rstrip().endswith(error):
        return output.rstrip()[: -len(error)].rstrip()
    return output


def conversation(session: VoiceSession) -> tuple[list[Entry], list[VoiceSession]]:
    """The session's timeline as its page shows it, read from the database, and the
    sessions that resumed it (the admin's page and the live view both read this)."""
    items = list(session.items.order_by("created_at", "id"))
    # Each run's arguments cut in the database: the page stays bounded however much a
    # session's calls sent.
    runs = list(
        session.tool_executions.exclude(origin=ToolExecution.Origin.AGENT)
        .with_arguments_shown()
        .order_by("created_at", "id")
    )
    resumed_by = list(session.resumed_by.order_by("created_at", "pk"))
    return timeline(session, items, runs, tasks_of(session), resumed_by), resumed_by


def _arguments(run: ToolExecution) -> str:
    """A run's arguments as read cut to a bound (ToolExecution's with_arguments_shown)."""
    shown = shown_arguments(run.arguments_head, run.arguments_chars)
    if isinstance(shown, str):
        return shown
    return json.dumps(shown, ensure_ascii=False) if shown else ""


def summary_status(session: VoiceSession) -> str:
    """Where the session's post-call summary stands, in words, when there is none to
    show (with why, when the summary says); an empty string when there is one."""
    state = VoiceSession.SummaryState
    if session.summary:
        return ""
    if session.is_live:
        return "Written when the call ends."
    said = {
        state.PENDING: "Being written.",
        state.SKIPPED: "Not summarized.",
        state.FAILED: "The summary could not be written.",
        state.DONE: "",
    }.get(session.summary_state, "None: summaries were off, or not yet written, when it ended.")
    return " ".join(part for part in (said, session.summary_note) if part)


def audio_quality(stats: dict) -> str:
    """The browser's audio report in one line, or an empty string."""
    if not stats or not stats.get("samples"):
        return ""
    parts = []
    if "rtt_seconds_avg" in stats:
        parts.append(
            f"round trip {stats['rtt_seconds_avg'] * 1000:.0f} ms "
            f"(worst {stats.get('rtt_seconds_max', 0) * 1000:.0f} ms)"
        )
    if "jitter_seconds_avg" in stats:
        parts.append(f"jitter {stats['jitter_seconds_avg'] * 1000:.0f} ms")
    if "loss_ratio" in stats:
        parts.append(f"packet loss {stats['loss_ratio']:.1%}")
    parts.append(f"{stats['samples']} reports")
    return ", ".join(parts)
