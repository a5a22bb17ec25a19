"""Load mode: simulated calls that talk at the pace of a real conversation.

Each talking call plays turn after turn on its sideband: the caller speaks for a while
(voice activity, then the committed audio item and its transcription), the model
answers for a while (its transcript in deltas at speech rate, the finished item, then
`response.done` with usage), a pause; now and then the model calls a tool instead,
and the server on the other end answers it as on any call. One ticker drives every
talking call (a timer per call and per delta would cost the simulator more than the
server it loads): it emits each event once its time has come.

Counts are kept for the benchmark: events emitted, transcript items the calls
created (what the server should have recorded), tool calls made.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from dataclasses import dataclass, field

from .conversation import Conversation
from .state import TERMINAL_STATES

TICK_SECONDS = 0.05
# How long a talking call waits for the server to answer its tool call before it goes
# on with the next turn.
ANSWER_PATIENCE_SECONDS = 10.0
USER_LINES = (
    "Can you check what is in my notes file?",
    "What time is the meeting tomorrow?",
    "Read me the last thing we talked about.",
    "Thanks, that helps a lot.",
)
REPLY = (
    "Sure, let me look at that for you. The notes say the meeting moved to ten in the "
    "morning and that the report is due on Friday, so there is still time to finish it "
    "calmly. Is there anything else you would like me to check?"
)
REPLY_WORDS = REPLY.split()


@dataclass(frozen=True)
class Pace:
    """How a talking call speaks. Durations are means; each turn varies by jitter."""

    user_seconds: float = 2.5  # the caller speaks
    reply_seconds: float = 3.0  # the model speaks
    pause_seconds: float = 1.5  # silence after the reply
    deltas_per_second: float = 12.0  # transcript deltas while the model speaks
    tool_every: int = 6  # every nth turn the model calls a tool instead (0: never)
    tool: str = "read_file"
    jitter: float = 0.3

    @classmethod
    def from_json(cls, body: dict) -> Pace:
        """A pace from a request body; ValueError for what is not one."""
        if not isinstance(body, dict):
            raise ValueError("must be an object.")
        values = {}
        for name, default in cls().__dict__.items():
            if name not in body:
                continue
            value = body[name]
            if isinstance(default, str):
                if not isinstance(value, str) or not value:
                    raise ValueError(f"{name} must be a non-empty string.")
            elif isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number.")
            elif value < 0 or (name == "deltas_per_second" and not 0 < value <= 100):
                raise ValueError(f"{name} is out of range.")
            values[name] = type(default)(value)
        return cls(**values)


@dataclass
class Talker:
    """One call's conversation at a pace: its next events, each with its time."""

    call: object  # state.SimCall
    pace: Pace
    rng: random.Random
    until: float
    due: deque = field(default_factory=deque)  # (monotonic time, event)
    turns: int = 0
    items: int = 0
    tool_calls: int = 0

    @property
    def conversation(self) -> Conversation:
        return self.call.conversation

    def _vary(self, seconds: float) -> float:
        return max(0.05, seconds * self.rng.uniform(1 - self.pace.jitter, 1 + self.pace.jitter))

    def plan_turn(self, start: float) -> None:
        """Schedules the next turn's events from start on."""
        self.turns += 1
        pace, conversation = self.pace, self.conversation
        at = start
        user_item = conversation._next_id("item")
        line = USER_LINES[self.turns % len(USER_LINES)]
        self.due.append((at, {"type": "input_audio_buffer.speech_started", "item_id": user_item}))
        at += self._vary(pace.user_seconds)
        user = {
            "id": user_item,
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        for event in (
            {"type": "input_audio_buffer.speech_stopped", "item_id": user_item},
            {"type": "input_audio_buffer.committed", "item_id": user_item},
            {"type": "conversation.item.added", "item": user},
        ):
            self.due.append((at, event))
        words = line.split(" ")
        for start_word in range(0, len(words), 3):
            at += 1 / pace.deltas_per_second
            delta = " ".join(words[start_word : start_word + 3]) + " "
            self.due.append(
                (
                    at,
                    {
                        "type": "conversation.item.input_audio_transcription.delta",
                        "item_id": user_item,
                        "content_index": 0,
                        "delta": delta,
                    },
                )
            )
        self.due.append(
            (
                at,
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": user_item,
                    "content_index": 0,
                    "transcript": line,
                },
            )
        )
        self.items += 1
        if pace.tool_every and self.turns % pace.tool_every == 0:
            # The model calls a tool; the server's answer (an item of its own) makes it
            # reply (Conversation): three items more.
            self.due.append((at + 0.2, ("tool", line)))
            self.due.append((at + 0.2, ("answered", None)))
            self.items += 3
            self.tool_calls += 1
            return
        self._plan_reply(at + 0.2, line)

    def _plan_reply(self, at: float, line: str) -> None:
        pace, conversation = self.pace, self.conversation
        response_id = conversation._next_id("resp")
        item_id = conversation._next_id("item")
        item = {"id": item_id, "type": "message", "role": "assistant", "status": "in_progress"}
        common = {"response_id": response_id, "output_index": 0}
        part = {"item_id": item_id, "content_index": 0}
        seconds = self._vary(pace.reply_seconds)
        count = max(1, round(seconds * pace.deltas_per_second))
        per = max(1, len(REPLY_WORDS) // count)
        spoken = REPLY_WORDS[: per * count]
        text = " ".join(spoken)
        for event in (
            {"type": "response.created", "response": {"id": response_id, "status": "in_progress"}},
            {"type": "response.output_item.added", **common, "item": {**item, "content": []}},
            {"type": "conversation.item.added", "item": {**item, "content": []}},
            {
                "type": "response.content_part.added",
                **common,
                **part,
                "part": {"type": "audio", "transcript": ""},
            },
            {"type": "output_audio_buffer.started", "response_id": response_id},
        ):
            self.due.append((at, event))
        for index in range(count):
            at += 1 / pace.deltas_per_second
            delta = " ".join(spoken[index * per : (index + 1) * per]) + " "
            self.due.append(
                (
                    at,
                    {
                        "type": "response.output_audio_transcript.delta",
                        **common,
                        **part,
                        "delta": delta,
                    },
                )
            )
        done_item = {
            **item,
            "status": "completed",
            "content": [{"type": "output_audio", "transcript": text}],
        }
        usage = Conversation._usage(line, text)
        for event in (
            {"type": "response.output_audio_transcript.done", **common, **part, "transcript": text},
            {
                "type": "response.content_part.done",
                **common,
                **part,
                "part": {"type": "audio", "transcript": text},
            },
            {"type": "response.output_item.done", **common, "item": done_item},
            {"type": "conversation.item.done", "item": done_item},
            {
                "type": "response.done",
                "response": {
                    "id": response_id,
                    "object": "realtime.response",
                    "status": "completed",
                    "output": [done_item],
                    "usage": usage,
                },
            },
        ):
            self.due.append((at, event))
        at += 0.3  # the voice plays out
        self.due.append((at, {"type": "output_audio_buffer.stopped", "response_id": response_id}))
        self.items += 1
        self.due.append((at + self._vary(self.pace.pause_seconds), None))  # the pause

    async def step(self, now: float) -> None:
        """Emits what is due by now."""
        while True:
            if not self.due:
                if now >= self.until:
                    return  # the last turn is over
                self.plan_turn(now)
            at, event = self.due[0]
            if at > now:
                return
            if isinstance(event, tuple) and event[0] == "answered":
                # The model's reply to its tool's output comes first (or gives up).
                conversation = self.conversation
                waiting = conversation._awaiting or conversation._outputs
                if waiting and now < at + ANSWER_PATIENCE_SECONDS:
                    return
                self.due.popleft()
                self.due.appendleft((now + self._vary(self.pace.pause_seconds), None))
                continue
            self.due.popleft()
            if event is None:  # a pause ended
                continue
            if isinstance(event, tuple):  # the model calls a tool
                await self.conversation._function_call(
                    self.pace.tool, {"file_path": "notes.txt"}, event[1]
                )
                continue
            await self.call.emit(event)


class Traffic:
    """Every talking call of this simulator, and the one ticker that drives them."""

    def __init__(self) -> None:
        self.talkers: dict[str, Talker] = {}
        self.finished = {"turns": 0, "items": 0, "tool_calls": 0}
        self.ticker: asyncio.Task | None = None
        self.late_ms_max = 0.0

    def start(self, calls: list, pace: Pace, seconds: float, seed: int = 0) -> int:
        """Starts each call talking for seconds (each from a random point of its first
        turn's lead-in, as independent callers would). Returns how many started."""
        now = time.monotonic()
        started = 0
        for call in calls:
            if call.call_id in self.talkers or call.conversation is None:
                continue
            rng = random.Random(f"{seed}:{call.call_id}")  # noqa: S311 (pacing only)
            talker = Talker(call=call, pace=pace, rng=rng, until=now + seconds)
            lead_in = rng.uniform(0, pace.user_seconds + pace.reply_seconds + pace.pause_seconds)
            talker.due.append((now + lead_in, None))
            self.talkers[call.call_id] = talker
            started += 1
        if self.ticker is None or self.ticker.done():
            self.ticker = asyncio.get_running_loop().create_task(self._tick(), name="sim-traffic")
        return started

    async def _tick(self) -> None:
        while self.talkers:
            began = time.monotonic()
            for call_id, talker in list(self.talkers.items()):
                if talker.call.state in TERMINAL_STATES or (
                    began >= talker.until and not _mid_turn(talker)
                ):
                    self._retire(call_id)
                    continue
                with contextlib.suppress(Exception):
                    await talker.step(began)
            took = time.monotonic() - began
            self.late_ms_max = max(self.late_ms_max, took * 1000)
            await asyncio.sleep(max(0.0, TICK_SECONDS - took))

    def _retire(self, call_id: str) -> None:
        talker = self.talkers.pop(call_id, None)
        if talker is not None:
            for name in self.finished:
                self.finished[name] += getattr(talker, name)

    def stop(self) -> int:
        """Every call stops talking at once (mid-turn too)."""
        count = len(self.talkers)
        for call_id in list(self.talkers):
            self._retire(call_id)
        return count

    def stats(self, calls: list) -> dict:
        """What the talking calls did so far; calls: every call of the simulator, for
        the events their sideband connections were sent."""
        totals = dict(self.finished)
        for talker in self.talkers.values():
            for name in totals:
                totals[name] += getattr(talker, name)
        return {
            "talking": len(self.talkers),
            **totals,
            "sideband_events_sent": sum(call.sideband_sent for call in calls),
            "tick_late_ms_max": round(self.late_ms_max, 1),
        }


def _mid_turn(talker: Talker) -> bool:
    """A turn is played to its end (its pause aside) before a call stops talking."""
    return any(event is not None for _, event in talker.due)


TRAFFIC = Traffic()
