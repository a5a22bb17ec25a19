"""The app's data is its own: the database, media and everything else under VAR_DIR.

bash runs as other uids, and in TOOL_ISOLATION=rlimits mode on the host's file system,
so none of it may be readable by others. New files are private through the umask the
settings set (077) and Django's upload permissions (0600/0700); make_private() tightens,
at start, what an older version or an operator left open. Two things in VAR_DIR are not
private: the workspace root (sandbox uids must reach their workspace) and the collected
static files (public, perhaps served by another user); VAR_DIR, when it holds them, may
be passed through (o+x), never listed.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from django.conf import settings

OTHERS = stat.S_IRWXG | stat.S_IRWXO


def _sqlite_files() -> list[Path]:
    database = settings.DATABASES["default"]
    if not database["ENGINE"].endswith("sqlite3") or str(database["NAME"]) == ":memory:":
        return []
    name = Path(database["NAME"])
    return [name, *(name.with_name(name.name + suffix) for suffix in ("-wal", "-shm", "-journal"))]


def _public() -> list[Path]:
    return [Path(settings.TOOL_WORKSPACE_ROOT).absolute(), Path(settings.STATIC_ROOT).absolute()]


def _on_the_way_to_public(path: Path) -> bool:
    """Whether path is, or leads to, the workspace root or the static files."""
    path = path.absolute()
    return any(path == public or path in public.parents for public in _public())


def data_paths() -> list[Path]:
    """What must stay private: VAR_DIR and what is directly in it, the media root, and
    the SQLite database when there is one (not the workspace root nor static files)."""
    var = Path(settings.VAR_DIR)
    paths = [var, Path(settings.MEDIA_ROOT), *_sqlite_files()]
    with contextlib.suppress(OSError):
        paths += sorted(var.iterdir())
    public = _public()
    return [path for path in dict.fromkeys(paths) if path.absolute() not in public]


def _exposed(path: Path, mode: int) -> bool:
    if mode & stat.S_IROTH:
        return True
    return stat.S_ISDIR(mode) and bool(mode & stat.S_IXOTH) and not _on_the_way_to_public(path)


def readable_by_others() -> list[Path]:
    """The app's data that other users (so bash, in rlimits mode) could read."""
    exposed = []
    for path in data_paths():
        try:
            mode = path.lstat().st_mode
        except OSError:
            continue
        if not stat.S_ISLNK(mode) and _exposed(path, mode):
            exposed.append(path)
    return exposed


def make_private() -> None:
    """Takes group and other permissions off the app's data (the way to the workspace
    root and static files keeps o+x). What we do not own, or cannot change, is left."""
    for path in data_paths():
        try:
            info = path.lstat()
        except OSError:
            continue
        if stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid():
            continue
        mode = stat.S_IMODE(info.st_mode) & ~OTHERS
        if stat.S_ISDIR(info.st_mode) and _on_the_way_to_public(path):
            mode |= stat.S_IXOTH
        with contextlib.suppress(OSError):
            path.chmod(mode)
