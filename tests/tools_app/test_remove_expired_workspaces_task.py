"""Workspaces go once their session has been over for the retention, or is gone; the
sweep never follows a symlink and never leaves the workspace root."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.factories import VoiceSessionFactory
from tools_app import retention
from tools_app.models import ToolExecution
from tools_app.tasks import remove_expired_workspaces_task
from tools_app.workspace import MAX_WALK_DEPTH, Workspace

pytestmark = pytest.mark.django_db


@pytest.fixture
def root(settings, tmp_path):
    settings.TOOL_WORKSPACE_ROOT = tmp_path / "workspaces"
    settings.TOOL_WORKSPACE_RETENTION_SECONDS = 3600
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "keep.txt").write_text("not ours")
    return settings.TOOL_WORKSPACE_ROOT


def workspace_of(session_id: str, tmp_path) -> Workspace:
    workspace = Workspace.for_session(session_id)
    (workspace.root / "notes").mkdir()
    (workspace.root / "notes" / "a.txt").write_text("a")
    os.symlink(tmp_path / "outside", workspace.root / "link")
    os.symlink(tmp_path / "outside" / "keep.txt", workspace.root / "notes" / "file-link")
    return workspace


def ended(minutes_ago: float):
    return VoiceSessionFactory(
        status="ended", ended_at=timezone.now() - timedelta(minutes=minutes_ago)
    )


def test_a_workspace_is_removed_after_its_retention(root, tmp_path):
    old = ended(minutes_ago=61)
    recent = ended(minutes_ago=5)
    live = VoiceSessionFactory(status="active")
    for session in (old, recent, live):
        workspace_of(session.pk, tmp_path)
    workspace_of("sess_deleted_long_ago", tmp_path)

    removed = remove_expired_workspaces_task()

    assert removed == 2
    assert sorted(path.name for path in root.iterdir()) == sorted([recent.pk, live.pk])
    assert (tmp_path / "outside" / "keep.txt").read_text() == "not ours"


def test_a_workspace_with_a_tool_call_still_running_is_kept(root, tmp_path):
    session = ended(minutes_ago=120)
    workspace_of(session.pk, tmp_path)
    ToolExecution.objects.create(
        session=session, call_id="call_1", tool="bash", status=ToolExecution.Status.RUNNING
    )

    assert remove_expired_workspaces_task() == 0
    assert (root / session.pk).is_dir()


def test_the_sweep_touches_only_session_workspaces_in_the_root(root, tmp_path):
    Workspace.make_root()
    os.symlink(tmp_path / "outside", root / "sess_pointing_out")
    (root / ".sandbox-etc").mkdir()
    (root / "not-a-session").mkdir()

    removed = remove_expired_workspaces_task()

    assert removed == 0
    assert sorted(path.name for path in root.iterdir()) == [
        ".sandbox-etc",
        "not-a-session",
        "sess_pointing_out",
    ]
    assert (tmp_path / "outside" / "keep.txt").exists()


def test_a_tree_deeper_than_a_walk_goes_is_removed_too(root, tmp_path):
    workspace = workspace_of("sess_deep", tmp_path)
    deep = workspace.root
    for _ in range(MAX_WALK_DEPTH + 40):  # not mkdir(parents=True): it recurses per level
        deep = deep / "d"
        deep.mkdir()
    (deep / "bottom.txt").write_text("x")
    os.symlink(tmp_path / "outside", deep / "out")

    assert remove_expired_workspaces_task() == 1
    assert list(root.iterdir()) == []
    assert (tmp_path / "outside" / "keep.txt").exists()


def test_a_workspace_is_kept_while_a_session_that_resumed_it_is_live_or_recent(root, tmp_path):
    old = ended(minutes_ago=120)
    resumer = VoiceSessionFactory(status="active", workspace=old.pk, resumed_from=old)
    workspace_of(old.pk, tmp_path)

    kept_while_live = remove_expired_workspaces_task()
    resumer.status, resumer.ended_at = "ended", timezone.now() - timedelta(minutes=5)
    resumer.save(update_fields=["status", "ended_at"])
    kept_while_recent = remove_expired_workspaces_task()
    resumer.ended_at = timezone.now() - timedelta(minutes=61)
    resumer.save(update_fields=["ended_at"])
    removed = remove_expired_workspaces_task()

    assert kept_while_live == kept_while_recent == 0
    assert removed == 1 and not (root / old.pk).exists()


def test_a_workspace_whose_resumer_runs_a_tool_is_kept(root, tmp_path):
    old = ended(minutes_ago=120)
    resumer = ended(minutes_ago=120)
    resumer.workspace = old.pk
    resumer.save(update_fields=["workspace"])
    workspace_of(old.pk, tmp_path)
    ToolExecution.objects.create(
        session=resumer, call_id="call_1", tool="bash", status=ToolExecution.Status.RUNNING
    )

    assert remove_expired_workspaces_task() == 0
    assert (root / old.pk).is_dir()


def test_a_workspace_a_live_session_resumed_is_not_counted_as_ended(root, tmp_path):
    old = ended(minutes_ago=5)
    workspace_of(old.pk, tmp_path)
    alone = retention.ended_workspaces()
    VoiceSessionFactory(status="active", workspace=old.pk, resumed_from=old)

    assert alone == [old.pk]
    assert retention.ended_workspaces() == []
