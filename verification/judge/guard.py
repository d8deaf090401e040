"""The worker's guard: nothing the judged code starts outlives the verdict or verify itself.

:class:`~verification.judge.worker.Worker` starts ``python -c BOOT``, which runs
:func:`start` here. That process becomes the *guard*; it forks the *server*, the process
that imports and calls the judged function (:func:`verification.judge.serve._serve`).

* The guard is a **child subreaper** (Linux ``PR_SET_CHILD_SUBREAPER``): anything the judged
  code starts, with ``setsid()``, a double fork or a daemon library, is reparented to the
  guard when its own parent exits, never to init. So every such process stays a descendant
  of the guard, and the guard can find them all in ``/proc``.
* The guard dies with verify: ``PR_SET_PDEATHSIG`` sends it SIGTERM when verify's process
  ends, however it ends (kill -9 included). The server gets SIGKILL when the guard ends.
* When the server exits, or verify asks (SIGTERM), or verify is gone, the guard stops every
  descendant (SIGSTOP, so none can fork more, then SIGKILL), reaps them and exits with the
  server's status, which verify reports.

The judged code runs as the same user and could signal the guard; it cannot make the guard
run its code. On systems without ``prctl`` (not Linux) the guard only kills the process
group, as before.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
from typing import Dict, List

__all__: list = []

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


class _Stop(Exception):
    """Raised by the guard's SIGTERM handler to leave its wait."""


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _children_map() -> Dict[int, List[int]]:
    """{parent pid: [child pids]} from /proc (empty where /proc is missing)."""
    children: Dict[int, List[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return children
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue                       # it exited meanwhile
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def descendants(root: int) -> List[int]:
    """Every process below ``root`` in the process tree."""
    children, found, todo = _children_map(), [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_descendants(root: int, rounds: int = 20) -> None:
    """Stop, then kill, every descendant of ``root`` (this process), reaping them, until none
    is left (a process forking as it is found shows up in the next round)."""
    for _ in range(rounds):
        found = descendants(root)
        if not found:
            return
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in found:
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
        _reap()


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def limit_memory(limit: int) -> None:
    """Cap this process's address space at ``limit`` bytes (0: no cap): an allocation past it
    raises MemoryError in the judged code instead of swapping the machine."""
    if limit > 0:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def start(parent: int, request_fd: int, reply_fd: int, memory: int = 0) -> None:
    """Run the guard (this process) and the server (a fork, its address space capped at
    ``memory`` bytes when that is not 0); never returns."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:             # verify died before the line above took effect
        os._exit(1)
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    guard = os.getpid()

    def stop(signum, frame):
        raise _Stop

    signal.signal(signal.SIGTERM, stop)
    server = os.fork()
    if server == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != guard:
            os._exit(1)
        limit_memory(memory)
        from verification.judge.serve import _serve

        try:
            _serve(request_fd, reply_fd)
        finally:
            os._exit(0)
    os.close(request_fd)                   # the server's ends of the channel are its own:
    os.close(reply_fd)                     # verify sees EOF when the server is gone
    status = None
    try:
        while status is None:
            pid, raw = os.waitpid(-1, 0)   # the server, or an orphan reparented here
            if pid == server:
                status = raw
    except (_Stop, ChildProcessError):
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    kill_descendants(guard)
    if status is not None and os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(guard, sig)                # end as the server ended, for verify's report
    os._exit(os.WEXITSTATUS(status) if status is not None and os.WIFEXITED(status) else 1)
