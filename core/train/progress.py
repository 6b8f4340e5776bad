"""How long a run has left and how fast it goes, from the wall time of the whole work.

A run is a plan of phases (core.train.recipe.plan: a frozen phase that may train on cached features, then unfrozen
epochs; or one phase from scratch) whose steps differ in cost by 10-100x, plus work that is not steps:
computing the frozen body's features once, a validation pass and a checkpoint every epoch, and the
calibration pass over the validation images at the end. TimeLeft adds up what is left of all of it: each
phase's cost per step and per epoch as measured while it runs in this process (so a resumed run is timed from
its resume), and before it runs, estimated from the body's forward pass timed while caching the features.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

# A training step (forward, backward, AdamW) against an inference forward pass of the same batch: 3.4-5.9x on a
# CPU (EfficientNet-Lite0 and ResNet-18 at 32 and 64 px). A frozen body has no backward pass: about 1.5x.
STEP_PER_FORWARD = {"frozen": 1.5}
TRAIN_STEP_PER_FORWARD = 4.0
RECENT_STEPS = 20  # a phase's cost per step is the mean of its last steps: it follows a machine that slows down
# or speeds up (with 50, a resumed run in the full test suite once stated 1.7x the time left)
MIN_STEPS = 3  # steps measured before their median replaces the estimate: one step after a resume was 1.5x off


@dataclass(frozen=True)
class Phase:
    name: str  # as core.train.loop.fit calls it: "frozen", "unfrozen", "late" or "scratch"
    epochs: int
    cached: bool = False  # trains on what frozen layers computed once, when the run's first cached phase starts
    share: float = 0.0  # of a forward pass, what a cached phase's training runs: 0 (a head), a late stages' share


class ActiveTime:
    """Wall seconds a run has spent running: those of its earlier starts (`before`) plus this process's."""

    def __init__(self, before: float = 0.0):
        self.before, self.since = before, time.time()

    def __call__(self) -> float:
        return self.before + time.time() - self.since


def recent_cost(steps: deque) -> float | None:
    """Seconds a step of a phase costs: the median of its recent steps, leaving out its first (it pays for warming
    up: allocations, the first backward pass, 1.5x the rest, measured); None until MIN_STEPS others were measured.
    The median, not the mean: the few slower steps after a phase starts made the mean state 1.5x the time left."""
    values = sorted(steps if steps.warm else list(steps)[1:])
    if len(values) < MIN_STEPS:
        return None
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


class Steps(deque):
    """Seconds of a phase's recent steps; `warm` once the first (warm-up) step has left the window."""

    def __init__(self):
        super().__init__(maxlen=RECENT_STEPS)
        self.warm = False

    def append(self, seconds: float) -> None:
        self.warm = self.warm or len(self) == self.maxlen
        super().append(seconds)


@dataclass
class PhaseCost:
    steps: Steps = field(default_factory=Steps)  # seconds of recent steps
    epoch_extra_s: float | None = None  # an epoch's work besides its steps (validation, checkpoint), measured


class TimeLeft:
    """Seconds left of a run: every remaining step, validation, checkpoint, feature cache and the final pass.

    Fed by the run's writer (core.train.callbacks.RunFolderWriter): `step` for each training step, `epoch` for what
    an epoch took besides its steps, `features` when the body's features were computed, `checkpoint`.
    """

    def __init__(self, phases: list[Phase], *, steps_per_epoch: int, batch_size: int, n_train: int, n_valid: int,
                 finish_images: int, forward_before: float | None = None):
        self.phases, self.steps_per_epoch, self.batch_size = phases, steps_per_epoch, batch_size
        self.n_train, self.n_valid, self.finish_images = n_train, n_valid, finish_images
        self.costs = {phase.name: PhaseCost() for phase in phases}
        self.forward_s: float | None = None  # one image through the body, inference, timed while caching
        self.forward_before = forward_before  # what the run's start before a resume made of it: until measured
        self.features_ready = False  # this process computed the cached phase's features
        self.checkpoint_s = 0.0

    # What was measured
    def step(self, phase: str, seconds: float) -> None:
        self.costs.setdefault(phase, PhaseCost()).steps.append(seconds)

    def epoch(self, phase: str, extra_s: float) -> None:
        self.costs.setdefault(phase, PhaseCost()).epoch_extra_s = max(extra_s, 0.0)

    def features(self, seconds: float) -> None:
        self.forward_s, self.features_ready = seconds / max(self.n_train + self.n_valid, 1), True

    def checkpoint(self, seconds: float) -> None:
        self.checkpoint_s = seconds

    # What follows from it
    def forward(self) -> float | None:
        """Seconds of one image's inference forward pass: timed while caching, else inferred from a phase's
        measured training steps, else what the start before a resume made of it; None before any of these."""
        if self.forward_s is not None:
            return self.forward_s
        for phase in self.phases:
            step_s = recent_cost(self.costs[phase.name].steps)
            if step_s is not None and not phase.cached:
                return step_s / (self.batch_size * STEP_PER_FORWARD.get(phase.name, TRAIN_STEP_PER_FORWARD))
        return self.forward_before

    def step_s(self, phase: Phase) -> float | None:
        measured, forward = recent_cost(self.costs[phase.name].steps), self.forward()
        if measured is not None:
            return measured
        if forward is None:
            return 0.0 if phase.cached and not phase.share else None  # a head on cached features: next to nothing
        share = phase.share if phase.cached else 1.0
        return forward * self.batch_size * STEP_PER_FORWARD.get(phase.name, TRAIN_STEP_PER_FORWARD) * share

    def epoch_extra_s(self, phase: Phase) -> float | None:
        measured, forward = self.costs[phase.name].epoch_extra_s, self.forward()
        if measured is not None:
            return measured
        if phase.cached and not phase.share:
            return self.checkpoint_s
        share = phase.share if phase.cached else 1.0
        return None if forward is None else forward * self.n_valid * share + self.checkpoint_s

    def seconds_left(self, phase: str, phase_epoch: int, batch_in_epoch: int) -> float | None:
        """Seconds left from a position: `phase_epoch` epochs of `phase` finished and `batch_in_epoch` batches
        of the next; None while nothing has been measured yet to estimate from."""
        names = [p.name for p in self.phases]
        start = names.index(phase) if phase in names else 0
        forward = self.forward()
        if forward is None:
            return None
        left = forward * self.finish_images
        cache_paid = self.features_ready  # the run's cached phases share one pass over every image
        for index, p in enumerate(self.phases[start:]):
            current = index == 0 and phase == p.name
            epochs = p.epochs - (phase_epoch if current else 0)
            steps = epochs * self.steps_per_epoch - (batch_in_epoch if current else 0)
            step_s, extra_s = self.step_s(p), self.epoch_extra_s(p)
            if step_s is None or extra_s is None:
                return None
            left += max(steps, 0) * step_s + max(epochs, 0) * extra_s
            if p.cached and not cache_paid:
                left += forward * (self.n_train + self.n_valid)
                cache_paid = True
        return left


def left_now(status: dict, now: float | None = None) -> tuple[float | None, float | None]:
    """(seconds left, share of the run's time done) of a running run at `now`: its last heartbeat's estimate
    less the seconds since, so a bar between heartbeats (a validation pass, a feature cache) keeps moving.
    (None, None) while there is no estimate yet, or the run is not running."""
    if status.get("state") != "running" or "eta_s" not in status or "heartbeat" not in status:
        return None, None
    since = max((time.time() if now is None else now) - status["heartbeat"], 0.0)
    left = max(status["eta_s"] - since, 0.0)
    done = status.get("active_s", 0.0) + since
    return left, done / max(done + left, 1e-9)
