"""Where bash runs: a bounded, isolated process in the session's workspace.

bash runs in its own session/process group as an unprivileged uid of its own per
session (when we are root), under a seccomp filter (tools_app.seccomp), in a cgroup of
its own per call where the host allows one (tools_app.cgroups: memory, processes and CPU
for the whole call), with per-process CPU, memory, file-size and process-count rlimits,
a scrubbed environment and a wall-clock timeout that kills everything it started.

Where bubblewrap works it also gets no network, no way to make user namespaces, a
read-only view of the system's programs and only the parts of /etc they need, a sized
private /tmp, a PID namespace, and the workspace mounted at /workspace: what it prints
never shows the host's paths (in rlimits mode the workspace's host path is replaced by
/workspace in its output). Which files bash may touch is the workspace's business
(tools_app.workspace); its size is bounded by TOOL_WORKSPACE_MAX_BYTES: a hard cap where
the workspace is a sized mount (tools_app.mounts), and measured before, during and after
each call either way, for a clear report.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import os
import resource
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from django.conf import settings

from tools_app import cgroups, mounts, seccomp
from tools_app.workspace import TreeTooDeep, Workspace, sandbox_uid
from voiceplatform import tracing

log = structlog.get_logger(__name__)

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
NOBODY = 65534
# Who bash is inside bubblewrap (the session's uid outside), and where its workspace is.
INSIDE_UID = 1000
WORKSPACE = "/workspace"
# What bash sees of the host under bubblewrap, read-only: programs and libraries; not
# /run, /var, /home or the project (sockets, databases, secrets).
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32")
# Of /etc, only what the usual programs read (probed with strace on bash, coreutils, ls,
# cat, grep, sed, awk, find, python3, tar, gzip, file): the dynamic linker, name service
# switch, time zone, alternatives (awk is /etc/alternatives/awk), terminfo, magic, and
# public certificates. Users, groups, hosts and the host name are our own (ETC_FILES).
ETC_PATHS = (
    "nsswitch.conf",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "timezone",
    "alternatives",
    "terminfo",
    "magic",
    "magic.mime",
    "mime.types",
    "protocols",
    "services",
    "locale.alias",
    "ssl/certs",
    "ssl/openssl.cnf",
    "python3*",
)
ETC_FILES = {
    "passwd": (
        "root:x:0:0:root:/root:/usr/sbin/nologin\n"
        f"sandbox:x:{INSIDE_UID}:{INSIDE_UID}:sandbox:{WORKSPACE}:/bin/bash\n"
        f"nobody:x:{NOBODY}:{NOBODY}:nobody:/nonexistent:/usr/sbin/nologin\n"
    ),
    "group": f"root:x:0:\nsandbox:x:{INSIDE_UID}:\nnogroup:x:{NOBODY}:\n",
    "hosts": "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    "hostname": "sandbox\n",
}
# Host facts /proc would tell (the kernel's command line, keys, timers, kernel memory):
# /dev/null is bound over them.
MASKED_PROC = (
    "/proc/cmdline",
    "/proc/kcore",
    "/proc/keys",
    "/proc/kallsyms",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/sched_debug",
    "/proc/interrupts",
)
CLONE_NEWNET = 0x40000000
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
# How often a running call's workspace is measured (more rarely when measuring is slow).
QUOTA_CHECK_SECONDS = 1.0


def _etc_dir() -> Path:
    """Our /etc/passwd, group, hosts and hostname for the sandbox, kept beside the
    workspaces (sandbox uids may read them: nothing in them is secret)."""
    # The root first, every time: another process of this host (with another workspace
    # root) may have made it private since, and then bwrap could not reach these files.
    directory = Workspace.make_root() / ".sandbox-etc"
    with contextlib.suppress(OSError):
        if all((directory / name).read_text() == text for name, text in ETC_FILES.items()):
            return directory
    directory.mkdir(exist_ok=True)
    directory.chmod(0o711)
    for name, content in ETC_FILES.items():
        staging = directory / f".{name}.{os.getpid()}"
        staging.write_text(content)
        staging.chmod(0o644)
        staging.replace(directory / name)
    return directory


def _bwrap(root: str | None, seccomp_fd: int) -> list[str]:
    """bubblewrap's arguments for bash in root (None: no workspace, the probe)."""
    size = str(settings.TOOL_BASH_TMP_BYTES)
    args = [
        "bwrap",
        "--unshare-all",
        # A user namespace of its own, and no further ones inside (bash as root of a
        # namespace of its own would have every capability there).
        "--unshare-user",
        "--disable-userns",
        "--uid",
        str(INSIDE_UID),
        "--gid",
        str(INSIDE_UID),
        "--hostname",
        "sandbox",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--seccomp",
        str(seccomp_fd),
    ]
    for path in SYSTEM_PATHS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    args += ["--dir", "/etc"]
    for pattern in ETC_PATHS:
        for path in sorted(glob.glob(f"/etc/{pattern}")):
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            else:
                args += ["--ro-bind", path, path]
    etc = _etc_dir()
    for name in ETC_FILES:
        args += ["--ro-bind", str(etc / name), f"/etc/{name}"]
    args += ["--size", size, "--tmpfs", "/tmp"]  # noqa: S108 (private, sized)
    # /dev read-only (bwrap's is a tmpfs bash could fill), with a sized /dev/shm in it.
    args += ["--dev", "/dev", "--size", size, "--tmpfs", "/dev/shm", "--remount-ro", "/dev"]  # noqa: S108
    args += ["--proc", "/proc"]
    for path in MASKED_PROC:
        if os.path.exists(path):
            args += ["--ro-bind", "/dev/null", path]
    if root is not None:
        args += ["--bind", root, WORKSPACE, "--chdir", WORKSPACE]
    # Last: the sandbox's own root (a tmpfs holding /etc and the mount points) read-only.
    return [*args, "--remount-ro", "/"]


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
        fd = seccomp.program_fd()
    except (OSError, seccomp.SeccompUnavailable):
        return False  # no filter, no bubblewrap: bash would be less contained than said
    try:
        result = subprocess.run(
            [*_bwrap(None, fd), "/bin/true"],
            capture_output=True,
            timeout=10,
            check=False,
            pass_fds=(fd,),
            preexec_fn=_limit(probe, 10, network=True),  # noqa: PLW1509
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    finally:
        os.close(fd)
    return result.returncode == 0


def describe_limits() -> str:
    """The limits one bash call gets here, for the start-up line."""
    memory = settings.TOOL_BASH_MEMORY_BYTES // 2**20
    scope = cgroups.describe()
    tmp_mib = settings.TOOL_BASH_TMP_BYTES // 2**20
    tmp = f"/tmp {tmp_mib} MiB" if bwrap_works() else "the host's /tmp"  # noqa: S108
    if mounts.enabled():
        cap = f"tmpfs, hard cap; all {settings.TOOL_WORKSPACE_TOTAL_BYTES // 2**20} MiB"
    elif settings.TOOL_WORKSPACE_HARD_CAP:
        cap = "no hard cap possible: bash off"
    else:
        cap = "measured only"
    # Without a cgroup the limits hold per process (rlimits), and nothing shares out CPU.
    cpu = f"{settings.TOOL_BASH_CPU_QUOTA} CPU" if cgroups.backend() else "no CPU share"
    line = (
        f"{scope}: memory {memory} MiB, {settings.TOOL_BASH_MAX_PROCESSES} processes,"
        f" {cpu}; {tmp}; seccomp"
        f" {'on' if seccomp.available() else 'off'}; workspace"
        f" {settings.TOOL_WORKSPACE_MAX_BYTES // 2**20} MiB ({cap})"
    )
    if isolation() == "rlimits":
        # Without bubblewrap only the filter keeps bash from the host's Unix sockets.
        sockets = "refused" if seccomp.available() else "REACHABLE (no libseccomp)"
        line += f"; host Unix sockets {sockets}"
    return line


class Stop:
    """A call asked to stop (from the worker's loop; read by the thread running it)."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.forced = threading.Event()


@dataclass(frozen=True)
class BashResult:
    exit_code: int | None
    output: str
    truncated: bool
    timed_out: bool
    cancelled: bool = False
    # The workspace's size after the call (None: it could not be measured), and whether
    # the call was stopped for growing it past TOOL_WORKSPACE_MAX_BYTES.
    workspace_bytes: int | None = 0
    stopped_over_quota: bool = False

    @property
    def over_quota(self) -> bool:
        return self.workspace_bytes is None or (
            self.workspace_bytes > settings.TOOL_WORKSPACE_MAX_BYTES
        )


def _is_root() -> bool:
    return os.geteuid() == 0


def _tasks_of(uid: int) -> int:
    """How many tasks (threads) the uid runs: what RLIMIT_NPROC counts."""
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(entry.path).st_uid == uid:
                    count += len(os.listdir(f"{entry.path}/task"))
    return count


def _limit(
    workspace: Workspace,
    timeout: float,
    *,
    network: bool = False,
    file_size: int | None = None,
    cgroup: cgroups.CallCgroup | None = None,
    filter_here: bool = False,
) -> Callable[[], None]:
    """What the child does between fork and exec (prepared here, in the parent)."""
    memory = settings.TOOL_BASH_MEMORY_BYTES
    cpu = int(timeout) + 1
    size = settings.TOOL_BASH_FILE_SIZE_BYTES if file_size is None else file_size
    procs = settings.TOOL_BASH_MAX_PROCESSES
    root = _is_root()
    uid = (workspace.uid if workspace.uid is not None else NOBODY) if root else os.getuid()
    # RLIMIT_NPROC counts every task of the real uid: a uid of its own gets the limit,
    # a worker's own uid gets room for that many more than it runs now.
    nproc = procs if root else _tasks_of(uid) + procs
    join = cgroup.joiner() if cgroup is not None else None
    # Only without bubblewrap: there the host's Unix sockets are on paths bash sees.
    load_filter = seccomp.loader(unix_sockets=False) if filter_here else None
    libc = ctypes.CDLL(None)

    def apply() -> None:
        # Die with the worker that started us: a killed worker leaves no shell running.
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        # A worker in a namespace of its own keeps its capabilities there (to mount
        # workspaces); what it starts gets none of them.
        libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
        if join is not None:
            join()  # before anything else runs: all it starts is inside
        # Without bubblewrap too, a network namespace of its own: nothing to reach.
        if not network and root and libc.unshare(CLONE_NEWNET):
            os._exit(126)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        if root:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        if load_filter is not None:
            load_filter()  # last: it refuses unshare, which the steps above use

    return apply


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
    """What bash printed, kept up to cap bytes, and whether it ran out of time or was
    stopped for growing the workspace past its quota."""

    cap: int
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    timed_out: bool = False
    over_quota: bool = False
    cancelled: bool = False
    kill_at: float = 0.0

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


@dataclass
class _QuotaWatch:
    """Measures the workspace now and then while bash runs, and says when to stop it:
    over its quota, or past what it held at the start when it was over already, or no
    longer measurable. A workspace that could not be measured at the start (a tree too
    deep) is let be until it can, so that removing it is not stopped."""

    workspace: Workspace
    at_start: int | None
    next_check: float = field(default_factory=lambda: time.monotonic() + QUOTA_CHECK_SECONDS)

    def exceeded(self) -> bool:
        now = time.monotonic()
        if now < self.next_check:
            return False
        used = _usage(self.workspace)
        spent = time.monotonic() - now
        self.next_check = time.monotonic() + max(QUOTA_CHECK_SECONDS, 5 * spent)
        if used is None:
            return self.at_start is not None
        return used > max(settings.TOOL_WORKSPACE_MAX_BYTES, self.at_start or 0)


def _usage(workspace: Workspace) -> int | None:
    """The workspace's size, or None when it cannot be measured (nested too deep, or
    made unreadable): counted as over its quota."""
    try:
        return workspace.usage()
    except (TreeTooDeep, OSError):
        return None


def _start(
    workspace: Workspace, command: str, timeout: float, file_size: int, cgroup
) -> subprocess.Popen:
    shell = ["/bin/bash", "--noprofile", "--norc", "-c", command]
    under_bwrap = bwrap_works()
    home = WORKSPACE if under_bwrap else str(workspace.root)
    env = {"PATH": SAFE_PATH, "HOME": home, "LANG": "C.UTF-8", "TERM": "dumb"}
    fd = seccomp.program_fd() if under_bwrap else None
    # Without bubblewrap the filter is loaded by the child itself, where libseccomp is
    # there (the start-up line says whether it is).
    filter_here = not under_bwrap and seccomp.available()
    attributes = {
        "sandbox.isolation": "bubblewrap" if under_bwrap else "rlimits",
        "sandbox.cgroup": cgroup is not None,
        "sandbox.uid": workspace.uid,
    }
    try:
        with tracing.span("sandbox.spawn", attributes) as span:
            process = subprocess.Popen(
                [*_bwrap(str(workspace.root), fd), *shell] if fd is not None else shell,
                cwd=workspace.root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(fd,) if fd is not None else (),
                # No threads run in the child: the preexec function is safe here.
                preexec_fn=_limit(  # noqa: PLW1509
                    workspace,
                    timeout,
                    file_size=file_size,
                    cgroup=cgroup,
                    filter_here=filter_here,
                ),
            )
            span.set_attribute("process.pid", process.pid)
    finally:
        if fd is not None:
            os.close(fd)
    os.set_blocking(process.stdout.fileno(), False)
    return process


def _drain(
    process: subprocess.Popen,
    cap: int,
    deadline: float,
    watch: _QuotaWatch,
    stop: Stop | None = None,
    on_output: Callable[[bytes], None] | None = None,
) -> _Drained:
    """Reads the process's output until every writer is gone, the shell is done, more
    than cap bytes came, the deadline passed, the workspace went over its quota, or the
    call was stopped (SIGTERM to its process group first; after
    TASK_CANCEL_GRACE_SECONDS, or when forced, the caller kills what is left)."""
    drained = _Drained(cap)
    while True:
        if stop is not None and stop.requested.is_set():
            if not drained.cancelled:
                drained.cancelled = True
                drained.kill_at = time.monotonic() + settings.TASK_CANCEL_GRACE_SECONDS
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGTERM)
            if stop.forced.is_set() or time.monotonic() > drained.kill_at:
                return drained
        chunk = process.stdout.read(65536)
        if chunk:
            if on_output is not None:
                on_output(chunk)
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
        if watch.exceeded():
            drained.over_quota = True
            return drained
        time.sleep(0.01)


def _kill_stragglers(process: subprocess.Popen, workspace: Workspace, cgroup) -> None:
    """Kills the shell's process group, everything in the call's cgroup, and whatever of
    the session's uid got out of both."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    if cgroup is not None:
        cgroup.kill()
    # Under bubblewrap the PID namespace dies with it (give the kernel a moment);
    # without, children that left the process group are found by their uid.
    if workspace.uid is not None:
        if bwrap_works():
            _wait_until_gone(workspace.uid)
        else:
            _kill_all_of(workspace.uid)
    process.stdout.close()
    process.wait()


def _call_cgroup() -> cgroups.CallCgroup | None:
    found = cgroups.backend()
    if found is None:
        return None
    limits = cgroups.Limits(
        memory=settings.TOOL_BASH_MEMORY_BYTES,
        pids=settings.TOOL_BASH_MAX_PROCESSES,
        cpu=settings.TOOL_BASH_CPU_QUOTA,
    )
    try:
        return found.create(limits)
    except cgroups.CgroupError:
        # The host stopped letting us (a full hierarchy, a changed delegation): this
        # call still has its rlimits; the log says why it has no more.
        log.exception("bash_cgroup_unavailable")
        return None


def neutral_paths(text: str, workspace: Workspace) -> str:
    """text with the workspace's host path shown as /workspace."""
    for path in {str(workspace.root), os.path.realpath(workspace.root)}:
        text = text.replace(path, WORKSPACE)
    return text


def run_bash(
    workspace: Workspace,
    command: str,
    timeout: float,
    *,
    stop: Stop | None = None,
    on_output: Callable[[bytes], None] | None = None,
) -> BashResult:
    """Runs command in the workspace; output (stdout+stderr) capped, everything it
    started killed at the timeout and again when the shell exits (no stragglers).

    Files may grow as far as the workspace's quota leaves room (RLIMIT_FSIZE, at most
    TOOL_BASH_FILE_SIZE_BYTES): none when it is full, though removing still works. The
    workspace is measured while the call runs, and the call stopped when over. Traced
    as `sandbox.run`, the spawn as `sandbox.spawn` within it."""
    with tracing.span("sandbox.run", {"sandbox.timeout_seconds": timeout}) as span:
        result = _run_bash(workspace, command, timeout, stop=stop, on_output=on_output)
        span.set_attributes(
            {
                "sandbox.timed_out": result.timed_out,
                "sandbox.cancelled": result.cancelled,
                "sandbox.output_truncated": result.truncated,
                "sandbox.over_quota": result.stopped_over_quota or result.over_quota,
            }
        )
        if result.exit_code is not None:  # none when it was stopped
            span.set_attribute("process.exit_code", result.exit_code)
    return result


def _run_bash(
    workspace: Workspace,
    command: str,
    timeout: float,
    *,
    stop: Stop | None,
    on_output: Callable[[bytes], None] | None,
) -> BashResult:
    quota = settings.TOOL_WORKSPACE_MAX_BYTES
    used = _usage(workspace)
    room = 0 if used is None else max(0, quota - used)
    watch = _QuotaWatch(workspace, at_start=used)
    cgroup = _call_cgroup()
    try:
        process = _start(
            workspace,
            command,
            timeout,
            min(settings.TOOL_BASH_FILE_SIZE_BYTES, room),
            cgroup,
        )
        try:
            drained = _drain(
                process,
                settings.TOOL_OUTPUT_MAX_BYTES,
                time.monotonic() + timeout,
                watch,
                stop,
                on_output,
            )
        finally:
            _kill_stragglers(process, workspace, cgroup)
    finally:
        if cgroup is not None:
            cgroup.kill()
            cgroup.remove()
    stopped = drained.timed_out or drained.over_quota or drained.cancelled
    return BashResult(
        cancelled=drained.cancelled,
        exit_code=None if stopped else process.returncode,
        output=neutral_paths(drained.text(), workspace),
        truncated=drained.truncated,
        timed_out=drained.timed_out,
        workspace_bytes=_usage(workspace),
        stopped_over_quota=drained.over_quota,
    )
