"""One bash call is bounded as a whole (memory, processes, CPU, /tmp, workspace), cannot
gain privileges (user namespaces, seccomp), and sees and shows nothing of the host it
does not need."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from tools_app import cgroups, sandbox, seccomp
from tools_app.builtin import BashTool, WriteFileTool
from tools_app.sandbox import isolation
from tools_app.workspace import MAX_WALK_DEPTH, Workspace

MIB = 2**20


@pytest.fixture(params=["auto", "rlimits"])
def workspace(request, settings):
    """Every test runs under bubblewrap (where it works) and without it."""
    settings.TOOL_ISOLATION = request.param
    return Workspace.for_session("sess_limits_" + secrets.token_hex(4))


@pytest.fixture
def under_bwrap(workspace, settings):
    if settings.TOOL_ISOLATION == "rlimits":
        pytest.skip("this run of the suite is the one without bubblewrap")
    if isolation() != "bwrap":
        pytest.skip("bubblewrap does not work on this host")


@pytest.fixture
def with_cgroups():
    if cgroups.backend() is None:
        pytest.skip("no writable cgroup on this host: only per-process rlimits apply")


def bash(workspace, command: str, timeout: int = 30):
    return asyncio.run(BashTool(workspace).execute({"command": command, "timeout": timeout}))


def call_cgroups(pid: int | None = None) -> list[Path]:
    """The call cgroups of process pid (this one by default)."""
    found = cgroups.backend()
    return [
        entry
        for parent in found.parents.values()
        for entry in parent.iterdir()
        if entry.name.startswith(f"{cgroups.PREFIX}{pid or os.getpid()}-")
    ]


HOLD = 'python3 -c \'import time; x = b"1" * (60 << 20); time.sleep(2); print("done")\''


def test_one_call_cannot_take_more_memory_than_its_limit_across_processes(
    workspace, settings, with_cgroups
):
    settings.TOOL_BASH_MEMORY_BYTES = 128 * MIB

    alone = bash(workspace, HOLD)
    together = bash(workspace, f"for i in 1 2 3; do {HOLD} & done; wait")

    # Each process alone is within the limit (as per-process rlimits alone would allow
    # all three); together they are not, and the kernel stops some.
    assert alone.success and alone.output.splitlines() == ["done"]
    assert together.output.splitlines().count("done") < 3
    assert "Killed" in together.output


def test_one_call_cannot_start_more_processes_than_its_limit(workspace, settings):
    if workspace.uid is None and cgroups.backend() is None:
        pytest.skip("neither a cgroup nor a uid of its own to count processes by")
    settings.TOOL_BASH_MAX_PROCESSES = 16

    result = bash(
        workspace,
        "python3 -c '\n"
        "import os, time\n"
        "n = 0\n"
        "try:\n"
        "    while n < 100:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30); os._exit(0)\n"
        "        n += 1\n"
        "except OSError:\n"
        "    pass\n"
        'print("forked", n)\'',
        timeout=20,
    )

    forked = int(re.search(r"forked (\d+)", result.output).group(1))
    assert 4 <= forked < 16


def test_a_call_gets_no_more_cpu_than_its_quota(workspace, settings, with_cgroups):
    settings.TOOL_BASH_CPU_QUOTA = 0.5
    spin = "timeout 2 sh -c 'while :; do :; done'"

    result = bash(workspace, f"{spin} & {spin} & wait; times")

    # times: the shell's own user/sys, then its children's: two spinning processes for
    # 2 s on two cores would take 4 s; half a core allows about 1 s.
    children = re.findall(r"(\d+)m([\d.]+)s", result.output.splitlines()[-1])
    used = sum(int(minutes) * 60 + float(seconds) for minutes, seconds in children)
    assert 0.3 < used < 1.6


def test_a_calls_cgroup_is_removed_after_it_and_nothing_of_it_is_left(workspace, with_cgroups):
    result = bash(workspace, "sleep 100 & setsid sleep 101 & cat /proc/self/cgroup")

    assert result.success
    assert call_cgroups() == []


def test_the_cgroups_of_a_worker_that_died_mid_call_are_removed(workspace, with_cgroups):
    child = subprocess.Popen(["true"])
    child.wait()
    for parent in cgroups.backend().parents.values():
        (parent / f"{cgroups.PREFIX}{child.pid}-1").mkdir()

    result = bash(workspace, "echo ran")

    assert result.success
    assert call_cgroups(child.pid) == []


def test_a_worker_without_root_still_limits_processes(settings, monkeypatch):
    """RLIMIT_NPROC counts every task of the real uid: a worker that cannot give bash a
    uid of its own gives it room for TOOL_BASH_MAX_PROCESSES more than it runs."""
    settings.TOOL_BASH_MAX_PROCESSES = 16
    monkeypatch.setattr(sandbox, "_is_root", lambda: False)
    workspace = Workspace(root=Path("/"), uid=None)

    shown = subprocess.run(
        ["/bin/bash", "-c", "ulimit -u"],
        preexec_fn=sandbox._limit(workspace, 10, network=True),
        capture_output=True,
        text=True,
        check=True,
    )

    already = sandbox._tasks_of(os.getuid())
    assert abs(int(shown.stdout) - (already + 16)) < 10


def test_without_a_writable_cgroup_bash_keeps_its_per_process_limits(
    workspace, settings, monkeypatch
):
    monkeypatch.setattr(cgroups, "backend", lambda: None)

    result = bash(workspace, "ulimit -v; ulimit -f; echo ran")

    memory_kib = settings.TOOL_BASH_MEMORY_BYTES // 1024
    assert result.success
    assert f"{memory_kib}\n" in result.output and "ran" in result.output


def test_tmp_is_sized(workspace, settings, under_bwrap):
    settings.TOOL_BASH_TMP_BYTES = 4 * MIB

    result = bash(
        workspace,
        "df -k /tmp /dev/shm | tail -n +2 | awk '{print $2}'; "
        "head -c 1M /dev/zero > /tmp/small && echo small=ok; "
        "head -c 8M /dev/zero > /tmp/big; echo big=$?",
    )

    assert result.output.splitlines()[:2] == ["4096", "4096"]
    assert "small=ok" in result.output
    assert "No space left on device" in result.output and "big=1" in result.output


def test_bash_cannot_make_a_user_namespace(workspace):
    result = bash(
        workspace,
        "unshare -Urn sh -c 'grep CapEff /proc/self/status'; echo rc=$?; "
        "unshare -U true; echo user=$?",
    )

    assert "000001ffffffffff" not in result.output
    assert "rc=0" not in result.output and "user=0" not in result.output


def test_a_seccomp_filter_is_active(workspace):
    result = bash(
        workspace,
        "grep Seccomp: /proc/self/status; python3 -c '\n"
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        'print("ptrace", libc.ptrace(0, 0, 0, 0), ctypes.get_errno())\n'
        'print("keyctl", libc.syscall(250, 0, 0, 0, 0), ctypes.get_errno())\'',
    )

    assert "Seccomp:\t2" in result.output
    assert "ptrace -1 1" in result.output  # EPERM, even for PTRACE_TRACEME
    assert "keyctl -1 1" in result.output


def test_ordinary_commands_still_work_under_the_filter(workspace):
    result = bash(
        workspace,
        "printf 'b\\na\\n' > f.txt; ls; cat f.txt | sort | grep a; (cd . && echo sub); "
        "python3 -c 'import subprocess, threading; t = threading.Thread(target=print, "
        'args=("thread",)); t.start(); t.join(); subprocess.run(["echo", "child"])\'; '
        "find . -name '*.txt'; sed s/a/z/ f.txt | awk 'NR==2'",
    )

    assert result.success, result.output
    # (the thread's print and the child's may come in either order)
    assert sorted(result.output.split()) == sorted(
        ["f.txt", "a", "sub", "thread", "child", "./f.txt", "z"]
    )


@pytest.fixture
def host_sockets():
    """A listening stream socket and a datagram socket on the host, as the database's
    would be: in a directory anyone may pass, each writable by all, so that only the
    sandbox stands between bash and them."""
    directory = Path(tempfile.mkdtemp(prefix="vp-host-sockets-"))
    directory.chmod(0o755)
    stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stream.bind(str(directory / "stream.sock"))
    stream.listen(8)
    datagram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    datagram.bind(str(directory / "datagram.sock"))
    datagram.setblocking(False)
    for name in ("stream.sock", "datagram.sock"):
        (directory / name).chmod(0o777)
    yield directory, datagram
    stream.close()
    datagram.close()
    shutil.rmtree(directory)


REACH_SOCKETS = """python3 -c '
import socket, sys
where = sys.argv[1]
def attempt(name, reach):
    try:
        reach()
        print(name, "reached")
    except OSError as exc:
        print(name, "refused", exc.errno)
def connect():
    socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).connect(where + "/stream.sock")
def send():
    # a datagram pair is connected, but may still send to (or re-connect to) any path
    one, _ = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    one.sendto(b"hello", where + "/datagram.sock")
attempt("stream", connect)
attempt("datagram", send)
' """


def test_bash_cannot_reach_the_hosts_unix_sockets(workspace, host_sockets):
    directory, datagram = host_sockets

    result = bash(workspace, REACH_SOCKETS + str(directory))

    assert "stream refused" in result.output, result.output
    assert "datagram refused" in result.output, result.output
    with pytest.raises(BlockingIOError):
        datagram.recv(64)


def test_what_uses_no_host_socket_still_works_beside_the_socket_rules(workspace):
    result = bash(
        workspace,
        "ls -ld . | wc -l; echo piped | tr a-z A-Z; python3 -c 'print(1)'; "
        "python3 -c 'import asyncio; asyncio.run(asyncio.sleep(0)); print(\"loop\")'; "
        'python3 -c \'import socket; a, b = socket.socketpair(); a.send(b"pair"); '
        "print(b.recv(4).decode())'",
    )

    assert result.success, result.output
    assert result.output.split() == ["1", "PIPED", "1", "loop", "pair"]


def test_bash_sees_only_what_it_needs_of_etc_and_not_the_hosts_command_line(workspace, under_bwrap):
    host_cmdline = Path("/proc/cmdline").read_text().strip()

    result = bash(workspace, "ls /etc; cat /proc/cmdline; id; hostname")

    listed = result.output.split()
    assert "passwd" in listed and "ld.so.cache" in listed
    assert not {"shadow", "gshadow", "sudoers", "ssh", "machine-id", "os-release"} & set(listed)
    assert host_cmdline[:40] not in result.output
    assert "uid=1000(sandbox)" in result.output and "\nsandbox\n" in result.output


def test_bash_output_never_shows_the_host_path(workspace):
    result = bash(
        workspace,
        "mkdir -p d; pwd; echo $HOME; realpath d; ls -d $PWD/d; "
        "python3 -c 'import os; print(os.getcwd())'; cd d && pwd",
    )

    assert str(workspace.root) not in result.output
    assert result.output.split() == ["/workspace"] * 2 + ["/workspace/d"] * 2 + [
        "/workspace",
        "/workspace/d",
    ]


def test_bash_past_the_workspace_quota_is_reported_and_files_cannot_grow_until_some_go(
    workspace, settings
):
    settings.TOOL_WORKSPACE_MAX_BYTES = 2 * MIB
    fill = "; ".join(f"head -c 900K /dev/zero > {name}" for name in "abc")

    filled = bash(workspace, fill)
    refused = bash(workspace, "echo more > d; echo unreachable")
    grown = (workspace.root / "d").exists() and (workspace.root / "d").stat().st_size
    written = asyncio.run(WriteFileTool(workspace).execute({"file_path": "e", "content": "x"}))
    freed = bash(workspace, "rm a b")
    again = bash(workspace, "echo more > d && cat d")

    assert filled.error["type"] == "workspace_full" and "over its 2 MiB quota" in filled.output
    assert refused.error["type"] == "workspace_full" and "unreachable" not in refused.output
    assert not grown
    assert written.error["type"] == "workspace_full"
    # A call that starts over the quota can still remove files; the next may write.
    assert freed.success
    assert again.success and again.output == "more\n"


def test_a_call_that_keeps_filling_the_workspace_is_stopped(workspace, settings):
    settings.TOOL_WORKSPACE_MAX_BYTES = 4 * MIB

    result = bash(
        workspace, "for i in $(seq 100); do head -c 512K /dev/zero > f$i; sleep 0.05; done"
    )

    assert result.error["type"] == "workspace_full" and "stopped" in result.output
    assert len(list(workspace.root.iterdir())) < 30


def test_a_workspace_too_deep_to_measure_takes_no_writes_but_can_be_cleaned(workspace):
    deep = workspace.root
    for _ in range(MAX_WALK_DEPTH + 20):  # not mkdir(parents=True): it recurses per level
        deep = deep / "d"
        deep.mkdir()
        if workspace.uid is not None:  # as bash would have made it
            os.chown(deep, workspace.uid, workspace.uid)

    written = asyncio.run(WriteFileTool(workspace).execute({"file_path": "a", "content": "x"}))
    cleaned = bash(workspace, "rm -rf d && echo gone")
    again = asyncio.run(WriteFileTool(workspace).execute({"file_path": "a", "content": "x"}))

    assert written.error["type"] == "workspace_full"
    assert cleaned.success and cleaned.output == "gone\n"
    assert again.success


def test_v2_call_cgroups_are_joined_before_exec_and_removed_after(workspace, settings, monkeypatch):
    """The cgroup v2 path on a real cgroup2 hierarchy. On a hybrid host like this one
    it has no controllers (they are bound to v1), so no limit is written here; the
    limits themselves are the next test's business."""
    mount = next((m for m in cgroups._mounts() if m[2] == "cgroup2"), None)
    if mount is None or not Path(mount[0], "cgroup.procs").exists():
        pytest.skip("no cgroup2 hierarchy here")
    parent = Path(mount[0]) / f"vp-test-{secrets.token_hex(4)}"
    try:
        parent.mkdir()
    except OSError:
        pytest.skip("the cgroup2 hierarchy is not writable here")
    settings.TOOL_ISOLATION = "rlimits"  # no cgroup namespace: the path shows
    monkeypatch.setattr(cgroups, "backend", lambda: cgroups.Backend(2, {"": parent}, ()))
    try:
        result = bash(workspace, "sleep 100 & grep '^0::' /proc/self/cgroup")
        left = [entry.name for entry in parent.iterdir() if entry.is_dir()]
    finally:
        parent.rmdir()

    assert re.search(rf"^0::/{parent.name}/vp-bash-\d+-\d+$", result.output, re.M)
    assert left == []


def test_a_v2_call_cgroup_is_given_the_whole_calls_limits(tmp_path):
    """What a v2 call cgroup is given (cgroupfs files stand in as plain files)."""
    for name in ("memory.max", "memory.swap.max", "pids.max", "cpu.max"):
        (tmp_path / name).write_text("")

    cgroups._v2_limits(tmp_path, cgroups.Limits(128 * MIB, 16, 0.5), ("memory", "pids", "cpu"))

    written = {name: (tmp_path / name).read_text() for name in sorted(tmp_path.iterdir())}
    assert {path.name: text for path, text in written.items()} == {
        "cpu.max": "50000 100000",
        "memory.max": str(128 * MIB),
        "memory.swap.max": "0",
        "pids.max": "16",
    }


def test_a_delegated_v2_parent_is_found_and_its_controllers_enabled(
    tmp_path, settings, monkeypatch
):
    """The worker lives in a leaf of its delegated subtree; calls go beside it."""
    settings.TOOL_BASH_CGROUP_PARENT = ""
    delegated = tmp_path / "cg" / "worker.service"
    (delegated / "worker").mkdir(parents=True)
    (delegated / "cgroup.controllers").write_text("cpu io memory pids\n")
    (delegated / "cgroup.subtree_control").write_text("\n")
    monkeypatch.setattr(
        cgroups, "_mounts", lambda: [(str(tmp_path / "cg"), "/", "cgroup2", {"rw"})]
    )
    monkeypatch.setattr(cgroups, "_own_cgroups", lambda: {"": "/worker.service/worker"})
    cgroups.backend.cache_clear()
    try:
        found = cgroups.backend()
    finally:
        cgroups.backend.cache_clear()

    assert found == cgroups.Backend(2, {"": delegated}, ("memory", "pids", "cpu"))
    assert (delegated / "cgroup.subtree_control").read_text().startswith("+cpu +memory +pids")


def test_the_start_up_line_says_which_limits_are_active(monkeypatch):
    from voiceplatform.startup import describe_backends

    expected = "cgroup v" if cgroups.backend() else "rlimits"
    with_host = describe_backends()["tool_limits"]
    monkeypatch.setattr(cgroups, "backend", lambda: None)
    without = describe_backends()["tool_limits"]

    assert with_host.startswith(expected)
    assert without.startswith("rlimits per process (no writable cgroup)")
    assert "memory 512 MiB" in without and "workspace 256 MiB" in without


def test_the_start_up_line_says_whether_rlimits_mode_keeps_bash_from_host_sockets(
    settings, monkeypatch
):
    settings.TOOL_ISOLATION = "rlimits"
    with_filter = sandbox.describe_limits()
    monkeypatch.setattr(seccomp, "available", lambda: False)
    without_filter = sandbox.describe_limits()

    assert with_filter.endswith("; host Unix sockets refused")
    assert "seccomp off" in without_filter
    assert without_filter.endswith("; host Unix sockets REACHABLE (no libseccomp)")
