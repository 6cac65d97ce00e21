"""The worker's lock-down: what a sandbox escape would still not reach.

RestrictedPython is the first wall.  This module builds the second one, in the
worker process, after everything it needs is imported: should a program get
out of the restricted language, it holds plain Python in a process that

* cannot open files: Landlock (Linux 5.13+) denies every filesystem access
  except reading the interpreter's own standard library (public code, for
  codecs imported on first use).  Where Landlock is missing, a mount
  namespace gives the process an empty, read-only root instead.  On a host
  that is not root the worker keeps the user's real uid, so this wall is what
  keeps the user's 0600 files, the state database and the kernel's secret
  out of reach;
* cannot make sockets (a seccomp filter refuses ``socket``, ``socketpair``
  and ``io_uring_setup``), so it cannot attach to the kernel's control socket
  (Landlock does not cover connecting to a unix socket by path) or reach the
  network even where no network namespace could be made, nor trace or read
  the memory of another process (``ptrace``, ``process_vm_readv``,
  ``pidfd_getfd``), the kernel's included, which shares its uid on a host
  that is not root; with Landlock ABI 4+ TCP is refused as well, and with
  ABI 6+ it cannot signal processes outside its sandbox nor reach abstract
  unix sockets;
* has rlimits on CPU, address space, file size (0), open files and processes
  (0), no core dumps, no-new-privileges, a private network namespace where the
  system allows one, and when started as root the uid ``nobody``.

:func:`isolate` reports what took; the host refuses to run untrusted code on a
worker with no file wall (``wall == "none"``) unless the operator opted in
(``[sandbox] allow_weak_isolation``).  Like the policy, this module is loaded
inside the worker by file path and imports only the standard library.
"""

from __future__ import annotations

import ctypes
import math
import os
import platform
import resource
import signal
import struct
import sys
import time
from typing import Any

NOBODY = 65534
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 0x4000, 1 << 18
MNT_DETACH = 2
WALLS = ("auto", "landlock", "mountns", "none")

# Landlock (include/uapi/linux/landlock.h); the syscall numbers are the same on every architecture.
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FS_ABI1 = (1 << 13) - 1  # execute .. make_sym: every right of ABI 1
FS_REFER, FS_TRUNCATE, FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1

# seccomp: (audit arch, syscalls refused with EACCES) per machine; others run without the filter.
# socket, socketpair, io_uring_setup (it can make sockets too), ptrace, process_vm_readv/writev,
# pidfd_getfd: no sockets, and no reaching into another process of the same uid (the kernel's).
_SECCOMP = {
    "x86_64": (0xC000003E, (41, 53, 425, 101, 310, 311, 438)),
    "aarch64": (0xC00000B7, (198, 199, 425, 117, 270, 271, 438)),
}
_X32_BIT = 0x40000000


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def landlock_abi(libc: Any = None) -> int:
    """The kernel's Landlock ABI version, 0 where Landlock is missing or disabled."""
    libc = libc or _libc()
    abi = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
                       ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
    return max(int(abi), 0)


def _fs_rights(abi: int) -> int:
    rights = FS_ABI1
    if abi >= 2:
        rights |= FS_REFER
    if abi >= 3:
        rights |= FS_TRUNCATE
    if abi >= 5:
        rights |= FS_IOCTL_DEV
    return rights


def landlock(libc: Any, abi: int, readable: list[str]) -> bool:
    """Deny every filesystem access but reading beneath ``readable``; from ABI 4 all TCP,
    from ABI 6 signals to and abstract sockets of processes outside.  Needs no-new-privs."""
    handled = _fs_rights(abi)
    attr = struct.pack("=QQQ", handled, NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0,
                       SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    buf = ctypes.create_string_buffer(attr, len(attr))
    fd = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, buf, ctypes.c_size_t(size), ctypes.c_uint32(0))
    if fd < 0:
        return False
    try:
        for path in readable:
            try:
                pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                rights = FS_READ_FILE | (FS_READ_DIR if os.path.isdir(path) else 0)
                rule = ctypes.create_string_buffer(struct.pack("=Qi", rights, pfd), 12)
                if libc.syscall(SYS_LANDLOCK_ADD_RULE, fd, LANDLOCK_RULE_PATH_BENEATH, rule, 0) != 0:
                    return False
            finally:
                os.close(pfd)
        return bool(libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, fd, 0) == 0)
    finally:
        os.close(fd)


def empty_root(libc: Any, root: bool) -> bool:
    """A private mount namespace whose root is an empty read-only tmpfs (with a user
    namespace when not root, and a network namespace either way).  Every path of the
    host is gone, the control socket and the state directory included."""
    if libc.unshare(CLONE_NEWNS | CLONE_NEWNET | (0 if root else CLONE_NEWUSER)) != 0:
        return False
    target = next((d for d in ("/tmp", "/mnt", "/var/tmp", os.path.dirname(os.path.abspath(__file__)))
                   if os.path.isdir(d)), None)
    if target is None or libc.mount(None, b"/", None, ctypes.c_ulong(MS_REC | MS_PRIVATE), None) != 0:
        return False
    flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
    if libc.mount(b"lmos-empty", target.encode(), b"tmpfs", ctypes.c_ulong(flags), b"size=4k,mode=0555") != 0:
        return False
    os.chdir(target)
    if libc.pivot_root(b".", b".") == 0:  # the old root is stacked on "." and detached at once
        if libc.umount2(b".", MNT_DETACH) != 0:
            return False
    elif libc.chroot(b".") != 0:
        return False
    os.chdir("/")
    if not root:  # the user namespace gave us every capability in it: give them back
        header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
        if libc.capset(header, (ctypes.c_uint32 * 6)()) != 0:
            return False
    return os.listdir("/") == []


def deny_syscalls(libc: Any) -> bool:
    """Install a seccomp filter: the syscalls of ``_SECCOMP`` fail with EACCES, and so does
    every syscall of a foreign ABI (i386 ``socketcall``, x32)."""
    machine = _SECCOMP.get(platform.machine())
    if machine is None:
        return False
    arch, denied = machine
    ld_w_abs, jeq_k, jge_k, ret_k = 0x20, 0x15, 0x35, 0x06
    allow, refuse = 0x7FFF0000, 0x00050000 | 13  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | EACCES
    n = len(denied)
    prog = [(ld_w_abs, 0, 0, 4), (jeq_k, 1, 0, arch), (ret_k, 0, 0, refuse), (ld_w_abs, 0, 0, 0),
            (jge_k, n + 1, 0, _X32_BIT)]
    prog += [(jeq_k, n - i, 0, nr) for i, nr in enumerate(denied)]
    prog += [(ret_k, 0, 0, allow), (ret_k, 0, 0, refuse)]
    code = b"".join(struct.pack("=HBBI", *ins) for ins in prog)
    filters = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("@HP", len(prog), ctypes.addressof(filters))  # struct sock_fprog
    buf = ctypes.create_string_buffer(fprog, len(fprog))
    return bool(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, buf, 0, 0) == 0)


def isolate(config: dict[str, Any], readable: list[str]) -> dict[str, Any]:
    """Lock this process down; returns what took.  ``config["wall"]`` picks the file
    wall: ``auto`` (Landlock, else a mount namespace), one of them, or ``none`` (to
    test how the host treats a system that has neither)."""
    libc = _libc()
    root = os.geteuid() == 0
    mode = config.get("wall") or "auto"
    netns = False
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes fail with EFBIG instead of killing
    nnp = libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
    abi = landlock_abi(libc) if mode in ("auto", "landlock") else 0
    wall = "none"
    if abi and nnp and landlock(libc, abi, readable):
        wall = "landlock"
    elif mode in ("auto", "mountns") and empty_root(libc, root):
        wall, netns = "mountns", True
    if root and not netns:
        netns = libc.unshare(CLONE_NEWNET) == 0  # best effort
    cpu_hard = math.ceil(time.process_time() + float(config["cpu_lifetime"]))
    mem = int(config["memory_ceiling"])
    for limit, value in ((resource.RLIMIT_CORE, 0), (resource.RLIMIT_FSIZE, 0), (resource.RLIMIT_NOFILE, 16),
                         (resource.RLIMIT_CPU, cpu_hard), (resource.RLIMIT_AS, mem)):
        resource.setrlimit(limit, (value, value))
    if root:
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
    if not netns:  # unprivileged: a user namespace may still give us a network namespace
        netns = libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0
    seccomp = nnp and deny_syscalls(libc)
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    return {"uid": os.getuid(), "no_new_privs": nnp, "netns": netns, "dropped_root": root, "wall": wall,
            "landlock_abi": abi if wall == "landlock" else 0, "seccomp": seccomp}


def interpreter_paths(paths: list[str]) -> list[str]:
    """What stays readable: of ``paths`` (the worker's ``sys.path`` at startup, which under
    ``-I -S`` is the standard library, its extension modules and zip, no site-packages),
    those inside the interpreter's own installation."""
    prefix = os.path.realpath(sys.base_prefix)
    return [p for p in paths if p and os.path.realpath(p).startswith(prefix + os.sep)]
