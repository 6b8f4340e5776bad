"""How long each Interpret and Layers view takes to answer, through AppTest (the page's real code path).

    .venv/bin/python -m bench.views [--run-dir RUN] [--repeats 3]

Without --run-dir it first trains the reference run of the issue: ResNet-18 at 128 px, one epoch on digits.
A view's time is one script rerun after the control that opens it changes. The first pass finds every cache
cold (model, dataset, attributions); later passes are new sessions that find them warm. Library imports are
done before timing: a fresh server pays them once (about 2 s for torchvision and captum).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from core.train.__main__ import main as train_main

ROOT = Path(__file__).resolve().parent.parent


def timed(action) -> float:
    started = time.perf_counter()
    app = action()
    assert not app.exception, [e.value for e in app.exception]
    return time.perf_counter() - started


def by_label(widgets, label):
    return next(w for w in widgets if w.label == label)


def measure(run_id: str) -> dict[str, float]:
    times: dict[str, float] = {}
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    app.query_params["run"] = run_id
    app.run()
    times["interpret: open page"] = timed(lambda: app.switch_page("pages/interpret.py").run())
    times["interpret: normalize toggle"] = timed(lambda: app.toggle[0].set_value(True).run())
    times["interpret: choose a cell"] = timed(
        lambda: by_label(app.selectbox, "Predicted as").set_value(by_label(app.selectbox, "Actual class").value).run())
    times["interpret: top losses 24"] = timed(lambda: by_label(app.slider, "Top losses to show").set_value(24).run())
    times["layers: open page"] = timed(lambda: app.switch_page("pages/layers.py").run())
    for view in ["Filters", "Activations", "Attributions", "What excites a channel", "Basics"]:
        times[f"layers: {view}"] = timed(lambda view=view: by_label(app.radio, "View").set_value(view).run())
    by_label(app.radio, "View").set_value("Attributions").run()
    for method in ["integrated_gradients", "saliency", "occlusion", "grad_cam"]:
        times[f"layers: attribution {method}"] = timed(
            lambda method=method: by_label(app.radio, "Method").set_value(method).run())
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    run_dir = args.run_dir
    if run_dir is None:
        runs_dir = Path(tempfile.mkdtemp(prefix="bench-views-"))
        train_main(["--arch", "resnet18", "--no-pretrained", "--size", "128", "--epochs", "1", "--runs-dir",
                    str(runs_dir), "--name", "r18-128"])
        run_dir = runs_dir / "r18-128"
    os.environ["STUDIO_RUNS_DIR"] = str(run_dir.parent)
    # A server that has run before has these imported; a fresh one pays ~2 s once, on its first model load.
    import captum.attr  # noqa: F401
    import torchvision  # noqa: F401

    # The first pass computes everything (cold); later passes are new sessions that find the caches warm.
    samples = [measure(run_dir.name) for _ in range(args.repeats)]
    print(f"{'view':40} {'first s':>8} {'again s (median)':>17}")
    for name in samples[0]:
        again = statistics.median(s[name] for s in samples[1:]) if len(samples) > 1 else float("nan")
        print(f"{name:40} {samples[0][name]:8.2f} {again:17.2f}")
    slowest = max(samples[0].values())
    print(f"slowest first answer: {slowest:.2f} s; against the 2 s target: ratio {slowest / 2:.2f}")


if __name__ == "__main__":
    main()
