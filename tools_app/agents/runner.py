"""Runs an agent: its bundle as an amplifier-core session (AmplifierSession, its
coordinator, our provider, orchestrator and context modules mounted by our module
loader), on the tools its caller may use, reporting through the caller's hooks.

    result = await run_agent(bundle, "Write notes.md about X", tools=tools, hooks=hooks)

`tools` are built tool objects (Amplifier's tool protocol) already filtered by the
caller's policy; the agent gets only those its bundle also names. `cancellation`, an
amplifier-core CancellationToken the caller keeps, reaches the session's own token:
request_graceful() stops after the current step, request_immediate() at once.
Failures (the model's upstream, a hook) never escape: they are in the result.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from amplifier_core import AmplifierSession, HookResult, ModuleLoader, ToolResult

from tools_app.agents import context, orchestrator, provider
from tools_app.agents.bundles import Bundle
from voiceplatform import tracing

log = structlog.get_logger(__name__)

# Our modules, under the Amplifier module ids a bundle names (see bundles.py).
ORCHESTRATOR, CONTEXT, PROVIDER, TOOLS = "loop-basic", "context-simple", "provider-openai", "tools"


@dataclass
class AgentHooks:
    """What the caller hears of a run; every callback optional and async."""

    on_progress: Callable[[str], Awaitable[None]] | None = None
    on_tool_start: Callable[[str, str, dict], Awaitable[None]] | None = None
    on_tool_end: Callable[[str, str, ToolResult], Awaitable[None]] | None = None
    on_usage: Callable[[int, int], Awaitable[None]] | None = None


@dataclass(frozen=True)
class AgentResult:
    output: str
    steps: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    stopped: str | None  # None: finished; cancelled, max_steps, max_tokens, max_seconds, error


class _Loader(ModuleLoader):
    """Resolves the session's module ids to our modules, and mounts the caller's tool
    objects under `tools`; nothing is looked up elsewhere or fetched."""

    def __init__(self, tools: Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._modules = {
            ORCHESTRATOR: orchestrator.mount,
            CONTEXT: context.mount,
            PROVIDER: provider.mount,
            TOOLS: self._mount_tools,
        }
        self._tools = tools

    async def _mount_tools(self, coordinator: Any, config: dict) -> None:
        for name, tool in self._tools.items():
            await coordinator.mount("tools", tool, name=name)

    async def load(self, module_id, config=None, source_hint=None, coordinator=None):
        module = self._modules.get(module_id)
        if module is None or source_hint is not None:
            raise ValueError(f"Module {module_id!r} is not one this server provides.")

        async def mount(coordinator: Any):
            return await module(coordinator, config or {})

        return mount


class _Bridge:
    """The caller's AgentHooks as handlers on the session's hook registry."""

    def __init__(self, hooks: AgentHooks) -> None:
        self.hooks = hooks
        self.outcome: dict[str, Any] = {}

    def register(self, registry: Any) -> None:
        for event, handler in (
            (orchestrator.PROGRESS, self._progress),
            ("tool:pre", self._tool_start),
            ("tool:post", self._tool_end),
            ("llm:response", self._usage),
            ("orchestrator:complete", self._complete),
        ):
            registry.register(event, handler, name=f"voiceplatform-{event}")

    async def _call(self, callback, *args) -> HookResult:
        if callback is not None:
            try:
                await callback(*args)
            except Exception:  # the caller's reporting must not stop the agent
                log.exception("agent_hook_failed", hook=getattr(callback, "__name__", "?"))
        return HookResult(action="continue")

    async def _progress(self, event: str, data: dict) -> HookResult:
        log.info("agent_progress", text=str(data.get("text", ""))[:200])
        return await self._call(self.hooks.on_progress, str(data.get("text", "")))

    async def _tool_start(self, event: str, data: dict) -> HookResult:
        return await self._call(
            self.hooks.on_tool_start,
            data.get("tool_call_id", ""),
            data.get("tool_name", ""),
            data.get("tool_input") or {},
        )

    async def _tool_end(self, event: str, data: dict) -> HookResult:
        result = data.get("result") or {}
        return await self._call(
            self.hooks.on_tool_end,
            data.get("tool_call_id", ""),
            data.get("tool_name", ""),
            ToolResult(
                success=bool(result.get("success")),
                output=result.get("output"),
                error=result.get("error"),
            ),
        )

    async def _usage(self, event: str, data: dict) -> HookResult:
        usage = data.get("usage") or {}
        return await self._call(
            self.hooks.on_usage,
            int(usage.get("input_tokens", 0)),
            int(usage.get("output_tokens", 0)),
        )

    async def _complete(self, event: str, data: dict) -> HookResult:
        self.outcome = dict(data)
        return HookResult(action="continue")


def mount_plan(bundle: Bundle) -> dict:
    """The amplifier-core mount plan a bundle comes to here."""
    caps = {
        "max_steps": bundle.max_steps,
        "max_tokens": bundle.max_tokens,
        "max_seconds": bundle.max_seconds,
    }
    return {
        "session": {
            "orchestrator": {"module": ORCHESTRATOR, "config": caps},
            "context": {"module": CONTEXT},
            "metadata": {"agent": bundle.name},
        },
        "providers": [{"module": PROVIDER, "config": {"model": bundle.model}}],
        "tools": [{"module": TOOLS}],
    }


async def run_agent(
    bundle: Bundle,
    instruction: str,
    *,
    tools: Mapping[str, Any],
    hooks: AgentHooks,
    cancellation: Any = None,
) -> AgentResult:
    """Runs bundle's agent on instruction; see the module's docstring."""
    with tracing.span("agent.run", {"voice.agent": bundle.name}) as span:
        result = await _run_agent(bundle, instruction, tools, hooks, cancellation)
        span.set_attributes(
            {
                "agent.steps": result.steps,
                "agent.stopped": result.stopped or "finished",
                "gen_ai.usage.input_tokens": result.input_tokens,
                "gen_ai.usage.output_tokens": result.output_tokens,
            }
        )
    return result


async def _run_agent(
    bundle: Bundle,
    instruction: str,
    tools: Mapping[str, Any],
    hooks: AgentHooks,
    cancellation: Any,
) -> AgentResult:
    usable = {name: tool for name, tool in tools.items() if name in bundle.tools}
    bridge = _Bridge(hooks)
    session = AmplifierSession(mount_plan(bundle), session_id=f"agent-{uuid.uuid4().hex[:12]}")
    # RustSession takes its module loader from the coordinator.
    session.coordinator.loader = _Loader(usable, coordinator=session.coordinator)
    bridge.register(session.coordinator.hooks)
    if cancellation is not None:
        # A child takes its parent's state now and every later request.
        cancellation.register_child(session.coordinator.cancellation)
    output = ""
    try:
        await session.initialize()
        await session.coordinator.get("context").add_message(
            {"role": "system", "content": bundle.instruction}
        )
        output = await session.execute(instruction)
    except Exception as exc:
        log.warning("agent_failed", agent=bundle.name, error=type(exc).__name__)
        bridge.outcome.setdefault("stopped", "error")
        output = bridge.outcome.get("output") or f"The agent could not run ({exc})."
    finally:
        if cancellation is not None:
            with contextlib.suppress(Exception):
                cancellation.unregister_child(session.coordinator.cancellation)
        with contextlib.suppress(Exception):
            await session.cleanup()
    outcome = bridge.outcome
    return AgentResult(
        output=outcome.get("output", output) or output,
        steps=int(outcome.get("steps", 0)),
        input_tokens=int(outcome.get("input_tokens", 0)),
        output_tokens=int(outcome.get("output_tokens", 0)),
        cost_usd=float(outcome.get("cost_usd", 0) or 0),
        stopped=outcome.get("stopped"),
    )
