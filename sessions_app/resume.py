"""What a resumed conversation carries of the one before: a bounded context for the new
session's instructions, and the one-line preview a list of past sessions shows.

Built from the transcript as stored (already redacted): the first thing the user said
(what the conversation was about) and as many of the last turns as fit, within
RESUME_CONTEXT_MAX_TOKENS, tokens estimated as characters / 4.
"""

from __future__ import annotations

from django.conf import settings
from django.db.models import OuterRef, QuerySet, Subquery
from django.db.models.functions import Left

from sessions_app.models import ConversationItem, VoiceSession

# The heading the context starts with: what a model (and the simulator) reads it by.
HEADING = "Earlier conversation"
PREVIEW_CHARS = 80
# What the list reads of each first turn: enough for a preview however much whitespace
# it collapses; a turn that long or longer was cut.
PREVIEW_READ = 4 * PREVIEW_CHARS
CHARS_PER_TOKEN = 4
# Turns read from the end of a transcript: more than any budget takes.
TAIL_TURNS = 200
# The first turn takes at most this share of the budget: the last turns matter more.
FIRST_TURN_SHARE = 4

LAST_TURNS = "The last turns:"
MIN_TURN_CHARS = 16

SPEAKERS = {ConversationItem.Role.USER: "User", ConversationItem.Role.ASSISTANT: "Assistant"}


def turns(session_id: str) -> QuerySet:
    """The spoken or typed turns of a session, final ones with words in them."""
    return ConversationItem.objects.filter(
        session_id=session_id,
        kind=ConversationItem.Kind.MESSAGE,
        role__in=tuple(SPEAKERS),
        status=ConversationItem.Status.COMPLETED,
    ).exclude(text="")


def with_preview(sessions: QuerySet) -> QuerySet:
    """Sessions annotated with `preview`: the start of their first user turn (one
    subquery per row on the page, not a query each)."""
    first = (
        turns(OuterRef("pk"))
        .filter(role=ConversationItem.Role.USER)
        .order_by("created_at", "id")
        .annotate(start=Left("text", PREVIEW_READ))
        .values("start")[:1]
    )
    return sessions.annotate(preview=Subquery(first))


def preview(text: str | None) -> str:
    """A title for a session: its first user turn on one line, shortened."""
    line = " ".join((text or "").split())
    if len(line) > PREVIEW_CHARS or len(text or "") >= PREVIEW_READ:
        line = line[: PREVIEW_CHARS - 1].rstrip() + "…"
    return line


def _shortened(text: str, chars: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= chars else text[: max(chars - 1, 0)].rstrip() + "…"


async def context_of(session: VoiceSession) -> str:
    """The context a session resuming this one carries, at most the token budget long;
    an empty string when nothing was said (or the budget takes nothing)."""
    head = (
        f"{HEADING} (this conversation resumes one from "
        f"{session.created_at:%Y-%m-%d %H:%M} UTC; use it if the user refers to it):"
    )
    opening = "It began with the user saying: "
    budget = max(settings.RESUME_CONTEXT_MAX_TOKENS, 0) * CHARS_PER_TOKEN
    budget -= len(head) + 1 + len(opening) + 2 + 1 + len(LAST_TURNS)
    if budget < MIN_TURN_CHARS:
        return ""
    first = (
        await turns(session.pk)
        .filter(role=ConversationItem.Role.USER)
        .order_by("created_at", "id")
        .afirst()
    )
    if first is None:
        return ""
    said = _shortened(first.text, budget // FIRST_TURN_SHARE)
    budget -= len(said)
    last: list[str] = []
    async for item in turns(session.pk).order_by("-created_at", "-id")[:TAIL_TURNS]:
        if item.pk == first.pk:
            break  # the opening says it already
        line = f"{SPEAKERS[item.role]}: {' '.join(item.text.split())}"
        if len(line) + 1 > budget:
            if not last and budget > MIN_TURN_CHARS:  # the very last turn, shortened
                last.append(_shortened(line, budget - 1))
            break
        last.append(line)
        budget -= len(line) + 1
    parts = [head, f"{opening}“{said}”"]
    if last:
        parts.append(LAST_TURNS)
        parts.extend(reversed(last))
    return "\n".join(parts)
