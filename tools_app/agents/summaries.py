"""Post-call summaries: what a call came to, in a few sentences, with an outcome and a
few topics, written after the session ends by SUMMARY_MODEL through our provider module
(the Responses API; the simulator's without a key).

The model reads the session's stored conversation items (already redacted), one turn
a line, tool calls by name only:

    Caller: I was charged twice for my order.
    Assistant: I see two charges; I have refunded one of them.
    Tool call: bash

and is asked for JSON only, by a strict JSON schema named `call_summary` (the name the
simulator knows summary requests by): {"summary", "outcome", "topics"}. An answer
that is not that is an UnusableAnswer, an LLM error worth another try as an upstream
failure is; every answer's tokens and cost are counted, usable or not, on the session's
summary fields and its totals. What is stored is redacted as transcript text is.
Sessions in which the caller said nothing, or fewer than SUMMARY_MIN_WORDS words were
said, are skipped. Retrying, and giving up, are the caller's (summarize_session_task).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal

from amplifier_core import ChatRequest, ChatResponse, LLMError, Message
from amplifier_core.message_models import ResponseFormatJsonSchema
from django.conf import settings
from django.db.models import F
from django.utils import timezone

from sessions_app.models import ConversationItem as Item
from sessions_app.models import VoiceSession
from tools_app.agents.provider import NAME, ResponsesProvider
from voiceplatform import redaction, syncloop

State = VoiceSession.SummaryState
Outcome = VoiceSession.Outcome

FORMAT_NAME = "call_summary"
SCHEMA = {
    "type": "object",
    "properties": {
        "summary": {"type": "string"},
        "outcome": {"type": "string", "enum": list(Outcome.values)},
        "topics": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["summary", "outcome", "topics"],
    "additionalProperties": False,
}
INSTRUCTIONS = """\
You write the note support staff read after a voice call between a caller and an AI
assistant. The transcript follows, one turn a line ("Caller:", "Assistant:", "Tool
call:"). Answer with JSON only, no other text:
- "summary": two or three plain sentences: what the caller wanted, what was done, how
  the call ended;
- "outcome": "resolved" when the caller's request was dealt with; "follow_up" when
  someone must come back to it (a call back, a promise to check, an open question);
  "not_resolved" otherwise;
- "topics": one to five short topics, one to three lower-case words each.
Say nothing the transcript does not say. Leave out secrets and personal data such as
phone numbers, e-mail addresses, card numbers, passwords and keys."""

# What the model reads at most (about 12k tokens): the start and, mostly, the end.
MAX_TRANSCRIPT_CHARS = 48_000
HEAD_CHARS = 12_000
# Room for a reasoning model's thinking as well as the answer.
MAX_OUTPUT_TOKENS = 4_000
SUMMARY_MAX_CHARS = 2_000
TOPICS_MAX = 5
TOPIC_MAX_CHARS = 40
NOTE_MAX_CHARS = 200
LABELS = {Item.Role.USER: "Caller", Item.Role.ASSISTANT: "Assistant"}
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


class UnusableAnswer(LLMError):
    """The model answered, but not with the JSON asked for: worth another try."""

    def __init__(self, message: str) -> None:
        super().__init__(message, provider=NAME, retryable=True)


@dataclass(frozen=True)
class Transcript:
    text: str
    words: int  # said by the caller and the assistant
    caller_spoke: bool


@dataclass(frozen=True)
class Summary:
    summary: str
    outcome: str
    topics: list[str]


def transcript_of(items: list[Item]) -> Transcript:
    """The conversation as the model reads it (see the module's docstring)."""
    lines: list[str] = []
    words = 0
    caller_spoke = False
    for item in items:
        if item.kind == Item.Kind.FUNCTION_CALL:
            lines.append(f"Tool call: {item.name or 'unknown'}")
            continue
        label = LABELS.get(item.role)
        text = " ".join(item.text.split())
        if item.kind != Item.Kind.MESSAGE or label is None or not text:
            continue
        if item.status == Item.Status.FAILED:
            continue
        lines.append(f"{label}: {text}")
        words += len(text.split())
        caller_spoke = caller_spoke or item.role == Item.Role.USER
    text = "\n".join(lines)
    if len(text) > MAX_TRANSCRIPT_CHARS:
        tail = MAX_TRANSCRIPT_CHARS - HEAD_CHARS
        left_out = len(text) - MAX_TRANSCRIPT_CHARS
        text = f"{text[:HEAD_CHARS]}\n[… {left_out} characters left out …]\n{text[-tail:]}"
    return Transcript(text=text, words=words, caller_spoke=caller_spoke)


def parse(answer: str) -> Summary:
    """The model's answer as a Summary; UnusableAnswer when it is not one. Topics are
    taken as far as they are usable; summary and outcome must be there."""
    raw = answer.strip()
    if fenced := _FENCE.match(raw):
        raw = fenced.group(1)
    try:
        data = json.loads(raw)
    except ValueError:
        raise UnusableAnswer("The summary's model did not answer with JSON.") from None
    if not isinstance(data, dict):
        raise UnusableAnswer("The summary's model did not answer with a JSON object.")
    summary = data.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        raise UnusableAnswer("The summary's model gave no summary.")
    outcome = data.get("outcome")
    outcome = re.sub(r"[\s-]+", "_", outcome.strip().lower()) if isinstance(outcome, str) else ""
    if outcome not in Outcome.values:
        raise UnusableAnswer(f"The summary's model gave no known outcome ({outcome[:40]!r}).")
    given = data.get("topics")
    topics: list[str] = []
    for topic in given if isinstance(given, list) else []:
        cleaned = (
            " ".join(topic.split()).lower()[:TOPIC_MAX_CHARS] if isinstance(topic, str) else ""
        )
        if cleaned and cleaned not in topics:
            topics.append(cleaned)
    return Summary(
        summary=" ".join(summary.split())[:SUMMARY_MAX_CHARS],
        outcome=outcome,
        topics=topics[:TOPICS_MAX],
    )


async def ask(transcript: str) -> ChatResponse:
    """One request to the summary's model (LLMError when the upstream fails)."""
    provider = ResponsesProvider({"model": settings.SUMMARY_MODEL})
    request = ChatRequest(
        messages=[
            Message(role="system", content=INSTRUCTIONS),
            Message(role="user", content=transcript),
        ],
        response_format=ResponseFormatJsonSchema(
            json_schema={"name": FORMAT_NAME, "schema": SCHEMA}, strict=True
        ),
        max_output_tokens=MAX_OUTPUT_TOKENS,
    )
    try:
        return await provider.complete(request)
    finally:
        await provider.close()


def _answer_text(response: ChatResponse) -> str:
    return "".join(getattr(block, "text", "") for block in response.content or [])


def _count(session_id: str, response: ChatResponse) -> None:
    usage = response.usage
    inputs, outputs = usage.input_tokens or 0, usage.output_tokens or 0
    cost = Decimal(str(usage.cost_usd or 0))
    VoiceSession.objects.filter(pk=session_id).update(
        summary_input_tokens=F("summary_input_tokens") + inputs,
        summary_output_tokens=F("summary_output_tokens") + outputs,
        summary_cost_usd=F("summary_cost_usd") + cost,
        input_tokens=F("input_tokens") + inputs,
        output_tokens=F("output_tokens") + outputs,
        total_tokens=F("total_tokens") + inputs + outputs,
        cost_usd=F("cost_usd") + cost,
    )


def _store(session_id: str, state: State, note: str = "", summary: Summary | None = None):
    now = timezone.now()
    VoiceSession.objects.filter(pk=session_id).update(
        summary_state=state,
        summary_note=note[:NOTE_MAX_CHARS],
        summary=redaction.storable(redaction.redact(summary.summary)) if summary else "",
        outcome=summary.outcome if summary else "",
        topics=[redaction.storable(redaction.redact(t)) for t in summary.topics] if summary else [],
        summarized_at=now if summary else None,
        updated_at=now,
    )


def summarize(session_id: str, *, force: bool = False) -> str:
    """Writes the ended session's summary (again, with force) and returns the state it
    reached: done or skipped; "" when there is nothing to summarize (no such session, or
    one still live). Raises LLMError when the model fails or answers unusably."""
    session = VoiceSession.objects.filter(pk=session_id).only("status", "summary_state").first()
    if session is None or session.is_live:
        return ""
    if session.summary_state == State.DONE and not force:
        return State.DONE
    items = list(
        Item.objects.filter(session_id=session_id)
        .order_by("created_at", "id")
        .only("kind", "role", "status", "text", "name")
    )
    transcript = transcript_of(items)
    if not transcript.caller_spoke or transcript.words < settings.SUMMARY_MIN_WORDS:
        said = "The caller said nothing" if not transcript.caller_spoke else "Too little was said"
        _store(session_id, State.SKIPPED, f"{said} ({transcript.words} words).")
        return State.SKIPPED
    response = syncloop.run(ask(transcript.text))
    _count(session_id, response)  # paid for, usable or not
    _store(session_id, State.DONE, summary=parse(_answer_text(response)))
    return State.DONE


def mark(session_id: str, state: State, note: str = "") -> None:
    """Says where a summary stands without touching what it holds (pending, failed)."""
    VoiceSession.objects.filter(pk=session_id).update(
        summary_state=state, summary_note=note[:NOTE_MAX_CHARS], updated_at=timezone.now()
    )


def mark_queued(session_id: str) -> None:
    """Pending, once queued: unless the summary already says how it went (a task run
    in process may be done before its queuer marks it)."""
    VoiceSession.objects.filter(pk=session_id, summary_state="").update(
        summary_state=State.PENDING, updated_at=timezone.now()
    )


def retryable(exc: Exception) -> bool:
    """Whether another try may go better: the upstream down, slow or busy, or an answer
    that was not usable; not a refused key or request."""
    return bool(getattr(exc, "retryable", False))


def retry_after(exc: Exception, retries: int) -> float:
    """Seconds before try number retries + 2: SUMMARY_RETRY_SECONDS doubled each time,
    or longer when the upstream asked for longer."""
    wait = settings.SUMMARY_RETRY_SECONDS * 2**retries
    return max(wait, float(getattr(exc, "retry_after", None) or 0))
