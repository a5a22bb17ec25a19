"""bash: a command in the session's workspace, sandboxed (see tools_app.sandbox)."""

from __future__ import annotations

import asyncio

from amplifier_core import ToolResult
from django.conf import settings

from tools_app.builtin.base import WorkspaceTool, failure
from tools_app.sandbox import isolation, run_bash


class BashTool(WorkspaceTool):
    name = "bash"
    description = (
        "Run a bash command in the conversation's private workspace directory. No network. "
        "Output is limited; long-running commands are stopped at the timeout."
    )
    input_schema = {
        "type": "object",
        "properties": {
            "command": {
                "type": "string",
                "minLength": 1,
                "maxLength": 10_000,
                "description": "The command line to run.",
            },
            "timeout": {
                "type": "integer",
                "minimum": 1,
                "maximum": 300,
                "description": "Seconds before the command is stopped (default 30).",
            },
        },
        "required": ["command"],
        "additionalProperties": False,
    }

    async def execute(self, input: dict) -> ToolResult:  # noqa: A002
        if isolation() == "none":
            return failure(
                "isolation_unavailable",
                "bash is switched off here: bubblewrap does not work on this server "
                "(install bubblewrap, or set TOOL_ISOLATION=rlimits to accept weaker "
                "isolation).",
            )
        timeout = min(
            input.get("timeout") or settings.TOOL_BASH_TIMEOUT_SECONDS,
            settings.TOOL_BASH_MAX_TIMEOUT_SECONDS,
        )
        result = await asyncio.to_thread(run_bash, self.workspace, input["command"], timeout)
        if result.timed_out:
            return failure(
                "timeout",
                f"The command was stopped after {timeout} s.\n" + result.output,
                output=result.output,
            )
        if result.truncated and (result.exit_code or 0) < 0:
            return failure(
                "output_limit",
                "The command was stopped: it printed more than the output limit.\n" + result.output,
            )
        if result.exit_code != 0:
            return failure(
                "exit_code",
                f"The command exited with code {result.exit_code}.\n" + result.output,
                exit_code=result.exit_code,
            )
        return ToolResult(success=True, output=result.output)
