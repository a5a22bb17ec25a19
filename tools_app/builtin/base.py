"""What every built-in tool shares: the Amplifier contract and its workspace."""

from __future__ import annotations

from typing import Any, ClassVar

from amplifier_core import ToolResult

from tools_app.workspace import Workspace


def failure(kind: str, message: str, **details: Any) -> ToolResult:
    """A tool's own failure: the model hears the message."""
    return ToolResult(
        success=False, output=message, error={"type": kind, "message": message, **details}
    )


class WorkspaceTool:
    """An Amplifier tool bound to one session's workspace."""

    name: ClassVar[str]
    description: ClassVar[str]
    input_schema: ClassVar[dict]
    # May run for seconds to minutes (a command, the network): queued apart from the
    # quick ones (tools_app.registry.queue_for).
    slow: ClassVar[bool] = False

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    async def execute(self, input: dict[str, Any]) -> ToolResult:  # noqa: A002 (contract)
        raise NotImplementedError
