"""Waiting for a run in a test: as long as it moves, however slow a busy machine makes it."""
from __future__ import annotations

import time

ENDED = ("completed", "stopped", "failed", "interrupted")


class RunWatch:
    """A run's status, read as often as a test likes, that fails the test only when the run stops moving: no change
    of state, phase, epoch or step for `stalled_s` seconds. A deadline on the whole run failed on a machine busy
    with a training beside the suite, where the run was slower, not stuck."""

    def __init__(self, folder, stalled_s: float = 180):
        self.folder, self.stalled_s = folder, stalled_s
        self.last, self.since = None, time.time()

    def status(self) -> dict:
        status = self.folder.status()
        position = tuple(status.get(key) for key in ("state", "phase", "epoch", "step"))
        if position != self.last:
            self.last, self.since = position, time.time()
        assert time.time() - self.since < self.stalled_s, f"no progress in {self.stalled_s:.0f} s: {status}"
        return status

    def wait_for(self, *states: str) -> dict:
        """The status once the run is in one of `states`; fails at once if it moves on to an end among the others
        (the state it is in when the wait begins, `stopped` before a Resume takes effect, is no such end)."""
        before = self.folder.status().get("state")
        moved = False
        while (status := self.status()).get("state") not in states:
            moved = moved or status.get("state") != before
            assert not (moved and status.get("state") in ENDED), status
            time.sleep(0.2)
        return status
