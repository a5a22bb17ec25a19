"""Finding sessions by what was said in them, what they came to, and who and what
they were.

On PostgreSQL the transcript is searched as full text (a GIN index on the items' text,
migration 0009), and so are the post-call summary and topics (another on the
session's, migration 0014); sessions are ranked by their best matching line (or their
summary, when no line matches), that line highlighted; on SQLite, by substring. Either
way a search also matches the session id, the call id, the user's name, the API key's
name and the client's address.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re

from django.contrib.postgres.search import SearchHeadline, SearchQuery, SearchRank, SearchVector
from django.db import connection
from django.db.models import (
    Case,
    CharField,
    F,
    FloatField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    TextField,
    Value,
    When,
)
from django.db.models.functions import Cast, Coalesce
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from sessions_app.models import ConversationItem, VoiceSession

# The text search configuration the index was built with (migration 0009 names it too).
CONFIG = "english"
# Marks around a match in a headline, chosen so no transcript holds them: the line is
# escaped as text first, then they become <mark> elements.
_START, _STOP = "\x02", "\x03"

RANK = "search_rank"
MATCH = "search_match"
TERM = "search_term"


def full_text() -> bool:
    return connection.vendor == "postgresql"


# What may be the start of a session or call id (e.g. "sess_Ab3d" copied from a log
# line): long enough not to find nearly everything.
_ID_PREFIX = re.compile(r"[\w-]{6,80}", re.ASCII)


def _who(term: str) -> Q:
    ids = (
        Q(pk__startswith=term) | Q(call_id__startswith=term)
        if _ID_PREFIX.fullmatch(term)
        else Q(pk=term) | Q(call_id=term)
    )
    found = ids | Q(user__username__iexact=term) | Q(api_key__name__icontains=term)
    with contextlib.suppress(ValueError):
        found |= Q(client_ip=str(ipaddress.ip_address(term)))
    return found


def sessions_matching(sessions: QuerySet, term: str) -> QuerySet:
    """The sessions a search term finds, each annotated with its rank (higher is
    closer; None where only its metadata matched) and its best matching line."""
    term = term.strip()
    if not term:
        return sessions
    items = ConversationItem.objects.filter(session=OuterRef("pk"))
    if full_text():
        query = SearchQuery(term, config=CONFIG, search_type="websearch")
        vector = SearchVector("text", config=CONFIG)
        hits = ConversationItem.objects.annotate(found=vector).filter(found=query)
        best = (
            items.annotate(found=vector)
            .filter(found=query)
            .annotate(rank=SearchRank(vector, query))
            .order_by("-rank", "created_at")
        )
        headline = SearchHeadline(
            "text", query, config=CONFIG, start_sel=_START, stop_sel=_STOP, max_words=24
        )
        # The vector migration 0014's index is built on.
        summarized = SearchVector("summary", "topics", config=CONFIG)
        summaries = VoiceSession.objects.annotate(found=summarized).filter(found=query)
        summary = summaries.filter(pk=OuterRef("pk"))
        summary_headline = SearchHeadline(
            "summary", query, config=CONFIG, start_sel=_START, stop_sel=_STOP, max_words=24
        )
        return sessions.filter(
            Q(pk__in=hits.values("session_id")) | Q(pk__in=summaries.values("pk")) | _who(term)
        ).annotate(
            **{
                RANK: Coalesce(
                    Subquery(best.values("rank")[:1], output_field=FloatField()),
                    Subquery(
                        summary.annotate(rank=SearchRank(summarized, query)).values("rank")[:1],
                        output_field=FloatField(),
                    ),
                ),
                MATCH: Coalesce(
                    Subquery(best.annotate(line=headline).values("line")[:1]),
                    Subquery(summary.annotate(line=summary_headline).values("line")[:1]),
                ),
                TERM: Value(term, output_field=CharField()),
            }
        )
    best = items.filter(text__icontains=term).order_by("created_at")
    in_summary = Q(summary__icontains=term)
    return (
        sessions.alias(topics_text=Cast("topics", TextField()))
        .filter(
            Q(items__text__icontains=term)
            | in_summary
            | Q(topics_text__icontains=term)
            | _who(term)
        )
        .distinct()
        .annotate(
            **{
                RANK: Value(None, output_field=FloatField()),
                MATCH: Coalesce(
                    Subquery(best.values("text")[:1]),
                    Case(When(in_summary, then=F("summary")), default=None),
                ),
                TERM: Value(term, output_field=CharField()),
            }
        )
    )


def ranked():
    """The ordering of a search's results: the closest transcript match first."""
    return [F(RANK).desc(nulls_last=True), "-created_at"]


def highlighted(session) -> SafeString:
    """A found session's best matching line as HTML, its matches in <mark>."""
    line, term = getattr(session, MATCH, None), getattr(session, TERM, "")
    if not line:
        return mark_safe("")  # noqa: S308 (empty)
    if _START not in line and term:
        # Substring search: mark the term's occurrences, case-insensitively.
        lowered, needle, marked, at = line.lower(), term.lower(), [], 0
        while (found := lowered.find(needle, at)) >= 0:
            marked += [line[at:found], _START, line[found : found + len(term)], _STOP]
            at = found + len(term)
        line = "".join([*marked, line[at:]])
    html = escape(line).replace(_START, "<mark>").replace(_STOP, "</mark>")
    return mark_safe(html)  # noqa: S308 (escaped above; only our marks are markup)
