"""Where tools run: one workspace per session, paths that cannot leave it, and bash
in a bounded, isolated process.

File access walks the path one component at a time with O_NOFOLLOW relative to the
directory already opened, so neither `..`, absolute paths, symlinks pointing out, nor a
symlink swapped in between a check and the use can reach outside the workspace.

bash runs in its own session/process group as an unprivileged uid of its own per
session (when we are root), with CPU, memory, file-size and process-count limits, a
scrubbed environment and a wall-clock timeout that kills the whole group. Where
bubblewrap works it also gets no network, a read-only root and a private /tmp and PID
namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import resource
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from django.conf import settings

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


MAX_DEPTH = 64


class PathRefused(ValueError):
    """A path that would leave the workspace, or is not usable as asked."""


@dataclass(frozen=True)
class Workspace:
    root: Path
    uid: int | None  # the sandbox uid owning it, when we can switch users

    @classmethod
    def for_session(cls, session_id: str) -> Workspace:
        base = Path(settings.TOOL_WORKSPACE_ROOT)
        base.mkdir(parents=True, exist_ok=True)
        base.chmod(0o711)  # sandbox uids may pass through, not list their neighbours
        root = base / session_id
        root.mkdir(exist_ok=True, mode=0o700)
        uid = sandbox_uid(session_id)
        if uid is not None:
            os.chown(root, uid, uid)
        return cls(root=root, uid=uid)

    # --- paths ---------------------------------------------------------------------

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
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            for part in parts:
                try:
                    next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(part, 0o755, dir_fd=fd)
                    if self.uid is not None:
                        os.chown(part, self.uid, self.uid, dir_fd=fd, follow_symlinks=False)
                    next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except (NotADirectoryError, OSError) as exc:
                    if isinstance(exc, FileNotFoundError):
                        raise
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
        """Workspace-relative paths of regular files under start; symlinks are skipped."""
        base = [] if start in ("", ".") else self.parts(start)
        with self._dir_fd(base) as top:
            yield from self._walk(os.dup(top), "/".join(base))

    def _walk(self, fd: int, prefix: str) -> Iterator[str]:
        try:
            entries = sorted(os.listdir(fd))
            for name in entries:
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                rel = f"{prefix}/{name}" if prefix else name
                if stat.S_ISDIR(info.st_mode):
                    child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                    yield from self._walk(child, rel)
                elif stat.S_ISREG(info.st_mode):
                    yield rel
        finally:
            os.close(fd)


def _open_regular(name: str, flags: int, dir_fd: int, path: str) -> int:
    """Opens name in dir_fd without following a symlink and without blocking (a FIFO
    would hang the worker), then insists on a regular file with a single link."""
    try:
        fd = os.open(
            name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, 0o644, dir_fd=dir_fd
        )
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: the file itself is a symlink
            raise PathRefused(f"'{path}' is a symlink; refused.") from None
        if exc.errno == 6:  # ENXIO: a FIFO with no reader, opened for writing
            raise PathRefused(f"'{path}' is not a regular file.") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(fd)
        raise PathRefused(f"'{path}' is not a regular file of its own; refused.")
    os.set_blocking(fd, True)
    return fd


def sandbox_uid(session_id: str) -> int | None:
    """A uid of the session's own for its bash processes (only root can switch)."""
    if os.geteuid() != 0 or not settings.TOOL_SANDBOX_UID_BASE:
        return None
    digest = int(hashlib.sha256(session_id.encode()).hexdigest()[:8], 16)
    return settings.TOOL_SANDBOX_UID_BASE + digest % 1_000_000


NOBODY = 65534
# What bash sees of the host under bubblewrap, read-only: programs, libraries and
# configuration; not /run, /var, /home or the project (sockets, databases, secrets).
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/etc")
CLONE_NEWNET = 0x40000000


def _bwrap(root: str | None, uid: int | None) -> list[str]:
    args = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    for path in SYSTEM_PATHS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    args += ["--tmpfs", "/tmp", "--dev", "/dev", "--proc", "/proc"]  # noqa: S108 (private)
    if root is not None:
        args += ["--bind", root, root, "--chdir", root]
    if os.geteuid() == 0 and uid is None:
        # Never root inside: with no sandbox uid of its own, bash is nobody.
        args += ["--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY)]
    return args


def isolation() -> str:
    """What bash runs in: 'bwrap'; 'rlimits' only when chosen (TOOL_ISOLATION=rlimits);
    'none' when bubblewrap does not work here, and then bash is refused."""
    if settings.TOOL_ISOLATION == "rlimits":
        return "rlimits"
    return "bwrap" if _bwrap_probe() else "none"


def bwrap_works() -> bool:
    return isolation() == "bwrap"


@functools.cache
def _bwrap_probe() -> bool:
    """Whether bubblewrap works here as bash will use it: same arguments, same user
    switch (probed once per process)."""
    if not shutil.which("bwrap"):
        return False
    probe = Workspace(root=Path("/"), uid=sandbox_uid("probe"))
    try:
        result = subprocess.run(
            [*_bwrap(None, probe.uid), "/bin/true"],
            capture_output=True,
            timeout=10,
            check=False,
            preexec_fn=_limit(probe, 10, network=True),  # noqa: PLW1509
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


@dataclass(frozen=True)
class BashResult:
    exit_code: int | None
    output: str
    truncated: bool
    timed_out: bool


def _limit(workspace: Workspace, timeout: float, *, network: bool = False):
    def apply() -> None:
        # Die with the worker that started us: a killed worker leaves no shell running.
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        # Without bubblewrap too, a network namespace of its own: nothing to reach.
        if not network and os.geteuid() == 0 and ctypes.CDLL(None).unshare(CLONE_NEWNET):
            os._exit(126)
        memory = settings.TOOL_BASH_MEMORY_BYTES
        cpu = int(timeout) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        size = settings.TOOL_BASH_FILE_SIZE_BYTES
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if os.geteuid() == 0:
            uid = workspace.uid if workspace.uid is not None else NOBODY
            procs = settings.TOOL_BASH_MAX_PROCESSES
            resource.setrlimit(resource.RLIMIT_NPROC, (procs, procs))
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)

    return apply


def _command(workspace: Workspace, command: str) -> list[str]:
    shell = ["/bin/bash", "--noprofile", "--norc", "-c", command]
    if not bwrap_works():
        return shell
    return [*_bwrap(str(workspace.root), workspace.uid), *shell]


def _pids_of(uid: int) -> list[int]:
    """Live (not zombie) processes of uid."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.stat(entry.path).st_uid != uid:
                continue
            with open(f"{entry.path}/stat", "rb") as stat_file:
                state = stat_file.read().rsplit(b")", 1)[1].split()[0]
            if state not in (b"Z", b"X"):
                pids.append(int(entry.name))
    return pids


def _wait_until_gone(uid: int, seconds: float = 2.0) -> None:
    deadline = time.monotonic() + seconds
    while _pids_of(uid) and time.monotonic() < deadline:
        time.sleep(0.02)


def _kill_all_of(uid: int) -> None:
    """Kills every process of the sandbox uid, including any that left the group or
    were being forked while we killed (so: until none is left, within 2 s)."""

    def become() -> None:
        os.setgid(uid)
        os.setuid(uid)

    deadline = time.monotonic() + 2.0
    while _pids_of(uid) and time.monotonic() < deadline:
        subprocess.run(
            ["/bin/kill", "-9", "-1"], preexec_fn=become, capture_output=True, check=False
        )
        time.sleep(0.02)


def run_bash(workspace: Workspace, command: str, timeout: float) -> BashResult:
    """Runs command in the workspace; output (stdout+stderr) capped, the whole process
    group killed at the timeout and again when the shell exits (no stragglers)."""
    cap = settings.TOOL_OUTPUT_MAX_BYTES
    env = {"PATH": SAFE_PATH, "HOME": str(workspace.root), "LANG": "C.UTF-8", "TERM": "dumb"}
    process = subprocess.Popen(
        _command(workspace, command),
        cwd=workspace.root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_limit(workspace, timeout),  # noqa: PLW1509 (no threads in the child)
    )
    os.set_blocking(process.stdout.fileno(), False)
    chunks: list[bytes] = []
    size = 0
    timed_out = False
    deadline = time.monotonic() + timeout

    def take(chunk: bytes) -> None:
        nonlocal size
        if size < cap:
            chunks.append(chunk[: cap - size])
        size += len(chunk)

    try:
        while True:
            chunk = process.stdout.read(65536)
            if chunk:
                take(chunk)
                if size > cap:
                    break  # enough: the rest would be thrown away
                continue
            if chunk == b"":
                break  # every writer is gone
            if process.poll() is not None:
                # The shell is done; children left in the background may hold the pipe.
                while chunk := process.stdout.read(65536):
                    take(chunk)
                break
            if time.monotonic() > deadline:
                timed_out = True
                break
            time.sleep(0.01)
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        # Under bubblewrap the PID namespace dies with it (give the kernel a moment);
        # without, children that left the process group are found by their uid.
        if workspace.uid is not None:
            if bwrap_works():
                _wait_until_gone(workspace.uid)
            else:
                _kill_all_of(workspace.uid)
        process.stdout.close()
        process.wait()
    truncated = size > cap
    output = b"".join(chunks).decode("utf-8", "replace")
    if truncated:
        output += f"\n[output cut at {cap} bytes]"
    return BashResult(
        exit_code=None if timed_out else process.returncode,
        output=output,
        truncated=truncated,
        timed_out=timed_out,
    )
