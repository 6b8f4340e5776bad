"""Every benchmark in bench/ runs (CI smoke-runs them with --smoke; the figures come from full runs by hand).
Nothing here times anything: each benchmark must finish and print its ratio line."""
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # ./test.sh -m "not slow" leaves these out

BENCHMARKS = {
    "first_model": "run finished after",
    "time_to_accuracy": "ours (smoke)",
    "engine_overhead": "engine / bare loop:",
    "gpu": "real / synthetic:",
    "startup": "page switch: median",
    "ui_cost": "watched / headless while polling:",
    "label_noise": "precision among the top N (median",
    "imbalance": "small classes' recall, weights / none:",
    "ood": "photos flagged, ours / baseline:",
    "demo_fps": "demo frames per second: median",
    "augment_cost": "median: augmentation makes the frozen phase",
    "lr_suggestions": "better final accuracy: valley",
    "late_stages": "late / all: wall",
    "frozen_phase": "kept / last epoch: validation loss",
    "big_data": "file / memory: peak RSS",
}


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_benchmark_smoke_run(name):
    result = subprocess.run([sys.executable, "-m", f"bench.{name}", "--smoke"], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert BENCHMARKS[name] in result.stdout, result.stdout[-3000:]
