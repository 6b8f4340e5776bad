"""What the benchmarks share: starting a training command and timing its epoch lines, and peak memory."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# One line of the epoch table that `python -m core.train` prints (and bench/fastai_digits.py imitates):
# epoch, phase, train_loss, valid_loss, accuracy, error_rate, time.
EPOCH_LINE = re.compile(r"^\s*(\d+)\s+(\w+)\s+(\S+)\s+(\S+)\s+([0-9.]+)\s+([0-9.]+)\s+\d+:\d+\s*$")


@dataclass
class Timed:
    """A finished command: each epoch as (seconds since launch, phase, accuracy), wall time, peak memory."""

    epochs: list[tuple[float, str, float]] = field(default_factory=list)
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0
    returncode: int = 0
    output: list[str] = field(default_factory=list)

    def first_reaching(self, accuracy: float) -> float | None:
        """Seconds from launch to the end of the first epoch at or above `accuracy`."""
        return next((t for t, _, a in self.epochs if a >= accuracy - 1e-9), None)

    @property
    def final_accuracy(self) -> float:
        return self.epochs[-1][2] if self.epochs else 0.0


def run_timed(command: list[str], env: dict | None = None) -> Timed:
    """Run `command` from the repository root, timestamping each epoch line as it is printed."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    timed = Timed()
    for line in process.stdout:
        now = time.perf_counter() - started
        timed.output.append(line.rstrip())
        match = EPOCH_LINE.match(line)
        if match:
            timed.epochs.append((now, match.group(2), float(match.group(5))))
    _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage: its peak resident memory
    process.returncode = os.waitstatus_to_exitcode(status)
    timed.wall_s = time.perf_counter() - started
    timed.peak_rss_mb = usage.ru_maxrss / 1024
    timed.returncode = process.returncode
    if timed.returncode != 0:
        sys.stdout.write("\n".join(timed.output[-30:]) + "\n")
        raise SystemExit(f"{command} failed with exit code {timed.returncode}")
    return timed


def peak_rss_mb(pid: int) -> float:
    """The high-water mark of a running process's resident memory (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def first_images(split, train: int, valid: int):
    """The first `train` training and `valid` validation images of a core.data.load.Split: a smoke run's few
    batches, through the same steps as all of them."""
    return dataclasses.replace(split, train_images=split.train_images[:train], train_labels=split.train_labels[:train],
                               valid_images=split.valid_images[:valid], valid_labels=split.valid_labels[:valid],
                               valid_ids=split.valid_ids[:valid])


def digits_folder(out: Path, count: int = 200) -> Path:
    """The first `count` digits as 8x8 PNGs in class folders: a smoke run's dataset, which a training process
    decodes and trains on in a fraction of the time all 1,797 take."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i in range(count):
        folder = out / str(digits.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((digits.images[i] * 15.9).astype("uint8"), mode="L").save(folder / f"{i}.png")
    return out


def python() -> str:
    return sys.executable


def print_medians(results: dict[str, list[float]]) -> dict[str, float]:
    """Print each series' median and every value, one line each; returns the medians."""
    median = {name: statistics.median(values) for name, values in results.items()}
    width = max(map(len, results))
    for name, values in results.items():
        print(f"  {name:{width}}  median {median[name]:8.1f}  ({', '.join(f'{v:.1f}' for v in values)})")
    return median


@contextlib.contextmanager
def a_training_beside(runs_dir: Path | None = None) -> Iterator[None]:
    """Keep the app's default training (digits, 64 px, 12 epochs) running in its own process, and its own runs folder
    (each folder has its training lock; a scratch folder, removed after, unless one is given), for as long as the
    block lasts: what a person's other run does to this CPU."""
    if runs_dir is None:
        with scratch("bench-beside-") as folder, a_training_beside(folder):
            yield
        return
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            process = subprocess.Popen([python(), "-m", "core.train", "--data", "builtin:digits", "--size", "64",
                                        "--epochs", "12", "--runs-dir", str(runs_dir)], cwd=ROOT,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while process.poll() is None:
                if stop.wait(0.5):
                    process.send_signal(signal.SIGTERM)  # a stop request: the run ends at its next step
                    process.wait(timeout=120)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    time.sleep(5)  # the first run has imported torch and started decoding
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A folder of the benchmark's own under the system's temporary folder, removed with what it holds when the block
    ends (the runs a benchmark trains are hundreds of MB each)."""
    with tempfile.TemporaryDirectory(prefix=prefix, ignore_cleanup_errors=True) as folder:
        yield Path(folder)
