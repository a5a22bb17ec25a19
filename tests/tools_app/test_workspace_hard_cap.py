"""A workspace cannot hold more than TOOL_WORKSPACE_MAX_BYTES at any moment, however fast
bash writes, and the workspaces of a host together stay within TOOL_WORKSPACE_TOTAL_BYTES
(tools_app.mounts)."""

from __future__ import annotations

import asyncio
import secrets
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from tests.factories import VoiceSessionFactory
from tools_app import mounts, retention
from tools_app.builtin import BashTool, WriteFileTool
from tools_app.sandbox import describe_limits
from tools_app.workspace import Workspace, remove_workspace, session_workspaces

MIB = 2**20


@pytest.fixture
def own_root(settings):
    """A workspace root of the test's own where sandbox uids can reach it (not under
    pytest's private tmp_path), emptied afterwards."""
    root = Path(settings.TOOL_WORKSPACE_ROOT) / f"cap-{secrets.token_hex(4)}"
    settings.TOOL_WORKSPACE_ROOT = root
    yield root
    for name in session_workspaces():
        remove_workspace(name)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def hard_caps(settings, own_root):
    if not mounts.can_mount():
        pytest.skip("this host cannot mount: bash is refused instead (tested below)")
    settings.TOOL_WORKSPACE_MAX_BYTES = 8 * MIB
    settings.TOOL_WORKSPACE_TOTAL_BYTES = 17 * MIB  # two full ones, and some room


def session_id() -> str:
    return "sess_cap_" + secrets.token_hex(4)


def bash(workspace, command: str):
    return asyncio.run(BashTool(workspace).execute({"command": command, "timeout": 30}))


def held(workspace) -> int:
    return mounts.used_by(workspace.root)


@pytest.mark.parametrize("isolation", ["auto", "rlimits"])
def test_one_bash_call_cannot_fallocate_past_the_workspace_quota(hard_caps, settings, isolation):
    settings.TOOL_ISOLATION = isolation
    workspace = Workspace.for_session(session_id())

    result = bash(workspace, "for i in $(seq 40); do fallocate -l 4M f$i; done; ls | wc -l")

    # 160 MiB asked for in milliseconds, far inside one quota poll: the kernel said no.
    assert held(workspace) <= 8 * MIB
    assert not result.success


def test_a_flood_of_empty_files_stops_at_the_workspaces_file_count(hard_caps):
    workspace = Workspace.for_session(session_id())

    bash(workspace, "mkdir d && cd d && for i in $(seq 5000); do : > f$i || break; done")

    assert len(list((workspace.root / "d").iterdir())) < 8 * MIB // 4096


def test_the_workspaces_of_a_host_stay_within_the_total(hard_caps):
    first = Workspace.for_session(session_id())
    second = Workspace.for_session(session_id())

    with pytest.raises(mounts.StorageFull, match="Workspace storage on this worker is full"):
        Workspace.for_session(session_id())
    again = Workspace.for_session(first.root.name)  # an existing one is still served

    assert again.root == first.root and mounts.is_mounted(second.root)
    assert mounts.reserved(first.root.parent) == 16 * MIB


@pytest.mark.django_db
def test_an_ended_sessions_workspace_keeps_its_files_and_frees_the_rest_of_its_room(hard_caps):
    ended = VoiceSessionFactory(id=session_id(), ended_at=timezone.now() - timedelta(seconds=5))
    live = VoiceSessionFactory(id=session_id())
    kept = Workspace.for_session(ended.id)
    Workspace.for_session(live.id)
    asyncio.run(WriteFileTool(kept).execute({"file_path": "notes.txt", "content": "keep me"}))

    retention.shrink_ended_workspaces()
    third = Workspace.for_session(session_id())

    assert (kept.root / "notes.txt").read_text() == "keep me"
    assert mounts.size_of(kept.root) < MIB and mounts.is_mounted(third.root)
    # Resumed, it gets its whole quota back when there is room for it.
    remove_workspace(third.root.name)
    assert mounts.size_of(Workspace.for_session(ended.id).root) == 8 * MIB


def test_a_removed_workspace_is_unmounted_and_gone(hard_caps):
    workspace = Workspace.for_session(session_id())
    bash(workspace, "head -c 1M /dev/zero > a")

    removed = remove_workspace(workspace.root.name)

    assert removed and not workspace.root.exists()
    assert mounts.reserved(workspace.root.parent) == 0


def test_a_workspace_made_before_hard_caps_keeps_its_files(settings, hard_caps):
    name = session_id()
    settings.TOOL_WORKSPACE_HARD_CAP = False
    plain = Workspace.for_session(name)
    (plain.root / "sub").mkdir()
    (plain.root / "sub" / "old.txt").write_text("from before")
    settings.TOOL_WORKSPACE_HARD_CAP = True

    capped = Workspace.for_session(name)

    assert mounts.is_mounted(capped.root)
    assert (capped.root / "sub" / "old.txt").read_text() == "from before"


def test_bash_is_refused_where_no_hard_cap_can_be_had(own_root, monkeypatch):
    monkeypatch.setattr(mounts, "can_mount", lambda: False)
    workspace = Workspace.for_session(session_id())

    refused = bash(workspace, "echo hi")
    written = asyncio.run(WriteFileTool(workspace).execute({"file_path": "a", "content": "x"}))

    assert refused.error["type"] == "isolation_unavailable"
    assert "TOOL_WORKSPACE_HARD_CAP=off" in refused.output
    assert written.success  # the file tools check their own writes before making them
    assert "bash off" in describe_limits()


def test_an_operator_may_run_bash_with_a_measured_quota_only(settings, own_root, monkeypatch):
    settings.TOOL_WORKSPACE_HARD_CAP = False
    monkeypatch.setattr(mounts, "can_mount", lambda: False)
    workspace = Workspace.for_session(session_id())

    result = bash(workspace, "echo hi")

    assert result.success and result.output == "hi\n"
    assert not mounts.is_mounted(workspace.root)
    assert "measured only" in describe_limits()
