"""Declared request bodies of the voice API."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field, field_validator

from sessions_app.models import VoiceSession
from voiceplatform.api import Body

MAX_INSTRUCTIONS_CHARS = 4000
MAX_EVENTS_PER_POST = 500
MAX_SESSION_ID_CHARS = 40  # VoiceSession.id
MAX_SESSIONS_PER_PAGE = 50
MAX_SESSIONS_PAGE = 1000  # past that, narrow the list rather than page through it


class SessionBody(Body):
    instructions: Annotated[str, Field(max_length=MAX_INSTRUCTIONS_CHARS)] | None = None
    voice: VoiceSession.Voice | None = None
    # A past session of the same caller to carry on from (sessions_app.resume).
    resume: Annotated[str, Field(min_length=1, max_length=MAX_SESSION_ID_CHARS)] | None = None

    @field_validator("voice", mode="before")
    @classmethod
    def _known_voice(cls, value: Any) -> Any:
        # Strict mode takes enum members only; the wire carries their values.
        if isinstance(value, str) and value in VoiceSession.Voice.values:
            return VoiceSession.Voice(value)
        if value is not None:
            raise ValueError(f"must be one of: {', '.join(VoiceSession.Voice.values)}")
        return value


# What _typed checks, said in the body's JSON schema too (GET /api/openapi.json).
REALTIME_EVENT_SCHEMA = {
    "type": "object",
    "required": ["type"],
    "properties": {"type": {"type": "string"}},
    "additionalProperties": True,
}


class EventsBody(Body):
    events: Annotated[
        list[dict[str, Any]],
        Field(max_length=MAX_EVENTS_PER_POST, json_schema_extra={"items": REALTIME_EVENT_SCHEMA}),
    ]

    @field_validator("events")
    @classmethod
    def _typed(cls, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not all(isinstance(event.get("type"), str) for event in events):
            raise ValueError("each event must be a realtime event (an object with a type)")
        return events


class SessionsQuery(Body):
    """GET /sessions?page=&limit=: query strings are text, so numbers are read from it
    (the declared ranges still hold, and unknown parameters are refused)."""

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)

    page: Annotated[int, Field(ge=1, le=MAX_SESSIONS_PAGE, strict=False)] = 1
    limit: Annotated[int, Field(ge=1, le=MAX_SESSIONS_PER_PAGE, strict=False)] = 20

    @field_validator("page", "limit", mode="before")
    @classmethod
    def _digits(cls, value: Any) -> Any:
        # Lax ints would take "1.0" or " 2"; a page number is plain digits.
        if isinstance(value, str) and not (value.isascii() and value.isdigit()):
            raise ValueError("must be a whole number")
        return value
