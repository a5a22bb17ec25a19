"""What every built-in tool shares: the Amplifier contract and its workspace."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import jsonschema
from amplifier_core import ToolResult

from tools_app.sandbox import Stop
from tools_app.workspace import Workspace


def failure(kind: str, message: str, **details: Any) -> ToolResult:
    """A tool's own failure: the model hears the message."""
    return ToolResult(
        success=False, output=message, error={"type": kind, "message": message, **details}
    )


def schema_problem(schema: dict, arguments: Any) -> str | None:
    """A clear message if arguments break a tool's input schema, else None."""
    if not isinstance(arguments, dict):
        return "arguments must be a JSON object."
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(arguments)
    )
    if error is None:
        return None
    where = ".".join(str(part) for part in error.absolute_path) or "arguments"
    return f"{where}: {error.message[:300]}"


class WorkspaceTool:
    """An Amplifier tool bound to one session's workspace."""

    name: ClassVar[str]
    description: ClassVar[str]
    input_schema: ClassVar[dict]
    # Goes on in the background at once when called (tools_app.background).
    long_running: ClassVar[bool] = False
    # May run for seconds to minutes (a command, the network): queued apart from the
    # quick ones (tools_app.registry.queue_for).
    slow: ClassVar[bool] = False

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        # Set by the worker that runs it: whose call it is, where its progress lines go.
        self.session_id: str = workspace.root.name
        self.progress: Callable[[str], None] | None = None
        self.stopping = Stop()

    def cancel(self) -> None:
        """Asked to stop: gracefully first (a tool that cannot is stopped by force)."""
        self.stopping.requested.set()

    def kill(self) -> None:
        """Stop now."""
        self.stopping.requested.set()
        self.stopping.forced.set()

    async def execute(self, input: dict[str, Any]) -> ToolResult:  # noqa: A002 (contract)
        raise NotImplementedError
