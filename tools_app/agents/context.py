"""Our Amplifier context module: an agent run's conversation, in memory.

A run is short and capped (steps, tokens), and each tool result is already cut to
TOOL_OUTPUT_MAX_BYTES, so it keeps every message; the orchestrator's token cap is what
bounds it."""

from __future__ import annotations

from typing import Any


class RunContext:
    """Amplifier's ContextManager protocol."""

    def __init__(self) -> None:
        self._messages: list[dict[str, Any]] = []

    async def add_message(self, message: dict[str, Any]) -> None:
        self._messages.append(message)

    async def get_messages_for_request(
        self, token_budget: int | None = None, provider: Any | None = None
    ) -> list[dict[str, Any]]:
        return list(self._messages)

    async def get_messages(self) -> list[dict[str, Any]]:
        return list(self._messages)

    async def set_messages(self, messages: list[dict[str, Any]]) -> None:
        self._messages = list(messages)

    async def clear(self) -> None:
        self._messages = []


async def mount(coordinator: Any, config: dict | None = None) -> None:
    await coordinator.mount("context", RunContext())
