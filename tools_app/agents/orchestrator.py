"""Our Amplifier orchestrator module: the tool-calling loop of an agent run.

A step is one model call and the tool calls it asked for. The loop stops when the
model answers without tool calls, or at a cap: steps, tokens (input + output, all
steps), wall time. Cancellation is amplifier-core's token on the coordinator: graceful
stops after the current step, immediate abandons the call in flight at once. Every
model answer, tool call and its result goes through the session's hooks (tool:pre may
deny a call); the run's outcome is the `orchestrator:complete` event's data.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable
from decimal import Decimal
from typing import Any

import structlog
from amplifier_core import ChatRequest, Message, ToolCall, ToolResult, ToolSpec
from django.conf import settings

from tools_app.builtin.base import failure, schema_problem
from voiceplatform import tracing

log = structlog.get_logger(__name__)

# How often a step in flight looks for an immediate cancellation.
CANCEL_POLL_SECONDS = 0.1
PROGRESS = "agent:progress"


class _Stop(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


def result_text(result: ToolResult) -> str:
    """What the model reads of a tool result, cut to TOOL_OUTPUT_MAX_BYTES."""
    output = result.output
    if not isinstance(output, str):
        output = json.dumps(output, default=str)
    if not result.success:
        output = f"Error: {output}"
    cap = settings.TOOL_OUTPUT_MAX_BYTES
    return output if len(output) <= cap else output[:cap] + "\n[output cut]"


class ToolLoop:
    """Amplifier's Orchestrator protocol."""

    def __init__(self, config: dict | None = None) -> None:
        config = config or {}
        self.max_steps = int(config.get("max_steps") or settings.AGENT_MAX_STEPS)
        self.max_tokens = int(config.get("max_tokens") or settings.AGENT_MAX_TOKENS)
        self.max_seconds = float(config.get("max_seconds") or settings.AGENT_MAX_SECONDS)

    async def execute(
        self,
        prompt: str,
        context: Any,
        providers: dict[str, Any],
        tools: dict[str, Any],
        hooks: Any,
        **kwargs: Any,
    ) -> str:
        coordinator = kwargs["coordinator"]
        cancellation = coordinator.cancellation
        provider = next(iter(providers.values()))
        deadline = time.monotonic() + self.max_seconds
        steps = input_tokens = output_tokens = 0
        cost = Decimal(0)
        output = ""
        stopped: str | None = None
        specs = [
            ToolSpec(
                name=name,
                description=getattr(tool, "description", "") or "",
                parameters=getattr(tool, "input_schema", None) or {"type": "object"},
            )
            for name, tool in tools.items()
        ]
        await context.add_message({"role": "user", "content": prompt})
        await hooks.emit("prompt:submit", {"prompt": prompt})
        try:
            while True:
                if cancellation.is_cancelled:
                    raise _Stop("cancelled")
                if steps >= self.max_steps:
                    raise _Stop("max_steps")
                if input_tokens + output_tokens >= self.max_tokens:
                    raise _Stop("max_tokens")
                steps += 1
                # A step: one model call and the tool calls it asked for.
                with tracing.span("agent.step", {"agent.step": steps}):
                    messages = await context.get_messages_for_request(provider=provider)
                    request = ChatRequest(
                        messages=[Message(**message) for message in messages], tools=specs or None
                    )
                    await hooks.emit("provider:request", {"provider": provider.name, "step": steps})
                    response = await self._bounded(
                        provider.complete(request), deadline, cancellation
                    )
                    usage = response.usage
                    if usage is not None:
                        input_tokens += usage.input_tokens
                        output_tokens += usage.output_tokens
                        cost += usage.cost_usd or Decimal(0)
                        await hooks.emit(
                            "llm:response",
                            {
                                "step": steps,
                                "usage": {
                                    "input_tokens": usage.input_tokens,
                                    "output_tokens": usage.output_tokens,
                                },
                            },
                        )
                    text = "".join(block.text for block in response.content if block.type == "text")
                    if text:
                        output = text
                    await context.add_message(
                        {
                            "role": "assistant",
                            "content": [block.model_dump() for block in response.content],
                        }
                    )
                    calls = provider.parse_tool_calls(response)
                    if not calls:
                        if text:
                            await hooks.emit(PROGRESS, {"step": steps, "text": text})
                        break
                    await hooks.emit(
                        PROGRESS,
                        {
                            "step": steps,
                            "text": f"Step {steps}: " + ", ".join(call.name for call in calls),
                        },
                    )
                    for call in calls:
                        result = await self._bounded(
                            self._run_tool(call, tools, hooks, cancellation), deadline, cancellation
                        )
                        await context.add_message(
                            {
                                "role": "tool",
                                "tool_call_id": call.id,
                                "content": result_text(result),
                            }
                        )
        except _Stop as stop:
            stopped = stop.reason
        except Exception as exc:  # the model's upstream failing: the run's answer
            log.warning("agent_step_failed", error=type(exc).__name__, detail=str(exc)[:300])
            stopped = "error"
            output = str(exc) or type(exc).__name__
        await hooks.emit(
            "orchestrator:complete",
            {
                "steps": steps,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cost_usd": str(cost),
                "stopped": stopped,
                "output": output,
            },
        )
        return output

    async def _bounded(self, awaitable: Awaitable, deadline: float, cancellation: Any):
        """awaitable's result, unless the time cap passes or an immediate cancellation
        comes first: then it is cancelled and the loop stops."""
        task = asyncio.ensure_future(awaitable)
        try:
            while True:
                if cancellation.is_immediate:
                    raise _Stop("cancelled")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _Stop("max_seconds")
                done, _ = await asyncio.wait({task}, timeout=min(CANCEL_POLL_SECONDS, remaining))
                if done:
                    return task.result()
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait({task})

    async def _run_tool(
        self, call: ToolCall, tools: dict[str, Any], hooks: Any, cancellation: Any
    ) -> ToolResult:
        attributes = {"voice.tool_name": call.name, "agent.tool_call_id": call.id}
        with tracing.span("agent.tool", attributes) as span:
            result = await self._tool_result(call, tools, hooks, cancellation)
            span.set_attribute("agent.tool_succeeded", result.success)
        return result

    async def _tool_result(
        self, call: ToolCall, tools: dict[str, Any], hooks: Any, cancellation: Any
    ) -> ToolResult:
        data = {"tool_name": call.name, "tool_call_id": call.id, "tool_input": call.arguments}
        verdict = await hooks.emit("tool:pre", data)
        tool = tools.get(call.name)
        if getattr(verdict, "action", "continue") == "deny":
            result = failure("denied", verdict.reason or f"The call to {call.name} was denied.")
        elif tool is None:
            result = failure(
                "tool_not_available",
                f"There is no tool named {call.name!r} here (available: "
                f"{', '.join(sorted(tools)) or 'none'}).",
            )
        elif problem := schema_problem(getattr(tool, "input_schema", None) or {}, call.arguments):
            result = failure("invalid_arguments", f"Invalid arguments for {call.name}: {problem}")
        else:
            cancellation.register_tool_start(call.id, call.name)
            try:
                result = await tool.execute(call.arguments)
                if not isinstance(result, ToolResult):
                    result = ToolResult(success=True, output=result)
            except Exception as exc:
                log.exception("agent_tool_raised", tool=call.name)
                result = failure(
                    "tool_error", f"The tool failed unexpectedly ({type(exc).__name__})."
                )
            finally:
                cancellation.register_tool_complete(call.id)
        await hooks.emit("tool:post", {**data, "result": result.model_dump(mode="json")})
        return result


async def mount(coordinator: Any, config: dict | None = None) -> None:
    await coordinator.mount("orchestrator", ToolLoop(config))
