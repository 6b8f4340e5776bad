"""Telling whether the process that wrote a run's status is still that process: its pid and its start time."""
from __future__ import annotations

import os
from pathlib import Path


def process_start(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot (Linux's /proc/PID/stat, field 22); None where it
    cannot be read (no such process, or no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])  # the fields after the command name, which may hold spaces
    except (OSError, ValueError, IndexError):
        return None


def process_alive(pid: int, started: int | None = None) -> bool:
    """Whether process `pid` exists and is not a zombie, and (given `started`, process_start's) is the one that
    started then, not a later process that reuses the pid."""
    if pid <= 0:  # a damaged status: os.kill would ask after a process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except (OverflowError, OSError):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): the pid exists
    if stat[stat.rindex(")") + 2:].split()[0] == "Z":
        return False  # exited, not yet reaped by its parent
    return started is None or process_start(pid) == started
