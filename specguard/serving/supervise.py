"""Run a command and take its whole process group down when the parent (pytest) dies.

    python -m specguard.serving.supervise <parent-pid> -- <command...>

The server runs in a process group of its own (so stopping it reaches the engine core and its
workers), which also means nothing kills it when pytest is killed outright (SIGKILL, OOM). This
small supervisor leads that group, starts the command in it, and polls the parent: once the
parent is gone it terminates the group. It exits with the command's exit code, so start-up
errors still report vLLM's own code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

POLL_S = 0.5
# SIGTERM, then at most GRACE_S for the API server and STRAGGLER_S for the rest before SIGKILL: the
# whole group is gone within ~8 s of pytest's death, so a job that starts next on the same GPU finds
# its memory free (with 15 s + 15 s, a server killed during its start-up took 30-60 s to go).
GRACE_S = 4.0
STRAGGLER_S = 3.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _others() -> list[int]:
    """The other live members of our process group."""
    import psutil

    me, group = os.getpid(), os.getpgrp()
    out = []
    for p in psutil.process_iter():
        try:
            if p.pid != me and os.getpgid(p.pid) == group and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return out


def _terminate_group(child: subprocess.Popen[bytes]) -> None:
    """SIGTERM every other member of the group, wait, then SIGKILL what is left; we exit after."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        os.killpg(os.getpgrp(), signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        child.wait(timeout=GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + STRAGGLER_S
    while _others() and time.monotonic() < deadline:
        time.sleep(POLL_S)
    for pid in _others():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--" or not argv[0].isdigit():
        print("usage: python -m specguard.serving.supervise <parent-pid> -- <command...>", file=sys.stderr)
        return 2
    parent = int(argv[0])
    child = subprocess.Popen(argv[2:])
    stopping = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    while True:
        code = child.poll()
        if code is not None:
            # The API server is gone; its engine core and workers must not outlive it.
            _terminate_group(child)
            return code
        if stopping or not _alive(parent) or os.getppid() != parent:
            _terminate_group(child)
            return 128 + signal.SIGTERM
        time.sleep(POLL_S)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
