"""glob and grep walk the workspace without recursing, as deep as the bound allows, and
leave no directory open however the walk ends."""

from __future__ import annotations

import asyncio
import inspect
import os
import sys

import pytest

from tools_app.builtin import GlobTool, GrepTool
from tools_app.workspace import MAX_WALK_DEPTH, Workspace


@pytest.fixture
def workspace(settings, tmp_path):
    settings.TOOL_WORKSPACE_ROOT = tmp_path / "workspaces"
    return Workspace.for_session("sess_walk")


def nest(workspace, levels: int):
    """levels directories, each inside the one before, under the workspace. Keep
    levels far below 1000: pytest removes old tmp dirs with shutil.rmtree, which
    recurses per level and would crash a later run at its end."""
    deep = workspace.root
    for _ in range(levels):  # not mkdir(parents=True): that recurses per level too
        deep = deep / "d"
        deep.mkdir()
    return deep


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_it_lists_files_sorted_depth_first_and_skips_symlinks(workspace):
    for path in ("c.txt", "b.txt", "a.txt", "b/y.txt", "b/x/z.txt"):
        (workspace.root / path).parent.mkdir(parents=True, exist_ok=True)
        (workspace.root / path).write_text("x")
    os.symlink("a.txt", workspace.root / "link.txt")
    os.symlink("b", workspace.root / "linkdir")

    result = asyncio.run(GlobTool(workspace).execute({"pattern": "**/*.txt"}))

    assert result.output.splitlines() == ["a.txt", "b/x/z.txt", "b/y.txt", "b.txt", "c.txt"]


def test_it_reaches_the_bottom_of_a_tree_as_deep_as_the_bound_without_recursing(workspace):
    (nest(workspace, MAX_WALK_DEPTH) / "needle.txt").write_text("x")
    # Far fewer frames than levels: a walk that recursed per level would fail here.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack(0)) + 60)
    try:
        result = asyncio.run(GlobTool(workspace).execute({"pattern": "**/needle.txt"}))
    finally:
        sys.setrecursionlimit(limit)

    assert result.success, result.output
    assert result.output == "d/" * MAX_WALK_DEPTH + "needle.txt"


def test_a_tree_deeper_than_the_bound_is_refused_leaving_nothing_open(workspace):
    (nest(workspace, MAX_WALK_DEPTH + 1) / "needle.txt").write_text("needle")
    before = open_fds()

    result = asyncio.run(GrepTool(workspace).execute({"pattern": "needle"}))

    assert result.error["type"] == "too_deep"
    assert f"more than {MAX_WALK_DEPTH} levels" in result.output
    assert open_fds() == before


def test_a_walk_stopped_early_closes_every_directory_it_opened(workspace):
    deep = nest(workspace, 20)
    (deep / "first.txt").write_text("x")
    (workspace.root / "last.txt").write_text("x")
    before = open_fds()

    walk = workspace.walk()
    first = next(walk)
    during = open_fds()
    walk.close()

    assert first == "d/" * 20 + "first.txt"
    assert during > before + 20  # every level down to first.txt was open
    assert open_fds() == before


def test_a_walk_that_fails_midway_closes_every_directory_it_opened(workspace):
    deep = nest(workspace, 20)
    (deep / "first.txt").write_text("x")
    (workspace.root / "vanishing.txt").write_text("x")
    before = open_fds()

    walk = workspace.walk()
    next(walk)
    (workspace.root / "vanishing.txt").unlink()  # listed already, gone when reached
    with pytest.raises(FileNotFoundError):
        next(walk)

    assert open_fds() == before
