"""Agent bundles: what loads, what is refused and why, where refusals show."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from tools_app import registry
from tools_app.agents import bundles

GOOD = """---
meta:
  name: helper
  description: Helps.
tools:
  - module: tool-filesystem
  - module: bash
session:
  max_steps: 5
---

You help.
"""


def write(directory, name, text):
    (directory / name).write_text(text)


def catalog(directory):
    return bundles.catalog(registry.modules_for_agents(), directory)


@pytest.fixture
def agents_dir(tmp_path, settings):
    settings.AGENTS_DIR = tmp_path
    return tmp_path


def test_the_shipped_agents_load():
    shipped = catalog(None)  # AGENTS_DIR: the checkout's agents/

    assert {"researcher", "coder", "summarizer"} <= set(shipped.agents)
    assert shipped.refused == {}
    assert set(shipped.agents["coder"].tools) >= {"bash", "write_file", "read_file"}
    assert "bash" not in shipped.agents["researcher"].tools
    assert {"web_search", "web_fetch", "write_file"} <= set(shipped.agents["researcher"].tools)


def test_a_bundle_maps_its_modules_onto_our_tools_and_keeps_the_lower_cap(agents_dir, settings):
    settings.AGENT_MAX_STEPS = 3
    write(agents_dir, "helper.md", GOOD)

    bundle = catalog(agents_dir).agents["helper"]

    assert bundle.tools == ("read_file", "write_file", "edit_file", "glob", "grep", "bash")
    assert bundle.instruction == "You help."
    assert bundle.max_steps == 3  # the server's cap is the ceiling
    assert bundle.model == settings.AGENT_MODEL


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("---\nmeta: {name: [unclosed\n---\nBody\n", "YAML front matter is malformed"),
        ("no front matter\n", "does not start with YAML front matter"),
        ("---\nmeta: {description: x}\n---\nBody\n", "meta.name is missing"),
        ("---\nmeta: {name: x}\n---\n\n", "body (the agent's instruction) is empty"),
        (
            "---\nmeta: {name: x}\ntools:\n  - module: tool-teleport\n---\nBody\n",
            "tool module 'tool-teleport' is not available on this server",
        ),
        (
            "---\nmeta: {name: x}\ntools:\n  - module: tool-bash\n    source: "
            "git+https://github.com/microsoft/amplifier-module-tool-bash@main\n---\nBody\n",
            "names a remote source",
        ),
        (
            "---\nmeta: {name: x}\nproviders:\n  - module: provider-anthropic\n---\nBody\n",
            "provider 'provider-anthropic' is not available",
        ),
        ("---\nmeta: {name: x}\nsession: {max_steps: 0}\n---\nBody\n", "session.max_steps"),
        ("---\nmeta: {name: x}\nincludes: [foo]\n---\nBody\n", "unknown front matter keys"),
        (
            "---\nmeta: {name: x}\ntools:\n  - module: delegate\n---\nBody\n",
            "tool module 'delegate' is not available",
        ),
    ],
)
def test_it_refuses_a_bundle_it_cannot_load_with_a_clear_reason(agents_dir, text, reason):
    write(agents_dir, "bad.md", text)
    write(agents_dir, "helper.md", GOOD)

    found = catalog(agents_dir)

    assert reason in found.refused["bad.md"]
    assert list(found.agents) == ["helper"]  # the others are unaffected


def test_a_second_bundle_with_a_taken_name_is_refused(agents_dir):
    write(agents_dir, "a.md", GOOD)
    write(agents_dir, "b.md", GOOD)

    found = catalog(agents_dir)

    assert "already taken by a.md" in found.refused["b.md"]


def test_manage_py_check_names_each_refused_bundle(agents_dir):
    write(
        agents_dir,
        "remote.md",
        GOOD.replace(
            "  - module: bash\n", "  - module: bash\n    source: git+https://example.com/x\n"
        ),
    )
    write(agents_dir, "helper.md", GOOD)
    out, err = StringIO(), StringIO()

    call_command("check", stdout=out, stderr=err)

    text = out.getvalue() + err.getvalue()
    assert "tools_app.W001" in text
    assert "remote.md was refused" in text and "remote source" in text
    assert "helper.md" not in text


@pytest.mark.django_db
def test_the_admin_lists_agents_and_refused_bundles(admin_client, agents_dir):
    write(agents_dir, "helper.md", GOOD)
    write(agents_dir, "bad.md", "---\nmeta: {name: [\n---\nx\n")

    page = admin_client.get("/admin/tools_app/toolexecution/agents/")
    listing = admin_client.get("/admin/tools_app/toolexecution/")

    assert page.status_code == 200
    body = page.content.decode()
    assert "helper" in body and "read_file, write_file" in body
    assert "bad.md" in body and "malformed" in body
    assert "/admin/tools_app/toolexecution/agents/" in listing.content.decode()
