"""The tools we know: the built-ins plus any installed Amplifier tool module
(entry-point group `amplifier.modules`), each built per execution for a workspace."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import jsonschema
import structlog
from django.conf import settings

from tools_app.builtin import BUILTIN_TOOLS
from tools_app.workspace import Workspace

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    input_schema: dict
    build: Callable[[Workspace], Any]  # -> an object with async execute(input)
    slow: bool = True  # an installed module's tool may take any time

    def function_definition(self) -> dict:
        """The realtime API's function-tool shape."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.input_schema,
        }

    def problem_with(self, arguments: Any) -> str | None:
        """A clear message if arguments break the schema, else None."""
        if not isinstance(arguments, dict):
            return "arguments must be a JSON object."
        error = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(self.input_schema).iter_errors(arguments)
        )
        if error is None:
            return None
        where = ".".join(str(part) for part in error.absolute_path) or "arguments"
        return f"{where}: {error.message[:300]}"


class _Collector:
    """Stands in for Amplifier's coordinator while a module mounts its tools."""

    def __init__(self) -> None:
        self.tools: list[Any] = []

    async def mount(self, mount_point: str, module: Any, name: str | None = None) -> None:
        if mount_point == "tools":
            self.tools.append(module)


def _module_tools(entry_point, config: dict) -> list[Any]:
    collector = _Collector()
    asyncio.run(entry_point.load()(collector, config))
    return collector.tools


def _installed_specs() -> list[ToolSpec]:
    specs = []
    for entry_point in entry_points(group="amplifier.modules"):
        try:
            tools = _module_tools(entry_point, {})
        except Exception as exc:  # a broken third-party module must not take us down
            log.warning("amplifier_module_failed", module=entry_point.name, error=str(exc))
            continue
        for tool in tools:

            def build(workspace: Workspace, ep=entry_point, name=tool.name):
                fresh = _module_tools(ep, {"working_dir": str(workspace.root)})
                return next(t for t in fresh if t.name == name)

            specs.append(
                ToolSpec(
                    tool.name,
                    tool.description,
                    getattr(tool, "input_schema", None) or {"type": "object"},
                    build,
                )
            )
    return specs


@functools.cache
def all_tools() -> dict[str, ToolSpec]:
    specs = {
        cls.name: ToolSpec(cls.name, cls.description, cls.input_schema, cls, slow=cls.slow)
        for cls in BUILTIN_TOOLS
    }
    for spec in _installed_specs():
        specs.setdefault(spec.name, spec)  # a built-in keeps its name
    return specs


def get(name: str) -> ToolSpec | None:
    return all_tools().get(name)


def queue_for(name: str) -> str:
    """The Celery queue a call of this tool waits in: quick tools apart from slow ones,
    so a file read is not stuck behind minute-long commands."""
    spec = get(name)
    return settings.TOOL_QUEUE_SLOW if spec is None or spec.slow else settings.TOOL_QUEUE_FAST
