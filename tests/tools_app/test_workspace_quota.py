"""write_file and edit_file keep a workspace within its quota, and edit_file within the
file-size limit bash has, refusing rather than cutting."""

from __future__ import annotations

import asyncio

import pytest

from tools_app.builtin import EditFileTool, WriteFileTool
from tools_app.workspace import Workspace

MIB = 2**20


@pytest.fixture
def workspace(settings, tmp_path):
    settings.TOOL_WORKSPACE_ROOT = tmp_path / "workspaces"
    return Workspace.for_session("sess_quota")


def write(workspace, path, content):
    return asyncio.run(WriteFileTool(workspace).execute({"file_path": path, "content": content}))


def edit(workspace, path, old, new, replace_all=False):
    arguments = {"file_path": path, "old_string": old, "new_string": new}
    return asyncio.run(EditFileTool(workspace).execute(arguments | {"replace_all": replace_all}))


def test_write_file_refuses_to_take_the_workspace_past_its_quota(workspace, settings):
    settings.TOOL_WORKSPACE_MAX_BYTES = 1 * MIB

    first = write(workspace, "a.txt", "a" * 600_000)
    second = write(workspace, "b.txt", "b" * 600_000)
    replaced = write(workspace, "a.txt", "c" * 600_000)

    assert first.success
    assert second.error["type"] == "workspace_full"
    assert "over its 1 MiB quota" in second.output and "nothing was written" in second.output
    assert not (workspace.root / "b.txt").exists()
    # Overwriting a file frees what it held.
    assert replaced.success and (workspace.root / "a.txt").read_text() == "c" * 600_000


def test_edit_file_refuses_to_grow_past_the_limit(workspace, settings):
    settings.TOOL_BASH_FILE_SIZE_BYTES = 1 * MIB
    write(workspace, "big.txt", "ab" * 300_000)

    grown = edit(workspace, "big.txt", "a", "aaa", replace_all=True)
    small = edit(workspace, "big.txt", "ab" * 3, "xy", replace_all=False)

    assert grown.error["type"] == "file_too_large"
    assert "over the 1 MiB limit" in grown.output
    assert small.error["type"] == "ambiguous"  # edits within the limit go on as before
    assert (workspace.root / "big.txt").read_text() == "ab" * 300_000


def test_edit_file_refuses_a_file_too_large_to_read_whole_instead_of_cutting_it(
    workspace, settings
):
    settings.TOOL_BASH_FILE_SIZE_BYTES = 1 * MIB
    (workspace.root / "huge.txt").write_text("x" * (MIB + 10) + "END")

    result = edit(workspace, "huge.txt", "END", "FIN")

    assert result.error["type"] == "file_too_large" and "it was not changed" in result.output
    assert (workspace.root / "huge.txt").stat().st_size == MIB + 13


def test_edit_file_edits_a_file_past_the_read_cap_whole(workspace, settings):
    """Files over TOOL_READ_MAX_BYTES (1 MiB) used to be cut to it by an edit."""
    (workspace.root / "long.txt").write_text("x" * (3 * MIB) + "END")

    result = edit(workspace, "long.txt", "END", "FIN")

    assert result.success
    assert (workspace.root / "long.txt").read_text() == "x" * (3 * MIB) + "FIN"


def test_edit_file_refuses_to_take_the_workspace_past_its_quota(workspace, settings):
    settings.TOOL_WORKSPACE_MAX_BYTES = 1 * MIB
    write(workspace, "a.txt", "a" * 600_000 + "END")
    write(workspace, "b.txt", "b" * 300_000)

    grown = edit(workspace, "a.txt", "END", "e" * 200_000)
    small = edit(workspace, "a.txt", "END", "FIN")

    assert grown.error["type"] == "workspace_full"
    assert small.success
    assert (workspace.root / "a.txt").read_text() == "a" * 600_000 + "FIN"


def test_edit_file_still_refuses_binary_files(workspace):
    (workspace.root / "blob.bin").write_bytes(b"\xff\xfe abc")

    result = edit(workspace, "blob.bin", "abc", "def")

    assert result.error["type"] == "binary_file"
