"""Every benchmark in bench/ runs (CI smoke-runs them with --smoke; the figures come from full runs by hand).
Nothing here times anything: each benchmark must finish and print its ratio line."""
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # ./test.sh -m "not slow" leaves these out

BENCHMARKS = {  # the longest smoke runs first, so that no long one starts last
    "ui_cost": "watched / headless while polling:",
    "demo_fps": "demo frames per second: median",
    "imbalance": "small classes' recall, weights / none:",
    "big_data": "file / memory: peak RSS",
    "late_stages": "late / all: wall",
    "startup": "page switch: median",
    "ood": "photos flagged, ours / baseline:",
    "engine_overhead": "engine / bare loop:",
    "time_to_accuracy": "ours (smoke)",
    "gpu": "real / synthetic:",
    "lr_suggestions": "better final accuracy: valley",
    "label_noise": "precision among the top N (median",
    "label_noise_multi": "median of 1 seeds: precision among the top N",
    "frozen_phase": "kept / last epoch: validation loss",
    "first_model": "run finished after",
    "augment_cost": "median: augmentation makes the frozen phase",
}
# Two smoke runs at a time, each on one thread: most of a smoke run is starting Python, importing torch and starting
# servers, which one core does as well as two; two runs of two threads each would oversubscribe the two cores.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def smoke_run(name: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"bench.{name}", "--smoke"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, **ONE_THREAD})


@pytest.fixture(scope="module")
def smoke_runs() -> dict[str, subprocess.CompletedProcess]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(BENCHMARKS, pool.map(smoke_run, BENCHMARKS)))


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_benchmark_smoke_run(name, smoke_runs):
    result = smoke_runs[name]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert BENCHMARKS[name] in result.stdout, result.stdout[-3000:]
