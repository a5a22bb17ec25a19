"""Runaway bash is contained: output, time, processes, memory, stragglers, secrets."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from pathlib import Path

import pytest

from tools_app.builtin import BashTool
from tools_app.sandbox import isolation
from tools_app.workspace import Workspace


@pytest.fixture(params=["auto", "rlimits"])
def workspace(request, settings):
    """Every containment test runs under bubblewrap (where it works) and without it."""
    settings.TOOL_ISOLATION = request.param
    return Workspace.for_session("sess_bash_" + secrets.token_hex(4))


def bash(workspace, command: str, timeout: int | None = None):
    arguments = {"command": command} | ({"timeout": timeout} if timeout else {})
    return asyncio.run(BashTool(workspace).execute(arguments))


def processes_of(uid: int) -> list[str]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        if f"Uid:\t{uid}\t" in text and "State:\tZ" not in text:
            found.append(text.splitlines()[0])
    return found


def test_it_runs_a_command_in_the_workspace(workspace):
    (workspace.root / "hello.txt").write_text("hi")

    result = bash(workspace, "pwd; ls")

    assert result.success
    # At /workspace inside bubblewrap; in rlimits mode the host path is shown as that.
    assert result.output == "/workspace\nhello.txt\n"


def test_a_failing_command_is_a_failed_result_with_its_exit_code(workspace):
    result = bash(workspace, "echo oops >&2; exit 3")

    assert not result.success
    assert result.error["exit_code"] == 3 and "oops" in result.output


def test_endless_output_is_cut(workspace, settings):
    result = bash(workspace, "yes")

    assert len(result.output.encode()) < settings.TOOL_OUTPUT_MAX_BYTES + 100
    assert "[output cut at" in result.output


def test_a_command_past_its_timeout_is_killed(workspace):
    started = time.monotonic()

    result = bash(workspace, "sleep 60", timeout=1)

    assert time.monotonic() - started < 5
    assert result.error["type"] == "timeout"


def test_a_fork_bomb_is_contained_and_leaves_nothing_behind(workspace):
    if workspace.uid is None:
        pytest.skip("process limits per uid need root to switch users")

    started = time.monotonic()

    bash(workspace, ":(){ :|:& };:", timeout=3)

    assert time.monotonic() - started < 10
    assert processes_of(workspace.uid) == []


def test_a_memory_hog_is_stopped(workspace):
    result = bash(workspace, "python3 -c 'x = bytearray(2 * 1024**3); print(\"allocated\")'")

    assert not result.success
    assert "allocated" not in result.output and "MemoryError" in result.output


def test_a_background_child_does_not_outlive_the_command(workspace):
    marker = secrets.token_hex(6)

    result = bash(
        workspace, f"(exec -a sleeper-{marker} sleep 120) & setsid sleep 121 & echo started"
    )

    assert result.success and "started" in result.output
    leftovers = [
        p
        for p in Path("/proc").glob("[0-9]*/cmdline")
        if marker.encode() in p.read_bytes() or b"sleep\x00121" in p.read_bytes()
    ]
    assert leftovers == []


def test_our_secrets_are_not_in_its_environment(workspace, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-must-not-leak")
    monkeypatch.setenv("SECRET_KEY", "django-secret-must-not-leak")

    result = bash(workspace, "env; cat /proc/1/environ 2>/dev/null | tr '\\0' '\\n'")

    assert "must-not-leak" not in result.output
    assert "PATH=" in result.output


def test_it_says_which_isolation_is_active(settings):
    settings.TOOL_ISOLATION = "rlimits"
    assert isolation() == "rlimits"
    settings.TOOL_ISOLATION = "auto"
    assert isolation() in ("bwrap", "rlimits")


def test_under_bubblewrap_it_has_no_network_and_a_read_only_system(workspace, settings):
    if settings.TOOL_ISOLATION == "rlimits":
        pytest.skip("this run of the suite is the one without bubblewrap")
    if isolation() != "bwrap":
        pytest.skip("bubblewrap does not work on this host")

    result = bash(
        workspace,
        "(exec 3<>/dev/tcp/127.0.0.1/6379) 2>&1; echo net=$?; "
        "touch /etc/x 2>&1; ls /var/tmp /tmp | wc -l",
    )

    assert "net=1" in result.output
    assert "Read-only file system" in result.output
    assert os.path.exists("/etc/x") is False


def test_it_cannot_reach_the_hosts_sockets_or_network(workspace, settings):
    result = bash(
        workspace,
        "ls /run/postgresql /var/run 2>&1; (exec 3<>/dev/tcp/127.0.0.1/5432) 2>&1; echo net=$?",
    )

    assert "net=1" in result.output
    assert ".s.PGSQL" not in result.output


def test_without_working_isolation_bash_is_refused(workspace, settings, monkeypatch):
    from tools_app import sandbox

    settings.TOOL_ISOLATION = "auto"
    monkeypatch.setattr(sandbox, "_bwrap_probe", lambda: False)

    result = bash(workspace, "id")

    assert result.error["type"] == "isolation_unavailable"


def test_a_nul_byte_in_output_is_stored(workspace):
    from voiceplatform.redaction import storable

    result = bash(workspace, "printf 'a\\0b'")

    assert storable(result.output) == "a\ufffdb"
