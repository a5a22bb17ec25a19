"""The system calls bash may not make, compiled to a seccomp BPF program.

The list is the one place that says what is refused. Its source is Docker's default
profile: the table "Significant syscalls blocked by the default profile" of Docker's
seccomp documentation (docs.docker.com/engine/security/seccomp/), and, for calls added
to the kernel since, what moby's profiles/seccomp/default.json grants only with
CAP_SYS_ADMIN (bash never has it): the new mount API, io_uring, fanotify. Docker's
profile is an allowlist; this is the matching denylist, so a program that works in a
default Docker container works here.

Refused calls fail with EPERM, as under Docker. Not refused: personality(), which Docker
allows for five values only; libseccomp cannot say "none of these" on one argument, and
Docker's own table calls it not dangerous in itself. clone is refused only with a namespace
flag (Docker's mask); clone3 passes its flags in memory a filter cannot read, so it fails
with ENOSYS, which makes the C library fall back to clone (Docker does the same). Calls
from another ABI (32-bit x86, x32) kill the process: the filter is for the native one.

Without bubblewrap (TOOL_ISOLATION=rlimits) bash sees the host's file system, and with
it the host's Unix sockets (the database's, /run/...): a network namespace does not stop
those. There the filter also refuses to make AF_UNIX sockets (socket() with EACCES), and
socketpair() of the datagram kind, whose sockets may be sent from or re-connected to any
path; a stream pair (asyncio's wake-up pipe, multiprocessing) is connected for good and
still works. Under bubblewrap no host socket is in view, and these are allowed.

The filter is compiled once per process with libseccomp (ctypes, no binding needed) and
handed to bubblewrap (--seccomp FD), or loaded before exec without it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os

REFUSED = (
    # Docker's table of significant blocked calls.
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "get_kernel_syms",
    "get_mempolicy",
    "init_module",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "mount",
    "move_pages",
    "nfsservctl",
    "open_by_handle_at",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "set_mempolicy",
    "setns",
    "settimeofday",
    "stime",
    "swapon",
    "swapoff",
    "sysfs",
    "_sysctl",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
    # moby's default.json: only with CAP_SYS_ADMIN (or not at all, io_uring).
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "quotactl_fd",
    "fanotify_init",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "syslog",
    "vhangup",
)
# clone with any of these flags (Docker's 0x7E020000): NEWNS, NEWCGROUP, NEWUTS, NEWIPC,
# NEWUSER, NEWPID, NEWNET.
CLONE_NAMESPACE_FLAGS = (
    0x00020000,
    0x02000000,
    0x04000000,
    0x08000000,
    0x10000000,
    0x20000000,
    0x40000000,
)

# Unix sockets, for a process that sees the host's file system: socket(AF_UNIX, ...) and
# socketpair(AF_UNIX, SOCK_DGRAM or SOCK_RAW, which is a datagram one for AF_UNIX).
AF_UNIX = 1
SOCK_TYPE_MASK = 0xF
UNIX_DATAGRAM_TYPES = (2, 3)

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_MASKED_EQ = 7
# The kernel reads int arguments from the low 32 bits: compare only those, so that set
# high bits cannot slip past the rule.
INT_MASK = 0xFFFFFFFF
NR_SCMP_ERROR = -1


def _errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)  # SCMP_ACT_ERRNO(code)


class _ArgCmp(ctypes.Structure):
    _fields_ = [  # noqa: RUF012 (ctypes' own declaration)
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class SeccompUnavailable(RuntimeError):
    """libseccomp is missing or refused to build the filter."""


def _library() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise SeccompUnavailable(f"libseccomp cannot be loaded ({exc}).") from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


@functools.cache
def program(*, unix_sockets: bool = True) -> bytes:
    """The filter as raw BPF (struct sock_filter[]), what bwrap --seccomp reads;
    unix_sockets=False also refuses Unix sockets (see the module's docstring)."""
    lib = _library()
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise SeccompUnavailable("seccomp_init failed.")
    try:

        def add(action: int, name: str, *conditions: tuple[int, int, int, int]) -> None:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number == NR_SCMP_ERROR:
                return  # not a call libseccomp knows of: nothing to refuse
            array = (_ArgCmp * len(conditions))(*(_ArgCmp(*c) for c in conditions))
            result = lib.seccomp_rule_add_array(ctx, action, number, len(conditions), array)
            if result < 0:
                raise SeccompUnavailable(f"libseccomp refused the rule for {name} ({result}).")

        for name in REFUSED:
            add(_errno(errno.EPERM), name)
        for flag in CLONE_NAMESPACE_FLAGS:
            add(_errno(errno.EPERM), "clone", (0, SCMP_CMP_MASKED_EQ, flag, flag))
        add(_errno(errno.ENOSYS), "clone3")
        if not unix_sockets:
            add(_errno(errno.EACCES), "socket", (0, SCMP_CMP_MASKED_EQ, INT_MASK, AF_UNIX))
            for kind in UNIX_DATAGRAM_TYPES:
                add(
                    _errno(errno.EACCES),
                    "socketpair",
                    (0, SCMP_CMP_MASKED_EQ, INT_MASK, AF_UNIX),
                    (1, SCMP_CMP_MASKED_EQ, SOCK_TYPE_MASK, kind),
                )
        read_fd, write_fd = os.pipe()
        try:
            # A filter is a few hundred instructions of 8 bytes: far below a pipe's buffer.
            if lib.seccomp_export_bpf(ctx, write_fd) < 0:
                raise SeccompUnavailable("seccomp_export_bpf failed.")
            os.close(write_fd)
            write_fd = -1
            chunks = []
            while chunk := os.read(read_fd, 65536):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(read_fd)
            if write_fd >= 0:
                os.close(write_fd)
    finally:
        lib.seccomp_release(ctx)


def available() -> bool:
    """Whether the filter can be built here."""
    try:
        program()
    except SeccompUnavailable:
        return False
    return True


def program_fd() -> int:
    """A fresh file descriptor holding the filter, for bwrap --seccomp (which reads it to
    the end); the caller closes it."""
    data = program()
    fd = os.memfd_create("vp-seccomp", os.MFD_CLOEXEC)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]  # noqa: RUF012


PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2


def loader(*, unix_sockets: bool = True):
    """A function that loads the filter into the calling process (for a child between
    fork and exec, without bubblewrap). Everything is prepared here, in the parent."""
    data = program(unix_sockets=unix_sockets)
    buffer = ctypes.create_string_buffer(data, len(data))
    fprog = _SockFprog(len(data) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)

    keep = (buffer, fprog)  # alive as long as the function

    def load() -> None:
        # no_new_privs: required to install a filter without CAP_SYS_ADMIN, and a setuid
        # program can then gain nothing either.
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            os._exit(126)
        if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(keep[1]), 0, 0) != 0:
            os._exit(126)

    return load
