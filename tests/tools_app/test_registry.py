"""The registry: built-ins with Amplifier's names, installed modules, realtime shapes."""

from __future__ import annotations

import asyncio
from importlib.metadata import EntryPoint

import pytest

from tools_app import registry
from tools_app.workspace import Workspace


@pytest.fixture
def installed_module(monkeypatch):
    entry = EntryPoint(
        name="shout", value="tests.tools_app.fake_amplifier_module:mount", group="amplifier.modules"
    )
    monkeypatch.setattr(
        registry, "entry_points", lambda group: [entry] if group == "amplifier.modules" else []
    )
    registry.all_tools.cache_clear()
    yield
    registry.all_tools.cache_clear()


def test_the_built_in_tools_use_amplifiers_argument_names():
    tools = registry.all_tools()

    assert set(tools) >= {
        "bash",
        "read_file",
        "write_file",
        "edit_file",
        "glob",
        "grep",
        "web_search",
        "web_fetch",
    }
    assert set(tools["bash"].input_schema["properties"]) == {"command", "timeout"}
    assert set(tools["read_file"].input_schema["properties"]) == {"file_path", "offset", "limit"}
    assert tools["write_file"].input_schema["required"] == ["file_path", "content"]


def test_a_tool_becomes_a_realtime_function_definition():
    definition = registry.get("bash").function_definition()

    assert definition["type"] == "function" and definition["name"] == "bash"
    assert definition["parameters"]["required"] == ["command"]


def test_an_installed_amplifier_module_is_loaded_and_runs_in_the_workspace(installed_module):
    spec = registry.get("shout")
    workspace = Workspace.for_session("sess_registry")

    result = asyncio.run(spec.build(workspace).execute({"text": "hi"}))

    assert spec.description == "Says the text loudly."
    assert result.output == f"HI (in {workspace.root})"
    assert spec.problem_with({}) == "arguments: 'text' is a required property"


def test_quick_tools_queue_apart_from_slow_ones_and_a_worker_consumes_both(settings):
    from voiceplatform.celery import app

    fast = {
        name
        for name in registry.all_tools()
        if registry.queue_for(name) == settings.TOOL_QUEUE_FAST
    }
    slow = {
        name
        for name in registry.all_tools()
        if registry.queue_for(name) == settings.TOOL_QUEUE_SLOW
    }

    assert {"read_file", "write_file", "edit_file", "glob", "grep"} <= fast
    assert {"bash", "web_search", "web_fetch"} <= slow and not fast & slow
    assert registry.queue_for("an_unknown_module_tool") == settings.TOOL_QUEUE_SLOW
    # What a worker started without -Q consumes.
    assert {
        settings.CELERY_TASK_DEFAULT_QUEUE,
        settings.TOOL_QUEUE_FAST,
        settings.TOOL_QUEUE_SLOW,
    } <= set(app.amqp.queues)
