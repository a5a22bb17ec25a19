"""Declared request bodies of the voice API."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator

from sessions_app.models import VoiceSession
from voiceplatform.api import Body

MAX_INSTRUCTIONS_CHARS = 4000
MAX_EVENTS_PER_POST = 500


class SessionBody(Body):
    instructions: Annotated[str, Field(max_length=MAX_INSTRUCTIONS_CHARS)] | None = None
    voice: VoiceSession.Voice | None = None

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
