"""One workspace per session, and paths that cannot leave it.

File access walks the path one component at a time with O_NOFOLLOW relative to the
directory already opened, so neither `..`, absolute paths, symlinks pointing out, nor a
symlink swapped in between a check and the use can reach outside the workspace.

When we are root, each session's workspace belongs to a uid of its own, the one its
bash processes run as (see tools_app.sandbox).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from django.conf import settings

from tools_app import mounts

DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
# A walk holds one open directory per level: the bound keeps it well below the usual
# 1024 open files, and no real project nests this deep.
MAX_WALK_DEPTH = 256
BLOCK = 4096
# What a session's workspace is called: its session id (sessions_app.models.new_session_id).
SESSION_NAME = re.compile(r"sess_[A-Za-z0-9_-]{1,80}")


class PathRefused(ValueError):
    """A path that would leave the workspace, or is not usable as asked."""


class TreeTooDeep(ValueError):
    """A directory tree nested deeper than a walk goes (MAX_WALK_DEPTH)."""


def sandbox_uid(session_id: str) -> int | None:
    """A uid of the session's own for its workspace and bash processes (only root can
    switch users)."""
    if os.geteuid() != 0 or not settings.TOOL_SANDBOX_UID_BASE:
        return None
    digest = int(hashlib.sha256(session_id.encode()).hexdigest()[:8], 16)
    return settings.TOOL_SANDBOX_UID_BASE + digest % 1_000_000


@dataclass(frozen=True)
class Workspace:
    root: Path
    uid: int | None  # the sandbox uid owning it, when we can switch users

    @classmethod
    def for_session(cls, session_id: str) -> Workspace:
        """The session's workspace, made if missing: a tmpfs of its quota where hard caps
        are on (mounts.StorageFull when the host's workspaces take all they may)."""
        root = cls.make_root() / session_id
        root.mkdir(exist_ok=True, mode=0o700)
        uid = sandbox_uid(session_id)
        if mounts.enabled():
            mounts.ensure(root, uid)
        elif uid is not None:
            os.chown(root, uid, uid)
        return cls(root=root, uid=uid)

    @staticmethod
    def make_root() -> Path:
        """The workspace root, made if missing. Everything else the app makes is private
        (umask 077); the root, and directories made on the way to it, may be passed
        through by sandbox uids, not listed."""
        base = Path(settings.TOOL_WORKSPACE_ROOT)
        for directory in (*reversed(base.parents), base):
            if not directory.exists():
                directory.mkdir(exist_ok=True)
                directory.chmod(0o711)
        base.chmod(0o711)  # sandbox uids may pass through, not list their neighbours
        return base

    @staticmethod
    def parts(path: str) -> list[str]:
        """The components of a workspace-relative path, or PathRefused."""
        if not isinstance(path, str) or not path or "\x00" in path:
            raise PathRefused("The path must be a non-empty string.")
        for candidate in (path, unquote(path)):
            if candidate.startswith(("/", "\\", "~")):
                raise PathRefused(f"'{path}' is absolute; use a path inside the workspace.")
            if ".." in candidate.replace("\\", "/").split("/"):
                raise PathRefused(f"'{path}' leaves the workspace ('..' is not allowed).")
        parts = [part for part in path.split("/") if part not in ("", ".")]
        if not parts:
            raise PathRefused("The path names the workspace itself, not a file.")
        return parts

    @contextlib.contextmanager
    def _dir_fd(self, parts: list[str], *, create: bool = False) -> Iterator[int]:
        """An fd of the directory parts name, opened without following any symlink."""
        fd = os.open(self.root, DIRECTORY_FLAGS)
        try:
            for part in parts:
                try:
                    next_fd = os.open(part, DIRECTORY_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(part, 0o755, dir_fd=fd)
                    if self.uid is not None:
                        os.chown(part, self.uid, self.uid, dir_fd=fd, follow_symlinks=False)
                    next_fd = os.open(part, DIRECTORY_FLAGS, dir_fd=fd)
                except OSError:
                    raise PathRefused(
                        f"'{part}' is a symlink or not a directory; refused."
                    ) from None
                os.close(fd)
                fd = next_fd
            yield fd
        finally:
            os.close(fd)

    def read_bytes(self, path: str, limit: int) -> bytes:
        *dirs, name = self.parts(path)
        with self._dir_fd(dirs) as dir_fd:
            fd = _open_regular(name, os.O_RDONLY, dir_fd, path)
            with os.fdopen(fd, "rb") as handle:
                return handle.read(limit + 1)

    def file_usage(self, path: str) -> int:
        """What the regular file at path takes on disk, as usage() counts it; 0 when
        there is none (or it is not a file of its own)."""
        *dirs, name = self.parts(path)
        try:
            with self._dir_fd(dirs) as dir_fd:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except (FileNotFoundError, PathRefused):
            return 0
        if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
            return 0
        return max(info.st_blocks * 512, BLOCK)

    def write_bytes(self, path: str, data: bytes) -> None:
        *dirs, name = self.parts(path)
        with self._dir_fd(dirs, create=True) as dir_fd:
            fd = _open_regular(name, os.O_WRONLY | os.O_CREAT, dir_fd, path)
            with os.fdopen(fd, "wb") as handle:
                handle.truncate(0)
                handle.write(data)
                if self.uid is not None:
                    os.fchown(handle.fileno(), self.uid, self.uid)

    def walk(self, start: str = ".") -> Iterator[str]:
        """Workspace-relative paths of regular files under start, sorted depth-first (a
        directory's files where its name sorts); symlinks are skipped, TreeTooDeep past
        MAX_WALK_DEPTH levels. Every directory opened is closed however the walk ends:
        done, failed or dropped early by the caller."""
        for path, info in self._entries(start):
            if stat.S_ISREG(info.st_mode):
                yield path

    def usage(self) -> int:
        """The bytes the workspace takes on disk: allocated blocks, each file, directory
        or link counted once and at least one block (a flood of empty files costs too).
        TreeTooDeep when it cannot all be seen."""
        seen: set[tuple[int, int]] = set()
        total = 0
        for _, info in self._entries("."):
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += max(info.st_blocks * 512, BLOCK)
        return total

    def _entries(self, start: str) -> Iterator[tuple[str, os.stat_result]]:
        """Every entry under start with its lstat, sorted depth-first, without following
        a symlink; TreeTooDeep past MAX_WALK_DEPTH levels."""
        base = [] if start in ("", ".") else self.parts(start)
        # One entry per open level: its fd, its path, and its names still to visit, the
        # next one last.
        stack: list[tuple[int, str, list[str]]] = []

        def enter(fd: int, prefix: str) -> None:
            names: list[str] = []
            stack.append((fd, prefix, names))  # first, so the fd is closed if listing fails
            names.extend(sorted(os.listdir(fd), reverse=True))

        try:
            with self._dir_fd(base) as top:
                enter(os.dup(top), "/".join(base))
            while stack:
                fd, prefix, names = stack[-1]
                if not names:
                    os.close(stack.pop()[0])
                    continue
                name = names.pop()
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                path = f"{prefix}/{name}" if prefix else name
                yield path, info
                if stat.S_ISDIR(info.st_mode):
                    if len(stack) > MAX_WALK_DEPTH:
                        raise TreeTooDeep(
                            f"The directory tree is more than {MAX_WALK_DEPTH} levels deep."
                        )
                    enter(os.open(name, DIRECTORY_FLAGS, dir_fd=fd), path)
        finally:
            for fd, _, _ in stack:
                os.close(fd)


def _open_regular(name: str, flags: int, dir_fd: int, path: str) -> int:
    """Opens name in dir_fd without following a symlink and without blocking (a FIFO
    would hang the worker), then insists on a regular file with a single link."""
    try:
        fd = os.open(
            name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, 0o644, dir_fd=dir_fd
        )
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the file itself is a symlink
            raise PathRefused(f"'{path}' is a symlink; refused.") from None
        if exc.errno == errno.ENXIO:  # a FIFO with no reader, opened for writing
            raise PathRefused(f"'{path}' is not a regular file.") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(fd)
        raise PathRefused(f"'{path}' is not a regular file of its own; refused.")
    os.set_blocking(fd, True)
    return fd


def session_workspaces() -> list[str]:
    """The names of the workspaces under the workspace root: real directories named like
    a session (anything else there is not ours to judge)."""
    base = Path(settings.TOOL_WORKSPACE_ROOT)
    try:
        entries = list(os.scandir(base))
    except FileNotFoundError:
        return []
    return sorted(
        entry.name
        for entry in entries
        if SESSION_NAME.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False)
    )


def remove_workspace(session_id: str) -> bool:
    """Deletes a session's workspace: only a real directory directly in the workspace
    root, and nothing its symlinks point to. False when there was none."""
    if not SESSION_NAME.fullmatch(session_id):
        raise PathRefused(f"'{session_id}' is not a workspace name.")
    base_fd = os.open(settings.TOOL_WORKSPACE_ROOT, os.O_RDONLY | os.O_DIRECTORY)
    try:
        info = os.stat(session_id, dir_fd=base_fd, follow_symlinks=False)
        if not stat.S_ISDIR(info.st_mode):
            return False
        mounts.release(Path(settings.TOOL_WORKSPACE_ROOT) / session_id)
        _remove_tree(base_fd, session_id)
    except FileNotFoundError:
        return False
    finally:
        os.close(base_fd)
    return True


def _remove_tree(parent_fd: int, name: str) -> None:
    """Removes directory name (in parent_fd) and everything in it, through directory fds
    and without following a symlink. No recursion and at most MAX_WALK_DEPTH open
    directories: a subtree deeper than that is moved up to the top and removed later."""
    top = os.open(name, DIRECTORY_FLAGS, dir_fd=parent_fd)
    # One entry per open level: its fd, its name in the level above, its names to visit.
    stack: list[tuple[int, str, list[str]]] = [(top, name, os.listdir(top))]
    moved = 0
    try:
        while stack:
            fd, _, names = stack[-1]
            if not names:
                os.close(fd)
                _, done, _ = stack.pop()
                if stack:
                    os.rmdir(done, dir_fd=stack[-1][0])
                continue
            entry = names.pop()
            info = os.stat(entry, dir_fd=fd, follow_symlinks=False)
            if not stat.S_ISDIR(info.st_mode):
                os.unlink(entry, dir_fd=fd)
            elif len(stack) < MAX_WALK_DEPTH:
                child = os.open(entry, DIRECTORY_FLAGS, dir_fd=fd)
                stack.append((child, entry, []))
                stack[-1][2].extend(os.listdir(child))
            else:
                while True:  # a name not taken at the top (rename would replace an empty dir)
                    moved += 1
                    target = f".deep-{moved}"
                    try:
                        os.stat(target, dir_fd=top, follow_symlinks=False)
                    except FileNotFoundError:
                        break
                os.rename(entry, target, src_dir_fd=fd, dst_dir_fd=top)
                stack[0][2].append(target)
    finally:
        for fd, _, _ in stack:
            os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)
