"""What the app keeps (database, media, VAR_DIR) is private to it, and rlimits mode,
where bash runs on the host's file system as another uid, refuses while it is not."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tools_app.builtin import BashTool
from tools_app.workspace import Workspace
from voiceplatform import private_files

ROOT = Path(__file__).resolve().parent.parent.parent


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def var(settings, tmp_path):
    tmp_path.chmod(0o711)  # as /srv or /home would be: passable
    var = tmp_path / "var"
    (var / "media" / "transcripts").mkdir(parents=True)
    (var / "media" / "transcripts" / "t.txt").write_text("admin secret")
    settings.VAR_DIR = var
    settings.MEDIA_ROOT = var / "media"
    settings.TOOL_WORKSPACE_ROOT = var / "workspaces"
    settings.TOOL_ISOLATION = "rlimits"
    return var


def bash(workspace, command):
    return asyncio.run(BashTool(workspace).execute({"command": command}))


def test_rlimits_mode_refuses_when_var_is_readable_by_others(var):
    var.chmod(0o755)
    (var / "media").chmod(0o755)
    workspace = Workspace.for_session("sess_private")

    refused = bash(workspace, "cat ../../media/transcripts/t.txt")

    assert refused.error["type"] == "isolation_unavailable"
    assert "readable by other users" in refused.output
    assert str(var) not in refused.output  # the paths go to the server log, not the model


def test_rlimits_mode_runs_bash_once_var_is_private_and_bash_cannot_read_it(var):
    var.chmod(0o755)
    (var / "media").chmod(0o755)
    workspace = Workspace.for_session("sess_private")

    private_files.make_private()
    result = bash(
        workspace,
        f"echo ran; cat {var}/media/transcripts/t.txt; ls {var}; ls {var}/workspaces",
    )

    if workspace.uid is None:
        pytest.skip("bash is the worker's own user here: permissions cannot keep it out")
    assert "ran" in result.output and "admin secret" not in result.output
    assert result.output.count("Permission denied") == 3
    assert mode(var) == 0o701 and mode(var / "media") == 0o700


def test_the_app_makes_var_private_from_the_start(tmp_path):
    """A fresh start with the embedded defaults (SQLite, files under VAR_DIR), over a
    VAR_DIR an older version left open."""
    var = tmp_path / "var"
    (var / "media").mkdir(parents=True)
    (var / "db.sqlite3").write_bytes(b"")
    for path, old in ((var, 0o755), (var / "media", 0o755), (var / "db.sqlite3", 0o644)):
        path.chmod(old)
    script = (
        "import json, django; django.setup()\n"
        "from django.db import connection; connection.ensure_connection()\n"
        "from django.core.files.base import ContentFile\n"
        "from django.core.files.storage import default_storage\n"
        "default_storage.save('exports/t.json', ContentFile(b'{}'))\n"
        "from tools_app.workspace import Workspace; Workspace.for_session('sess_x')\n"
        "from django.core.management import call_command\n"
        "call_command('collectstatic', interactive=False, verbosity=0)\n"
        "from voiceplatform import private_files\n"
        "print(json.dumps([str(p) for p in private_files.readable_by_others()]))\n"
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_URL", "REDIS_URL", "DJANGO_"))
    }
    env |= {"VAR_DIR": str(var), "DJANGO_SETTINGS_MODULE": "voiceplatform.settings"}

    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []
    assert mode(var) == 0o701  # passable on the way to the workspaces, not listable
    assert mode(var / "db.sqlite3") == 0o600
    assert mode(var / "media") == 0o700
    assert mode(var / "media" / "exports") == 0o700
    assert mode(var / "media" / "exports" / "t.json") == 0o600
    assert mode(var / "workspaces") == 0o711
    # Static files are public (another user may serve them).
    assert mode(var / "static") == 0o755
    assert mode(var / "static" / "admin" / "css" / "base.css") == 0o644
