"""bash: a command in the session's workspace, sandboxed (see tools_app.sandbox)."""

from __future__ import annotations

import asyncio

import structlog
from amplifier_core import ToolResult
from django.conf import settings

from tools_app import mounts
from tools_app.builtin.base import WorkspaceTool, failure
from tools_app.sandbox import isolation, neutral_paths, run_bash
from voiceplatform import private_files

log = structlog.get_logger(__name__)
MIB = 2**20


class BashTool(WorkspaceTool):
    name = "bash"
    slow = True
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
        if not mounts.bash_allowed():
            return failure(
                "isolation_unavailable",
                "bash is switched off here: this worker cannot give the workspace a hard "
                "size cap (it cannot mount; run it as root or with CAP_SYS_ADMIN, or set "
                "TOOL_WORKSPACE_HARD_CAP=off to accept a measured quota only).",
            )
        if isolation() == "none":
            return failure(
                "isolation_unavailable",
                "bash is switched off here: bubblewrap does not work on this server "
                "(install bubblewrap and libseccomp, or set TOOL_ISOLATION=rlimits to "
                "accept weaker isolation).",
            )
        if isolation() == "rlimits" and (exposed := private_files.readable_by_others()):
            # bash runs on the host's file system as another uid: it would read them.
            log.error("bash_refused_data_readable", paths=[str(path) for path in exposed])
            return failure(
                "isolation_unavailable",
                "bash is switched off here: the server's data is readable by other users, "
                "and in TOOL_ISOLATION=rlimits mode bash is one of them (the server log "
                "names the paths).",
            )
        timeout = min(
            input.get("timeout") or settings.TOOL_BASH_TIMEOUT_SECONDS,
            settings.TOOL_BASH_MAX_TIMEOUT_SECONDS,
        )
        result = await asyncio.to_thread(
            run_bash,
            self.workspace,
            input["command"],
            timeout,
            stop=self.stopping,
            on_output=self._progress_lines() if self.progress else None,
        )
        quota = settings.TOOL_WORKSPACE_MAX_BYTES // MIB
        if result.cancelled:
            return failure(
                "cancelled",
                "The command was cancelled before it finished.\n" + result.output,
                output=result.output,
            )
        if result.stopped_over_quota:
            return failure(
                "workspace_full",
                f"The command was stopped: the workspace went over its {quota} MiB quota. "
                "Remove files to make room.\n" + result.output,
                output=result.output,
            )
        if result.over_quota:
            held = (
                "cannot be measured (nested too deep or unreadable)"
                if result.workspace_bytes is None
                else f"holds {result.workspace_bytes / MIB:.1f} MiB"
            )
            return failure(
                "workspace_full",
                f"The workspace {held}, over its {quota} MiB quota: no file can grow "
                "(bash, write_file, edit_file) until some are removed.\n" + result.output,
                output=result.output,
                exit_code=result.exit_code,
            )
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

    def _progress_lines(self):
        """What bash prints, as progress: its last complete line per chunk."""
        progress = self.progress
        tail = b""

        def seen(chunk: bytes) -> None:
            nonlocal tail
            *lines, tail = (tail + chunk).split(b"\n")
            tail = tail[-4096:]
            for line in reversed(lines):
                if line.strip():
                    progress(neutral_paths(line.decode("utf-8", "replace"), self.workspace))
                    return

        return seen
