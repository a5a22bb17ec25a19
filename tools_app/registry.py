"""The tools we know: the built-ins plus any installed Amplifier tool module
(entry-point group `amplifier.modules`), each built per execution for a workspace;
and the Amplifier module ids an agent's bundle may name for them."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import structlog
from django.conf import settings

from tools_app.agents import bundles
from tools_app.builtin import BUILTIN_TOOLS
from tools_app.builtin.base import schema_problem
from tools_app.builtin.delegate import DelegateTool, Toolbox
from tools_app.workspace import Workspace

log = structlog.get_logger(__name__)

# Amplifier's standard tool modules, served by our sandboxed built-ins (a bundle may
# also name a built-in by its tool name, or an installed module by its entry point).
BUILTIN_MODULES = {
    "tool-bash": ("bash",),
    "tool-filesystem": ("read_file", "write_file", "edit_file", "glob", "grep"),
    "tool-search": ("glob", "grep"),
    "tool-web": ("web_search", "web_fetch"),
}


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    input_schema: dict
    build: Callable[[Workspace], Any]  # -> an object with async execute(input)
    # A call of it goes on in the background at once (tools_app.background).
    long_running: bool = False
    module: str | None = None  # the installed Amplifier module it comes from
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
        return schema_problem(self.input_schema, arguments)


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
                    module=entry_point.name,
                )
            )
    return specs


def _modules_of(specs: dict[str, ToolSpec]) -> dict[str, tuple[str, ...]]:
    found: dict[str, tuple[str, ...]] = dict(BUILTIN_MODULES)
    for spec in specs.values():
        if spec.module:
            found[spec.module] = (*found.get(spec.module, ()), spec.name)
        elif spec.name != DelegateTool.name:  # an agent delegates to no other
            found.setdefault(spec.name, (spec.name,))
    return found


def _delegate_spec(modules: dict[str, tuple[str, ...]]) -> ToolSpec:
    toolbox = Toolbox(modules=modules_for_agents, build=build_tools)
    return ToolSpec(
        DelegateTool.name,
        DelegateTool.description,
        DelegateTool.schema_for(bundles.catalog(modules).names()),
        functools.partial(DelegateTool, toolbox=toolbox),
        long_running=DelegateTool.long_running,
    )


@functools.cache
def all_tools() -> dict[str, ToolSpec]:
    specs = {
        cls.name: ToolSpec(
            cls.name,
            cls.description,
            cls.input_schema,
            cls,
            long_running=getattr(cls, "long_running", False),
            slow=cls.slow,
        )
        for cls in BUILTIN_TOOLS
    }
    for spec in _installed_specs():
        specs.setdefault(spec.name, spec)  # a built-in keeps its name
    specs[DelegateTool.name] = _delegate_spec(_modules_of(specs))
    return specs


def get(name: str) -> ToolSpec | None:
    return all_tools().get(name)


def modules_for_agents() -> dict[str, tuple[str, ...]]:
    """Module id -> the tool names it gives an agent."""
    return _modules_of(all_tools())


def build_tools(workspace: Workspace, names: Iterable[str]) -> dict[str, Any]:
    """The named tools, built for workspace (unknown names are left out)."""
    return {name: spec.build(workspace) for name in names if (spec := get(name)) is not None}


def queue_for(name: str) -> str:
    """The Celery queue a call of this tool waits in: quick tools apart from slow ones,
    so a file read is not stuck behind minute-long commands."""
    spec = get(name)
    return settings.TOOL_QUEUE_SLOW if spec is None or spec.slow else settings.TOOL_QUEUE_FAST
