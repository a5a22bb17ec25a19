"""File tools cannot leave the session's workspace, however the path is dressed up."""

from __future__ import annotations

import asyncio
import errno
import os
import threading

import pytest

from tools_app.builtin import EditFileTool, GlobTool, GrepTool, ReadFileTool, WriteFileTool
from tools_app.workspace import Workspace


@pytest.fixture
def workspace(settings, tmp_path):
    settings.TOOL_WORKSPACE_ROOT = tmp_path / "workspaces"
    (tmp_path / "outside.txt").write_text("SECRET OUTSIDE")
    (tmp_path / "workspaces").mkdir()
    (tmp_path / "workspaces" / "sess_neighbour").mkdir()
    (tmp_path / "workspaces" / "sess_neighbour" / "theirs.txt").write_text("NEIGHBOUR")
    return Workspace.for_session("sess_mine")


def read(workspace, path):
    return asyncio.run(ReadFileTool(workspace).execute({"file_path": path}))


@pytest.mark.parametrize(
    "path",
    [
        "../outside.txt",
        "../../outside.txt",
        "a/../../outside.txt",
        "../sess_neighbour/theirs.txt",
        "/etc/passwd",
        "~/outside.txt",
        "%2e%2e/outside.txt",
        "..%2foutside.txt",
        "%2Fetc%2Fpasswd",
        "..\\outside.txt",
        "a\x00b",
    ],
)
def test_it_refuses_paths_that_leave_the_workspace(workspace, path):
    result = read(workspace, path)

    assert not result.success
    assert result.error["type"] == "path_refused"
    assert "SECRET" not in str(result.output)


def test_it_refuses_a_symlink_pointing_out(workspace, tmp_path):
    os.symlink(tmp_path / "outside.txt", workspace.root / "link.txt")
    os.symlink(tmp_path, workspace.root / "linkdir")

    as_file = read(workspace, "link.txt")
    through_dir = read(workspace, "linkdir/outside.txt")
    written = asyncio.run(
        WriteFileTool(workspace).execute(
            {"file_path": "linkdir/outside.txt", "content": "overwritten"}
        )
    )

    assert as_file.error["type"] == through_dir.error["type"] == "path_refused"
    assert written.error["type"] == "path_refused"
    assert (tmp_path / "outside.txt").read_text() == "SECRET OUTSIDE"


def test_a_symlink_swapped_in_after_the_check_is_refused_too(workspace, tmp_path):
    """A directory is swapped for a symlink to the outside, over and over, while the
    tool reads through it: no read ever returns what is outside."""
    (workspace.root / "d").mkdir()
    (workspace.root / "d" / "outside.txt").write_text("inside")
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            os.rename(workspace.root / "d", workspace.root / "d_real")
            os.symlink(tmp_path, workspace.root / "d")
            os.unlink(workspace.root / "d")
            os.rename(workspace.root / "d_real", workspace.root / "d")

    swapper = threading.Thread(target=swap)
    swapper.start()
    try:
        outputs = [str(read(workspace, "d/outside.txt").output) for _ in range(300)]
    finally:
        stop.set()
        swapper.join()

    assert not any("SECRET" in output for output in outputs)
    assert any("inside" in output for output in outputs)


def test_read_write_edit_glob_and_grep_work_inside(workspace):
    write = asyncio.run(
        WriteFileTool(workspace).execute(
            {"file_path": "notes/todo.txt", "content": "buy milk\ncall bob\n"}
        )
    )
    edit = asyncio.run(
        EditFileTool(workspace).execute(
            {"file_path": "notes/todo.txt", "old_string": "bob", "new_string": "alice"}
        )
    )
    read_back = read(workspace, "notes/todo.txt")
    found = asyncio.run(GlobTool(workspace).execute({"pattern": "**/*.txt"}))
    grep = asyncio.run(GrepTool(workspace).execute({"pattern": "ali.e"}))

    assert write.success and edit.success
    assert read_back.output == "     1\tbuy milk\n     2\tcall alice"
    assert found.output == "notes/todo.txt"
    assert grep.output == "notes/todo.txt:2: call alice"


def test_glob_refuses_patterns_that_climb_out(workspace):
    result = asyncio.run(GlobTool(workspace).execute({"pattern": "../*"}))

    assert result.error["type"] == "path_refused"


def test_edit_refuses_an_ambiguous_replacement(workspace):
    asyncio.run(WriteFileTool(workspace).execute({"file_path": "a.txt", "content": "x x"}))

    result = asyncio.run(
        EditFileTool(workspace).execute(
            {"file_path": "a.txt", "old_string": "x", "new_string": "y"}
        )
    )

    assert result.error["type"] == "ambiguous"


def test_a_named_pipe_is_refused_not_waited_on(workspace):
    os.mkfifo(workspace.root / "pipe")

    read_result = read(workspace, "pipe")
    write_result = asyncio.run(
        WriteFileTool(workspace).execute({"file_path": "pipe", "content": "x"})
    )

    assert read_result.error["type"] == write_result.error["type"] == "path_refused"


def test_a_hard_link_to_another_file_is_refused(workspace, tmp_path):
    try:
        os.link(tmp_path / "outside.txt", workspace.root / "linked.txt")
    except OSError as exc:  # a workspace of its own file system (tools_app.mounts)
        assert exc.errno == errno.EXDEV
        (workspace.root / "elsewhere.txt").write_text("secret")
        os.link(workspace.root / "elsewhere.txt", workspace.root / "linked.txt")

    result = read(workspace, "linked.txt")

    assert result.error["type"] == "path_refused"


def test_a_very_deep_tree_is_searched_without_crashing(workspace):
    deep = workspace.root
    for _ in range(200):
        deep = deep / "d"
    deep.mkdir(parents=True)
    (workspace.root / "top.txt").write_text("needle")

    result = asyncio.run(GrepTool(workspace).execute({"pattern": "needle"}))

    assert result.success and result.output == "top.txt:1: needle"


def test_a_whole_number_written_as_a_float_is_taken(workspace):
    asyncio.run(WriteFileTool(workspace).execute({"file_path": "a.txt", "content": "1\n2\n3"}))

    result = asyncio.run(
        ReadFileTool(workspace).execute({"file_path": "a.txt", "offset": 2.0, "limit": 1.0})
    )

    assert result.output == "     2\t2"
