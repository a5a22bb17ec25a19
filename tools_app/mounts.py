"""Hard caps on workspace storage: each workspace is a tmpfs of its own, sized
TOOL_WORKSPACE_MAX_BYTES (and with as many inodes as blocks), so the kernel refuses the
write that would take it past its quota however fast it comes (fallocate included); and
all the workspaces a host holds together are sized within TOOL_WORKSPACE_TOTAL_BYTES: a
new one is mounted only while the sizes of those mounted leave room for it.

Why tmpfs: it needs nothing of the host but the right to mount, which root has, and so
has an unprivileged worker in a user and mount namespace of its own (the worker image
starts Celery under `unshare --user --map-current-user --keep-caps --mount`, where
bubblewrap works already); it costs nothing to make or remove, and holds no more memory
than its files take. A workspace of an ended session is shrunk to what it holds,
so kept workspaces reserve only their contents. Loop-mounted images or project quotas
would keep files on disk, but need loop devices or a quota-enabled host file system.

Where mounting is not possible, workspaces are plain directories whose size is measured
(tools_app.sandbox polls it while bash runs): the file tools still check before each
write, but bash is refused unless the operator opts out (TOOL_WORKSPACE_HARD_CAP=off).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MNT_DETACH = 0x2
PAGE = 4096

_libc = ctypes.CDLL(None, use_errno=True)


class StorageFull(OSError):
    """The workspaces mounted here already take TOOL_WORKSPACE_TOTAL_BYTES."""


def enabled() -> bool:
    """Whether workspaces are hard-capped mounts here: asked for, and possible."""
    return settings.TOOL_WORKSPACE_HARD_CAP and can_mount()


def bash_allowed() -> bool:
    """bash may run where its workspace has a hard cap, or where the operator said it
    may run without one."""
    return enabled() or not settings.TOOL_WORKSPACE_HARD_CAP


@functools.cache
def can_mount() -> bool:
    """Whether this process can mount a tmpfs (probed once per process): root, or any
    user in a user and mount namespace of its own (the worker image's entry point)."""
    with tempfile.TemporaryDirectory(prefix="vp-mount-probe-") as probe:
        if _mount(probe, size=PAGE * 4, inodes=16, uid=0, flags=0) != 0:
            return False
        _libc.umount2(probe.encode(), MNT_DETACH)
    return True


def is_mounted(path: Path) -> bool:
    return os.path.ismount(path)


def size_of(path: Path) -> int:
    """The size a mounted workspace was given."""
    info = os.statvfs(path)
    return info.f_blocks * info.f_frsize


def used_by(path: Path) -> int:
    info = os.statvfs(path)
    return (info.f_blocks - info.f_bfree) * info.f_frsize


def reserved(base: Path) -> int:
    """What the workspaces mounted under base may hold together."""
    total = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(base):
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False) and is_mounted(path):
                with contextlib.suppress(OSError):
                    total += size_of(path)
    return total


def ensure(root: Path, uid: int | None) -> None:
    """Makes root (an empty or existing workspace directory) a tmpfs of the full quota,
    or grows a shrunk one back to it; StorageFull when the host's total would be passed.
    Files already in a directory that becomes a mount are copied in (a workspace made
    before hard caps were on)."""
    size = _round_up(settings.TOOL_WORKSPACE_MAX_BYTES)
    if is_mounted(root) and size_of(root) >= size:
        return
    with _locked(root.parent):
        mounted = is_mounted(root)
        current = size_of(root) if mounted else 0
        if mounted and current >= size:
            return
        if reserved(root.parent) - current + size > settings.TOOL_WORKSPACE_TOTAL_BYTES:
            raise StorageFull(
                errno.ENOSPC,
                "Workspace storage on this worker is full: every workspace it may hold "
                "is taken. Try again when other conversations have ended.",
            )
        owner = uid if uid is not None else os.getuid()
        if mounted:
            _check(_mount(str(root), size=size, inodes=_inodes(size), uid=owner, flags=MS_REMOUNT))
        elif any(root.iterdir()):
            _mount_over_existing(root, size, owner)
        else:
            _check(_mount(str(root), size=size, inodes=_inodes(size), uid=owner, flags=0))


def shrink(root: Path) -> None:
    """Sizes a mounted workspace to what it holds now (a page at least), so an ended
    session's kept files reserve no more than themselves."""
    if not is_mounted(root):
        return
    with _locked(root.parent):
        used = used_by(root)
        size = max(_round_up(used), PAGE)
        info = os.statvfs(root)
        inodes = max(info.f_files - info.f_ffree, 1) + 1
        if size < size_of(root):
            owner = os.stat(root).st_uid
            _check(_mount(str(root), size=size, inodes=inodes, uid=owner, flags=MS_REMOUNT))


def release(root: Path) -> None:
    """Unmounts a workspace (its files go with it); nothing when it is not mounted."""
    if is_mounted(root) and _libc.umount2(str(root).encode(), MNT_DETACH) != 0:
        _check(-1)


def _mount_over_existing(root: Path, size: int, owner: int) -> None:
    """A directory with files becomes a tmpfs holding the same files: mounted beside it,
    filled, then moved into its place."""
    staging = Path(tempfile.mkdtemp(prefix=".mount-", dir=root.parent))
    try:
        _check(_mount(str(staging), size=size, inodes=_inodes(size), uid=owner, flags=0))
        shutil.copytree(root, staging, symlinks=True, dirs_exist_ok=True)
        shutil.rmtree(root)
        root.mkdir(mode=0o700)
        # MS_MOVE: the filled tmpfs takes the workspace's place.
        if _libc.mount(str(staging).encode(), str(root).encode(), None, 0x2000, None) != 0:
            _check(-1)
    finally:
        with contextlib.suppress(OSError):
            if is_mounted(staging):
                _libc.umount2(str(staging).encode(), MNT_DETACH)
            staging.rmdir()


def _mount(target: str, *, size: int, inodes: int, uid: int, flags: int) -> int:
    options = f"size={size},nr_inodes={inodes},mode=0700,uid={uid},gid={uid}"
    return _libc.mount(
        b"workspace",
        target.encode(),
        b"tmpfs",
        MS_NOSUID | MS_NODEV | flags,
        options.encode(),
    )


def _check(result: int) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _inodes(size: int) -> int:
    """As many files as blocks: a flood of empty files fills a workspace too."""
    return max(size // PAGE, 16)


def _round_up(size: int) -> int:
    return -(-size // PAGE) * PAGE


@contextlib.contextmanager
def _locked(base: Path) -> Iterator[None]:
    """One process at a time sizes the workspaces under base (worker processes of a host
    share them)."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)  # the root itself is the lock
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
