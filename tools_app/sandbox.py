"""Where bash runs: a bounded, isolated process in the session's workspace.

bash runs in its own session/process group as an unprivileged uid of its own per
session (when we are root), with CPU, memory, file-size and process-count limits, a
scrubbed environment and a wall-clock timeout that kills the whole group. Where
bubblewrap works it also gets no network, a read-only root and a private /tmp and PID
namespace. Which files bash may touch is the workspace's business (tools_app.workspace).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import resource
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from tools_app.workspace import Workspace, sandbox_uid

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


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


@dataclass
class _Drained:
    """What bash printed, kept up to cap bytes, and whether it ran out of time."""

    cap: int
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    timed_out: bool = False

    def take(self, chunk: bytes) -> None:
        if self.size < self.cap:
            self.chunks.append(chunk[: self.cap - self.size])
        self.size += len(chunk)

    @property
    def truncated(self) -> bool:
        return self.size > self.cap

    def text(self) -> str:
        output = b"".join(self.chunks).decode("utf-8", "replace")
        if self.truncated:
            output += f"\n[output cut at {self.cap} bytes]"
        return output


def _start(workspace: Workspace, command: str, timeout: float) -> subprocess.Popen:
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
    return process


def _drain(process: subprocess.Popen, cap: int, deadline: float) -> _Drained:
    """Reads the process's output until every writer is gone, the shell is done, more
    than cap bytes came, or the deadline passed."""
    drained = _Drained(cap)
    while True:
        chunk = process.stdout.read(65536)
        if chunk:
            drained.take(chunk)
            if drained.truncated:
                return drained  # enough: the rest would be thrown away
            continue
        if chunk == b"":
            return drained  # every writer is gone
        if process.poll() is not None:
            # The shell is done; children left in the background may hold the pipe.
            while chunk := process.stdout.read(65536):
                drained.take(chunk)
            return drained
        if time.monotonic() > deadline:
            drained.timed_out = True
            return drained
        time.sleep(0.01)


def _kill_stragglers(process: subprocess.Popen, workspace: Workspace) -> None:
    """Kills the shell's process group and whatever of the session's uid got out of it."""
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


def run_bash(workspace: Workspace, command: str, timeout: float) -> BashResult:
    """Runs command in the workspace; output (stdout+stderr) capped, the whole process
    group killed at the timeout and again when the shell exits (no stragglers)."""
    process = _start(workspace, command, timeout)
    try:
        drained = _drain(process, settings.TOOL_OUTPUT_MAX_BYTES, time.monotonic() + timeout)
    finally:
        _kill_stragglers(process, workspace)
    return BashResult(
        exit_code=None if drained.timed_out else process.returncode,
        output=drained.text(),
        truncated=drained.truncated,
        timed_out=drained.timed_out,
    )
