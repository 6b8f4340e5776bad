"""A sweep worker: ask the study for settings, train them as an ordinary run, report each epoch, tell the result.

Each trial is a run folder made and started as the Train page makes and starts one (core.runs.store: its own
process, log, curves, Stop and Resume), named after its study and trial, tagged `sweep`, with `sweep.json` saying
which study and trial it is and, when the study's pruner stopped it, why. The worker watches the run's epoch rows;
after each, Optuna's pruner (the median of earlier trials at the same epoch, by default) may stop it, exactly as
Stop does. Ctrl-C, SIGTERM or `request_stop(runs_dir)` stop the running trial like a run and end the worker; what
finished stays in the study.
"""
from __future__ import annotations

import math
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.atomic import read_json, write_json_atomic
from core.config import TrainConfig
from core.runs import store
from core.runs.folder import RunFolder
from core.sweep.space import Choices, Range, first_params, including, suggest

SWEEP_FILE = "sweep.json"  # in a trial's run folder: its study, storage, trial number, settings and pruning
STOP_FILE = ".sweep-stop"  # in a worker's runs folder: the page's Stop for the sweep
POLL_S = 0.5
PRUNE_STEPS = 10  # a trial reports its accuracy at tenths of its schedule (schedule_step)
FIRST_WAIT_S = 30.0  # a worker that did not make the study waits this long at most for its first trial
FAILURES_IN_A_ROW = 3  # trials that failed one after another before the worker gives up (a dataset gone, no memory)


class SweepStopped(Exception):
    """The person stopped the sweep (Ctrl-C, SIGTERM or the page's Stop)."""


@dataclass
class Worker:
    """One worker of a study: its runs folder, what it searches, when it stops."""

    study: object  # optuna.Study
    base: TrainConfig
    space: dict[str, Range | Choices]
    runs_dir: Path
    trials: int  # the study's trials in all (every worker's), after which no worker asks for another
    budget_s: float | None = None  # no trial starts after this many seconds of this worker
    storage_text: str = ""  # the storage as shown (no password)
    log: object = print
    started: float = field(default_factory=time.time)  # when the worker's process started, as near as known
    first: bool = True  # put the starting settings first: the worker that made the study (study.open_study)

    def run(self) -> list:
        """Run trials until the study has `trials`, the budget is spent or the person stops; the trials it ran."""
        self.space = including(self.base, self.space)
        if self.first:
            self.study.enqueue_trial(first_params(self.base, self.space), skip_if_exists=True)
        else:  # the worker that made the study puts them first a moment after: wait, so they are trial 0
            waited = time.time()
            while not self.study.get_trials(deepcopy=False) and time.time() - waited < FIRST_WAIT_S:
                time.sleep(0.2)
        _clear_stale_stop(self.runs_dir, self.started)
        ran, failures = [], 0
        in_main = threading.current_thread() is threading.main_thread()  # only there can a signal be handled
        # SIGTERM and Ctrl-C stop the sweep, also where SIGINT came ignored (a shell's background job passes SIG_IGN
        # on, and Python then leaves it so: the worker ran on through every trial)
        previous = {sig: signal.signal(sig, handler) for sig, handler in
                    ((signal.SIGTERM, _interrupt), (signal.SIGINT, signal.default_int_handler))} if in_main else {}
        try:
            while (why := self.why_not_another()) is None:
                trial = self.study.ask()
                ran.append(trial.number)
                state, value = self.one_trial(trial)
                failures = failures + 1 if state == "fail" else 0
                if failures >= FAILURES_IN_A_ROW:
                    why = f"{failures} trials in a row failed; see their runs' log.txt"
                    break
            self.log(f"The worker ends: {why}.")
        except (SweepStopped, KeyboardInterrupt):  # also Ctrl-C between trials
            self.log("The sweep was stopped; the study keeps every trial that finished.")
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return ran

    def why_not_another(self) -> str | None:
        from optuna.trial import TrialState

        if stop_requested(self.runs_dir):
            raise SweepStopped
        started = [t for t in self.study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]
        if len(started) >= self.trials:
            return f"the study has its {self.trials} trials"
        if self.budget_s is not None and time.time() - self.started >= self.budget_s:
            return f"its time budget of {self.budget_s:.0f} s is spent"
        return None

    def one_trial(self, trial) -> tuple[str, float | None]:
        """Train `trial`'s settings as a run; tell the study how it ended. ("complete" | "pruned" | "fail", value)."""
        from optuna.trial import TrialState

        config = suggest(trial, self.space, self.base)
        busy = store.active_run(self.runs_dir)
        if busy:
            self.study.tell(trial, state=TrialState.FAIL)
            raise SystemExit(f"Run {busy} is training in {self.runs_dir}: one training at a time per runs folder. "
                             "Give this worker its own --runs-dir, or wait for that run to finish.")
        run_dir = store.create_run(config, self.runs_dir, run_name(self.study.study_name, trial.number))
        store.write_naming(run_dir, f"{self.study.study_name} · trial {trial.number}",
                           ["sweep", f"study {self.study.study_name}"[:40]])
        record = {"study": self.study.study_name, "storage": self.storage_text, "trial": trial.number,
                  "params": trial.params, "pruned": None}
        write_json_atomic(run_dir / SWEEP_FILE, record)
        trial.set_user_attr("run", str(run_dir))
        self.log(f"Trial {trial.number}: {describe(trial.params)} → {run_dir}")
        try:
            accuracy, pruned = self.watch(trial, run_dir, config.epochs)
        except (KeyboardInterrupt, SweepStopped):
            write_json_atomic(run_dir / SWEEP_FILE, {**record, "stopped": "was stopped with the search"})
            self.study.tell(trial, state=TrialState.FAIL)
            raise SweepStopped from None
        if pruned:
            write_json_atomic(run_dir / SWEEP_FILE, {**record, "pruned": pruned})
            self.study.tell(trial, state=TrialState.PRUNED)
            self.log(f"Trial {trial.number} {pruned}.")
            return "pruned", None
        if accuracy is None:
            message = RunFolder(run_dir).status().get("message", "it ended without finishing")
            self.study.tell(trial, state=TrialState.FAIL)
            self.log(f"Trial {trial.number} failed: {message}")
            return "fail", None
        self.study.tell(trial, accuracy)
        best = self.study.best_trial
        self.log(f"Trial {trial.number}: validation accuracy {accuracy:.2%} (best so far: trial {best.number}, "
                 f"{best.value:.2%})")
        return "complete", accuracy

    def watch(self, trial, run_dir: Path, epochs: int) -> tuple[float | None, str | None]:
        """Start the run and follow its epochs: (its final accuracy or None, why it was pruned or None)."""
        folder = RunFolder(run_dir)
        process = store.launch(run_dir)
        tail, pruned, reported = folder.metrics_tail(), None, set()
        trained = 0  # epochs past the frozen phase
        try:
            while process.poll() is None:
                time.sleep(POLL_S)
                if stop_requested(self.runs_dir):
                    raise SweepStopped
                if pruned:
                    continue
                seen = len(tail.epochs)
                tail.poll()
                for row in tail.epochs[seen:]:
                    if row.get("phase") == "frozen":
                        continue
                    trained += 1
                    step = schedule_step(trained, epochs)
                    if step in reported:  # two epochs in one tenth of a long schedule; a row again after a resume
                        continue
                    reported.add(step)
                    trial.report(row["accuracy"], step)
                    if trial.should_prune():
                        pruned = (f"was pruned after epoch {row['epoch']} ({trained} of its {epochs} epochs past the "
                                  f"frozen phase): validation accuracy {row['accuracy']:.1%}, below the study's "
                                  f"earlier trials at the same point of their schedules ({pruner_rule(self.study)})")
                        folder.request_stop()
        except (KeyboardInterrupt, SweepStopped):
            folder.request_stop()  # the run checkpoints and ends as stopped: it can be resumed as a run
            process.wait()
            raise
        if folder.status().get("state") == "completed":  # also a pruned run that finished before it could stop
            return final_accuracy(folder, self.base.keep_best), None
        return None, pruned


def schedule_step(done: int, epochs: int) -> int:
    """The step a trial reports after `done` of its `epochs` epochs past the frozen phase: tenths of its one-cycle
    schedule, so that trials of different lengths are compared at the same point of their schedules (by epoch, a
    six-epoch trial at its second epoch, rate still high, was measured against a three-epoch one at its second,
    rate nearly annealed, and pruned). The frozen phase is not reported: cached, it costs a second, and pruning
    there saves nothing."""
    return math.ceil(PRUNE_STEPS * done / max(epochs, 1))


def final_accuracy(folder: RunFolder, keep_best: bool) -> float | None:
    """The validation accuracy of the model the run ended with: its last epoch's, or its best with keep_best."""
    accuracies = [row["accuracy"] for row in folder.read_metrics().epochs]
    if not accuracies:
        return None
    return max(accuracies) if keep_best else accuracies[-1]


def pruner_rule(study) -> str:
    name = type(study.pruner).__name__
    return "the median rule" if name == "MedianPruner" else f"Optuna's {name}"


def run_name(study_name: str, number: int) -> str:
    """A run folder name for a trial: the study's name in the characters a run id allows, and the trial number."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", study_name).strip("-.") or "study"
    return f"{stem[:80]}-trial-{number}"


def describe(params: dict) -> str:
    return ", ".join(f"{name} {value:.3g}" if isinstance(value, float) else f"{name} {value}"
                     for name, value in params.items())


def request_stop(runs_dir: Path) -> None:
    """Ask the worker training in `runs_dir` to stop its trial and end (the Train page's Stop for a sweep)."""
    Path(runs_dir).mkdir(parents=True, exist_ok=True)
    (Path(runs_dir) / STOP_FILE).touch()


def stop_requested(runs_dir: Path) -> bool:
    return (Path(runs_dir) / STOP_FILE).exists()


def sweep_record(run_dir: Path) -> dict:
    """What `sweep.json` says of a run: {} for a run that is no trial (or a damaged file)."""
    return read_json(Path(run_dir) / SWEEP_FILE)


def _clear_stale_stop(runs_dir: Path, started: float) -> None:
    """Remove a stop request older than this worker (left by one that crashed); a newer one is for this worker."""
    path = Path(runs_dir) / STOP_FILE
    try:
        if path.stat().st_mtime < started:
            path.unlink()
    except OSError:
        pass


def _interrupt(*_) -> None:
    raise KeyboardInterrupt
