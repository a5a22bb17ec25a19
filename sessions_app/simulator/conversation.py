"""The scripted conversation a simulated call plays: deterministic, event for event."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Emit = Callable[[dict], Awaitable[None]]

SPOKEN_TURN = "Hello, what can you do?"
SPOKEN_REPLY = "I can talk with you, and run tools like bash and file access when they are enabled."
NO_TOOLS_REPLY = "I can't execute tasks right now, but I can still help with questions."
NOTHING_REMEMBERED_REPLY = "I don't remember an earlier conversation."
# What makes the scripted model say what its instructions hold of an earlier
# conversation: the part from this heading on (sessions_app.resume writes it).
_REMEMBER = re.compile(r"\bwhat (?:do you remember|were we talking about)\b", re.I)
EARLIER_HEADING = "Earlier conversation"
# A response asked for with instructions of its own (response.create's
# response.instructions, e.g. the goodbye when staff end a call) and nothing told or
# answered to report first: the scripted model says what they quote, or "OK." when
# they quote nothing.
_QUOTED = re.compile(r'"([^"]+)"')

# How long the scripted model speaks a reply (its voice is a tone, see peer.Voice): long
# enough for a page to see who is speaking, short enough to hold up no test.
SPOKEN_CHARS_PER_SECOND = 30
SPOKEN_SECONDS_MAX = 3.0

# What the user says -> the tool the scripted model calls, and with which arguments.
_TOOL_TRIGGERS: list[tuple[re.Pattern[str], str, Callable[[re.Match[str]], dict]]] = [
    (re.compile(r"\blist (?:the )?files\b", re.I), "bash", lambda m: {"command": "ls -la"}),
    (
        re.compile(r"\bread (?:the )?file (\S+)", re.I),
        "read_file",
        lambda m: {"file_path": m.group(1)},
    ),
    (
        re.compile(r"\bsearch (?:the web )?for (.+)", re.I),
        "web_search",
        lambda m: {"query": m.group(1)},
    ),
    # Background work: a command, an agent; how it goes; stop it.
    (re.compile(r"\brun [`'\"](.+?)[`'\"]", re.I), "bash", lambda m: {"command": m.group(1)}),
    (
        re.compile(r"\bask the (\w+) agent to (.+)", re.I),
        "delegate",
        lambda m: {"agent": m.group(1).lower(), "instruction": m.group(2)},
    ),
    (re.compile(r"\bhow is (?:it|the task) going\b", re.I), "task_status", lambda m: {}),
    (re.compile(r"\b(?:stop|cancel) (?:that|the task)\b", re.I), "cancel_task", lambda m: {}),
]


def tool_call_for(text: str) -> tuple[str, dict] | None:
    for pattern, tool, arguments in _TOOL_TRIGGERS:
        match = pattern.search(text)
        if match:
            return tool, arguments(match)
    return None


@dataclass
class Conversation:
    """Turns client events into server events for one call."""

    emit: Emit
    call_id: str
    session: dict
    _counter: int = 0
    _unanswered: str | None = None
    _outputs: dict[str, str] = field(default_factory=dict)
    _awaiting: dict[str, str] = field(default_factory=dict)
    _notices: list[str] = field(default_factory=list)  # system messages not yet reported
    spoke: bool = False
    speaking_until: float = 0.0  # time.monotonic() when the model's voice falls silent

    def _next_id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}_{self.call_id[4:16]}{self._counter:03d}"

    @property
    def tool_names(self) -> set[str]:
        return {tool.get("name") for tool in self.session.get("tools") or []}

    async def start(self) -> None:
        await self.emit({"type": "session.created", "session": self.session})

    async def handle(self, event: dict) -> None:
        kind = event.get("type")
        handler = {
            "session.update": self._session_update,
            "conversation.item.create": self._item_create,
            "response.create": self._response_create,
            "response.cancel": self._response_cancel,
            "input_audio_buffer.commit": self._commit,
            "input_audio_buffer.clear": self._clear,
            "input_audio_buffer.append": self._append,
        }.get(kind)
        if handler is None:
            await self._error("unknown_event", f"Invalid value: '{kind}'.", event)
            return
        await handler(event)

    async def user_spoke(self) -> None:
        """Voice activity: the scripted user says one thing, and the model answers."""
        if self.spoke:
            return
        self.spoke = True
        item_id = self._next_id("item")
        await self.emit({"type": "input_audio_buffer.speech_started", "item_id": item_id})
        await self.emit({"type": "input_audio_buffer.speech_stopped", "item_id": item_id})
        await self._user_audio_item(item_id, SPOKEN_TURN)
        await self._reply(SPOKEN_REPLY, user_text=SPOKEN_TURN)

    # --- client events -------------------------------------------------------------

    async def _session_update(self, event: dict) -> None:
        update = event.get("session")
        if not isinstance(update, dict) or update.get("type") != "realtime":
            await self._error("invalid_value", "session.type must be 'realtime'.", event)
            return
        self.session = {**self.session, **update}
        await self.emit({"type": "session.updated", "session": self.session})

    async def _item_create(self, event: dict) -> None:
        item = event.get("item")
        if not isinstance(item, dict):
            await self._error("missing_required_parameter", "Missing 'item'.", event)
            return
        item = {**item, "id": item.get("id") or self._next_id("item"), "status": "completed"}
        if item.get("type") == "function_call_output":
            call_id = item.get("call_id")
            if call_id not in self._awaiting:
                await self._error("invalid_value", f"No function call '{call_id}'.", event)
                return
            self._outputs[call_id] = str(item.get("output", ""))
            del self._awaiting[call_id]
        elif item.get("type") == "message" and item.get("role") == "user":
            texts = [
                part.get("text", "")
                for part in item.get("content") or []
                if isinstance(part, dict) and part.get("type") == "input_text"
            ]
            self._unanswered = " ".join(texts).strip()
        elif item.get("type") == "message" and item.get("role") == "system":
            self._notices.extend(
                part.get("text", "")
                for part in item.get("content") or []
                if isinstance(part, dict) and part.get("type") == "input_text"
            )
        await self.emit({"type": "conversation.item.added", "item": item})
        await self.emit({"type": "conversation.item.done", "item": item})

    async def _response_create(self, event: dict) -> None:
        if self._notices:  # told something by the server: the model reports it
            notice = self._notices.pop(0)
            await self._reply(f"An update: {' '.join(notice.split())[:300]}")
            return
        if self._outputs:
            output = self._outputs.pop(next(iter(self._outputs)))
            await self._reply(f"Here is what I found: {output[:300]}")
            return
        asked = event.get("response")
        own = asked.get("instructions") if isinstance(asked, dict) else None
        if isinstance(own, str) and own.strip():
            quoted = _QUOTED.search(own)
            await self._reply(quoted.group(1) if quoted else "OK.")
            return
        text, self._unanswered = self._unanswered, None
        if text is None:
            await self._reply("How can I help you?")
        elif "simulate error" in text.lower():
            await self._error("simulated_error", "The simulator was asked to fail this turn.")
        elif _REMEMBER.search(text):
            await self._reply(self._remembered(), user_text=text)
        elif (call := tool_call_for(text)) is not None:
            name, arguments = call
            if name in self.tool_names:
                await self._function_call(name, arguments, user_text=text)
            else:
                await self._reply(NO_TOOLS_REPLY, user_text=text)
        else:
            await self._reply(f"You said: {text}. This is the voiceplatform simulator.", text)

    def _remembered(self) -> str:
        """The earlier conversation its instructions carry, as a reply on one line."""
        instructions = str(self.session.get("instructions") or "")
        start = instructions.find(EARLIER_HEADING)
        if start < 0:
            return NOTHING_REMEMBERED_REPLY
        return "From our earlier conversation I remember: " + " ".join(instructions[start:].split())

    async def _response_cancel(self, event: dict) -> None:
        await self.emit({"type": "response.done", "response": {"status": "cancelled"}})

    async def _commit(self, event: dict) -> None:
        await self._user_audio_item(self._next_id("item"), SPOKEN_TURN)
        self._unanswered = SPOKEN_TURN

    async def _clear(self, event: dict) -> None:
        await self.emit({"type": "input_audio_buffer.cleared"})

    async def _append(self, event: dict) -> None:
        # Audio arrives over WebRTC; appended base64 audio is accepted and ignored.
        return None

    # --- server events -------------------------------------------------------------

    async def _error(self, code: str, message: str, event: dict | None = None) -> None:
        await self.emit(
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "code": code,
                    "message": message,
                    "param": None,
                    "event_id": (event or {}).get("event_id"),
                },
            }
        )

    async def _user_audio_item(self, item_id: str, transcript: str) -> None:
        item = {
            "id": item_id,
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        await self.emit({"type": "input_audio_buffer.committed", "item_id": item_id})
        await self.emit({"type": "conversation.item.added", "item": item})
        await self.emit(
            {
                "type": "conversation.item.input_audio_transcription.delta",
                "item_id": item_id,
                "content_index": 0,
                "delta": transcript,
            }
        )
        await self.emit(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": transcript,
            }
        )

    @staticmethod
    def _usage(user_text: str, output: str) -> dict:
        """Usage in the upstream's shape: the instructions as (cached) text input, the
        user's words as audio input, the reply as audio with its transcript as text."""
        text_in, audio_in = 20, len(user_text) // 4
        text_out, audio_out = len(output) // 4, 5 + len(output) // 2
        input_tokens, output_tokens = text_in + audio_in, text_out + audio_out
        return {
            "total_tokens": input_tokens + output_tokens,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "input_token_details": {
                "text_tokens": text_in,
                "audio_tokens": audio_in,
                "cached_tokens": text_in,
                "cached_tokens_details": {"text_tokens": text_in, "audio_tokens": 0},
            },
            "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
        }

    async def _reply(self, text: str, user_text: str = "") -> None:
        response_id = self._next_id("resp")
        item_id = self._next_id("item")
        item = {"id": item_id, "type": "message", "role": "assistant", "status": "in_progress"}
        await self.emit(
            {"type": "response.created", "response": {"id": response_id, "status": "in_progress"}}
        )
        await self.emit(
            {
                "type": "response.output_item.added",
                "response_id": response_id,
                "output_index": 0,
                "item": {**item, "content": []},
            }
        )
        await self._speak(response_id, text)
        words = text.split(" ")
        for start in range(0, len(words), 4):
            await self.emit(
                {
                    "type": "response.output_audio_transcript.delta",
                    "response_id": response_id,
                    "item_id": item_id,
                    "output_index": 0,
                    "content_index": 0,
                    "delta": " ".join(words[start : start + 4])
                    + (" " if start + 4 < len(words) else ""),
                }
            )
        await self.emit(
            {
                "type": "response.output_audio_transcript.done",
                "response_id": response_id,
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "transcript": text,
            }
        )
        done_item = {
            **item,
            "status": "completed",
            "content": [{"type": "output_audio", "transcript": text}],
        }
        await self._finish(response_id, done_item, self._usage(user_text, text))

    async def _speak(self, response_id: str, text: str) -> None:
        """The reply's audio: the voice sounds for a while (output_audio_buffer.started),
        and falls silent after response.done (output_audio_buffer.stopped), as over
        WebRTC upstream."""
        seconds = min(len(text) / SPOKEN_CHARS_PER_SECOND, SPOKEN_SECONDS_MAX)
        self.speaking_until = max(self.speaking_until, time.monotonic() + seconds)
        await self.emit({"type": "output_audio_buffer.started", "response_id": response_id})
        asyncio.get_running_loop().call_later(seconds, self._spoken, response_id)

    def _spoken(self, response_id: str) -> None:
        if time.monotonic() < self.speaking_until - 0.05:
            return  # a later reply is still being spoken: its own stop says when
        asyncio.ensure_future(
            self.emit({"type": "output_audio_buffer.stopped", "response_id": response_id})
        )

    async def _function_call(self, name: str, arguments: dict, user_text: str) -> None:
        response_id = self._next_id("resp")
        item_id = self._next_id("item")
        call_id = self._next_id("call")
        encoded = json.dumps(arguments)
        item = {
            "id": item_id,
            "type": "function_call",
            "status": "in_progress",
            "name": name,
            "call_id": call_id,
            "arguments": "",
        }
        await self.emit(
            {"type": "response.created", "response": {"id": response_id, "status": "in_progress"}}
        )
        await self.emit(
            {
                "type": "response.output_item.added",
                "response_id": response_id,
                "output_index": 0,
                "item": item,
            }
        )
        common = {"response_id": response_id, "item_id": item_id, "output_index": 0}
        await self.emit(
            {
                "type": "response.function_call_arguments.delta",
                **common,
                "call_id": call_id,
                "delta": encoded,
            }
        )
        await self.emit(
            {
                "type": "response.function_call_arguments.done",
                **common,
                "call_id": call_id,
                "arguments": encoded,
            }
        )
        self._awaiting[call_id] = name
        done_item = {**item, "status": "completed", "arguments": encoded}
        await self._finish(response_id, done_item, self._usage(user_text, encoded))

    async def _rate_limits(self) -> None:
        await self.emit(
            {
                "type": "rate_limits.updated",
                "rate_limits": [
                    {"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 60},
                    {"name": "tokens", "limit": 100000, "remaining": 99000, "reset_seconds": 60},
                ],
            }
        )

    async def _finish(self, response_id: str, item: dict, usage: dict) -> None:
        await self.emit(
            {
                "type": "response.output_item.done",
                "response_id": response_id,
                "output_index": 0,
                "item": item,
            }
        )
        await self.emit(
            {
                "type": "response.done",
                "response": {
                    "id": response_id,
                    "object": "realtime.response",
                    "status": "completed",
                    "output": [item],
                    "usage": usage,
                },
            }
        )
        await self._rate_limits()
