"""delegate: hands a piece of work to an agent (an Amplifier bundle from AGENTS_DIR),
in Amplifier's task-tool shape (`agent`, `instruction`).

The agent runs as an amplifier-core session (tools_app.agents.runner) on this
session's tools: built for the same workspace, and only those the session may use
(what its policy gave it at start, VoiceSession.tools) and its bundle names; never
`delegate` itself. The task machinery sets `hooks` and `cancellation` before
`execute`; without them it still runs, its progress only logged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import structlog
from amplifier_core import ToolResult
from asgiref.sync import sync_to_async

from sessions_app.models import VoiceSession
from tools_app.agents import bundles
from tools_app.agents.runner import AgentHooks, AgentResult, run_agent
from tools_app.builtin.base import WorkspaceTool, failure, schema_problem
from tools_app.workspace import Workspace

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Toolbox:
    """What the registry hands the delegate tool: the module ids a bundle may name,
    and a way to build tools by name for a workspace."""

    modules: Callable[[], Mapping[str, tuple[str, ...]]]
    build: Callable[[Workspace, Iterable[str]], dict[str, Any]]


@sync_to_async
def _session_tool_names(session_id: str) -> set[str]:
    """The tools the session was allowed at its start (tools_app.policy)."""
    given = VoiceSession.objects.filter(pk=session_id).values_list("tools", flat=True).first()
    return {tool.get("name") for tool in given or [] if isinstance(tool, dict)}


STOPPED = {
    "cancelled": "The agent was cancelled.",
    "max_steps": "The agent stopped at its step cap before finishing.",
    "max_tokens": "The agent stopped at its token cap before finishing.",
    "max_seconds": "The agent stopped at its time cap before finishing.",
    "error": "The agent failed.",
}


class DelegateTool(WorkspaceTool):
    name = "delegate"
    description = (
        "Hand a piece of work to an agent that works on its own with this session's "
        "tools and workspace (it may take minutes), and get its report."
    )
    input_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "agent": {"type": "string", "minLength": 1, "maxLength": 64},
            "instruction": {"type": "string", "minLength": 1, "maxLength": 20_000},
        },
        "required": ["agent", "instruction"],
        "additionalProperties": False,
    }
    long_running: ClassVar[bool] = True
    hooks: AgentHooks | None = None
    cancellation: Any = None

    def __init__(self, workspace: Workspace, toolbox: Toolbox | None = None) -> None:
        super().__init__(workspace)
        self.toolbox = toolbox
        self.last_result: AgentResult | None = None

    def cancel(self) -> None:
        """Stop after the current step (amplifier-core's graceful cancellation)."""
        super().cancel()
        if self.cancellation is not None:
            self.cancellation.request_graceful()

    def kill(self) -> None:
        """Drop the step in flight (and what its tools run is stopped with it)."""
        super().kill()
        if self.cancellation is not None:
            self.cancellation.request_immediate()

    @classmethod
    def schema_for(cls, agents: list[str]) -> dict:
        """The input schema, naming the agents there are."""
        if not agents:
            return cls.input_schema
        agent = {**cls.input_schema["properties"]["agent"], "enum": agents}
        return {
            **cls.input_schema,
            "properties": {**cls.input_schema["properties"], "agent": agent},
        }

    async def execute(self, input: dict) -> ToolResult:  # noqa: A002
        if problem := schema_problem(self.input_schema, input):
            return failure("invalid_arguments", f"Invalid arguments for delegate: {problem}")
        if self.toolbox is None:
            return failure("not_configured", "delegate was built without the tool registry.")
        modules = self.toolbox.modules()
        catalog = bundles.catalog(modules)
        bundle = catalog.agents.get(input["agent"])
        if bundle is None:
            known = ", ".join(catalog.names()) or "none are installed"
            return failure(
                "unknown_agent",
                f"There is no agent named {input['agent'][:64]!r} (agents: {known}).",
            )
        allowed = await _session_tool_names(self.session_id)
        names = [name for name in bundle.tools if name in allowed and name != self.name]
        tools = await asyncio.to_thread(self.toolbox.build, self.workspace, names)
        denied = sorted(set(bundle.tools) - set(tools))
        if denied:
            log.info("agent_tools_withheld", agent=bundle.name, tools=denied)
        result = await run_agent(
            bundle,
            input["instruction"],
            tools=tools,
            hooks=self.hooks or AgentHooks(),
            cancellation=self.cancellation,
        )
        self.last_result = result
        details = {
            "agent": bundle.name,
            "steps": result.steps,
            "input_tokens": result.input_tokens,
            "output_tokens": result.output_tokens,
            "cost_usd": result.cost_usd,
        }
        if result.stopped is None:
            return ToolResult(success=True, output=result.output)
        message = STOPPED.get(result.stopped, "The agent stopped.")
        if result.output:
            message += f" Its last words: {result.output}"
        return failure(result.stopped, message, stopped=result.stopped, **details)
