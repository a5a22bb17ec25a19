"""One cgroup per bash call: memory, processes and CPU bounded for the whole call,
whatever it forks, and one place to find everything it started.

Where the host lets us:
- cgroup v2: a child per call under a delegated cgroup, by default the parent of the
  worker's own (the usual shape of a delegated subtree: the worker in one leaf, its
  parent writable with memory and pids in cgroup.subtree_control), or the cgroup named
  by TOOL_BASH_CGROUP_PARENT. Limits: memory.max (and memory.swap.max 0), pids.max,
  cpu.max.
- cgroup v1: a child per call in the memory, pids and cpu hierarchies, under the
  worker's own cgroup in each (or TOOL_BASH_CGROUP_PARENT). Limits:
  memory.limit_in_bytes (and memory.memsw.limit_in_bytes), pids.max, cpu.cfs_quota_us.

The child process joins the call's cgroup between fork and exec (it writes its own pid to
cgroup.procs), so nothing it runs starts outside. After the call everything left in it is
killed and the cgroup removed. Where neither is writable, bash keeps the per-process
rlimits only (tools_app.sandbox), and the start-up line says so.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import structlog
from django.conf import settings

log = structlog.get_logger(__name__)

PREFIX = "vp-bash-"
CPU_PERIOD_US = 100_000
V1_CONTROLLERS = ("memory", "pids", "cpu")
_counter = itertools.count(1)


class CgroupError(OSError):
    """The call's cgroup could not be made or given its limits."""


@dataclass(frozen=True)
class Limits:
    memory: int  # bytes, the whole call
    pids: int  # tasks (processes and threads), the whole call
    cpu: float  # cores; 0 for none


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(mount point, root inside the hierarchy, type, super options) of cgroup mounts."""
    found = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            before, _, after = line.partition(" - ")
            fields, tail = before.split(), after.split()
            if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
                options = set(tail[2].split(","))
                found.append((fields[4].replace("\\040", " "), fields[3], tail[0], options))
    return found


def _own_cgroups() -> dict[str, str]:
    """Our cgroup path per v1 controller, and under "" the v2 one."""
    own = {}
    with open("/proc/self/cgroup") as cgroup:
        for line in cgroup:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                own[controller] = path
    return own


def _inside(mount_point: str, mount_root: str, path: str) -> Path | None:
    """Where hierarchy path path is under a mount of the hierarchy's mount_root."""
    relative = os.path.relpath(path, mount_root)
    if relative.startswith(".."):
        return None
    return Path(os.path.normpath(os.path.join(mount_point, relative)))


@dataclass(frozen=True)
class Backend:
    """Where this process makes its calls' cgroups: version 2 (one parent) or 1 (a parent
    per controller), and the controllers it can limit."""

    version: int
    parents: dict[str, Path]  # controller (or "" for v2) -> parent directory
    controllers: tuple[str, ...]

    def describe(self) -> str:
        return f"cgroup v{self.version} per call ({', '.join(self.controllers)})"

    def create(self, limits: Limits) -> CallCgroup:
        _remove_stale(self)
        name = f"{PREFIX}{os.getpid()}-{next(_counter)}"
        made: list[Path] = []
        try:
            if self.version == 2:
                directory = self.parents[""] / name
                directory.mkdir()
                made.append(directory)
                directory.chmod(0o755)  # bash may read its own limits
                _v2_limits(directory, limits, self.controllers)
            else:
                for controller, parent in self.parents.items():
                    directory = parent / name
                    directory.mkdir()
                    made.append(directory)
                    directory.chmod(0o755)  # bash may read its own limits
                    _v1_limits(controller, directory, limits)
        except OSError as exc:
            CallCgroup(tuple(made), self.version).remove()
            raise CgroupError(exc.errno, f"the call's cgroup: {exc}") from exc
        return CallCgroup(tuple(made), self.version)


def _v2_limits(directory: Path, limits: Limits, controllers: tuple[str, ...]) -> None:
    if "memory" in controllers:
        _write(directory / "memory.max", str(limits.memory))
        if (directory / "memory.swap.max").exists():
            _write(directory / "memory.swap.max", "0")  # no spilling past the limit
    if "pids" in controllers:
        _write(directory / "pids.max", str(limits.pids))
    if "cpu" in controllers and limits.cpu > 0:
        _write(directory / "cpu.max", f"{int(limits.cpu * CPU_PERIOD_US)} {CPU_PERIOD_US}")


def _v1_limits(controller: str, directory: Path, limits: Limits) -> None:
    if controller == "memory":
        _write(directory / "memory.limit_in_bytes", str(limits.memory))
        # With swap accounting, the same bound for memory and swap together: no spilling.
        with contextlib.suppress(FileNotFoundError):
            _write(directory / "memory.memsw.limit_in_bytes", str(limits.memory))
    elif controller == "pids":
        _write(directory / "pids.max", str(limits.pids))
    elif controller == "cpu" and limits.cpu > 0:
        _write(directory / "cpu.cfs_period_us", str(CPU_PERIOD_US))
        _write(directory / "cpu.cfs_quota_us", str(int(limits.cpu * CPU_PERIOD_US)))


@dataclass(frozen=True)
class CallCgroup:
    """One call's cgroup (v2), or its cgroups in each v1 hierarchy."""

    directories: tuple[Path, ...]
    version: int

    def joiner(self):
        """A function for the child between fork and exec: moves it into the call's
        cgroups (prepared here, so the child only opens and writes)."""
        targets = [os.fsencode(directory / "cgroup.procs") for directory in self.directories]

        def join() -> None:
            pid = str(os.getpid()).encode()
            for target in targets:
                fd = os.open(target, os.O_WRONLY)
                try:
                    os.write(fd, pid)
                finally:
                    os.close(fd)

        return join

    def pids(self) -> list[int]:
        pids: set[int] = set()
        for directory in self.directories:
            with contextlib.suppress(OSError):
                pids |= {int(pid) for pid in (directory / "cgroup.procs").read_text().split()}
        return sorted(pids)

    def kill(self, seconds: float = 2.0) -> None:
        """Kills every process in the call's cgroup, forks racing the kill included."""
        if self.version == 2 and self.directories:
            with contextlib.suppress(OSError):
                _write(self.directories[0] / "cgroup.kill", "1")
        deadline = time.monotonic() + seconds
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def remove(self, seconds: float = 2.0) -> None:
        """Removes the cgroups (once their processes are gone: dying ones take a moment)."""
        deadline = time.monotonic() + seconds
        for directory in self.directories:
            while True:
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        log.warning("cgroup_not_removed", cgroup=str(directory), error=str(exc))
                        break
                    time.sleep(0.01)


def _v2_backend(mounts, own) -> Backend | None:
    mount = next((m for m in mounts if m[2] == "cgroup2"), None)
    if mount is None or "" not in own:
        return None
    configured = settings.TOOL_BASH_CGROUP_PARENT
    if configured:
        parent = _inside(mount[0], mount[1], configured)
    else:
        mine = _inside(mount[0], mount[1], own[""])
        parent = mine.parent if mine is not None and mine != Path(mount[0]) else None
    if parent is None or not os.access(parent, os.W_OK):
        return None
    try:
        available = set((parent / "cgroup.controllers").read_text().split())
        enabled = set((parent / "cgroup.subtree_control").read_text().split())
        wanted = {"memory", "pids", "cpu"} & available
        if {"memory", "pids"} - available:
            return None
        if wanted - enabled:
            _write(
                parent / "cgroup.subtree_control",
                " ".join(f"+{controller}" for controller in sorted(wanted - enabled)),
            )
    except OSError:
        return None  # e.g. the parent holds processes itself: no controllers for children
    return Backend(2, {"": parent}, tuple(c for c in ("memory", "pids", "cpu") if c in wanted))


def _v1_backend(mounts, own) -> Backend | None:
    parents: dict[str, Path] = {}
    for controller in V1_CONTROLLERS:
        mount = next((m for m in mounts if m[2] == "cgroup" and controller in m[3]), None)
        if mount is None or controller not in own:
            continue
        path = settings.TOOL_BASH_CGROUP_PARENT or own[controller]
        parent = _inside(mount[0], mount[1], path)
        if parent is None:
            continue
        with contextlib.suppress(OSError):
            parent.mkdir(parents=True, exist_ok=True)
        if os.access(parent, os.W_OK):
            parents[controller] = parent
    if "memory" not in parents or "pids" not in parents:
        return None
    return Backend(1, parents, tuple(parents))


def _remove_stale(backend: Backend) -> None:
    """Removes the call cgroups of worker processes that died mid-call (what ran in
    them died with the worker: PR_SET_PDEATHSIG)."""
    for parent in backend.parents.values():
        with contextlib.suppress(OSError):
            for entry in parent.iterdir():
                if not entry.name.startswith(PREFIX):
                    continue
                pid = entry.name[len(PREFIX) :].partition("-")[0]
                if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                    with contextlib.suppress(OSError):
                        entry.rmdir()


@functools.cache
def backend() -> Backend | None:
    """This process's way to make call cgroups, or None where the host allows none
    (looked at once per process)."""
    try:
        mounts, own = _mounts(), _own_cgroups()
    except OSError:
        return None
    return _v2_backend(mounts, own) or _v1_backend(mounts, own)


def describe() -> str:
    found = backend()
    return found.describe() if found else "rlimits per process (no writable cgroup)"
