"""Live camera demo: frames classified per second, end to end, on this machine's CPU.

    .venv/bin/python -m bench.demo_fps [--seconds 20] [--run-dir RUN] [--smoke]

Trains EfficientNet-Lite0 at 64 px (the app's default) on the digits for one frozen epoch, unless --run-dir names
a finished run; serves the app; opens the Predict page's live demo in Chromium with its fake camera (640×480 at 30
frames a second, a moving pacman) and streams for --seconds. Each frame the demo classifies appends its time to a
file (STUDIO_DEMO_FPS_LOG, which the UI never shows); the rate is counted over 5-second windows after the first
(warm-up) and the median printed. The camera's 30 frames a second is the ceiling.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from bench.common import ROOT, digits_folder
from pages._demo import FPS_LOG_ENV
from tests.browser_support import CHROMIUM, CHROMIUM_ARGS, streamlit_server

WINDOW_S = 5.0
CAMERA_FPS = 30


def train_lite0(runs_dir: Path, size: int = 64, data: str = "builtin:digits") -> Path:
    """A finished EfficientNet-Lite0 run at `size` px: one frozen epoch on the digits is enough to time the demo."""
    subprocess.run([sys.executable, "-m", "core.train", "--data", data, "--arch", "efficientnet_lite0",
                    "--size", str(size), "--freeze-epochs", "1", "--epochs", "0", "--runs-dir", str(runs_dir),
                    "--name", "demo"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "TQDM_DISABLE": "1"})
    return runs_dir / "demo"


def window_rates(times: list[float], start: float, window: float = WINDOW_S) -> list[float]:
    """Frames per second in each whole window of `window` seconds from `start` (times: seconds, ascending)."""
    rates = []
    while start + window <= times[-1]:
        rates.append(sum(start <= t < start + window for t in times) / window)
        start += window
    return rates


def stream(url: str, run_id: str, seconds: float) -> None:
    """Open the demo on `run_id` in Chromium with the fake camera and stream for `seconds`."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + [
            f"--use-fake-device-for-media-stream=fps={CAMERA_FPS}", "--use-fake-ui-for-media-stream"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(90_000)
        page.goto(f"{url}/predict?run={run_id}")
        page.get_by_text("Live camera demo").click()
        page.frame_locator("iframe[title*=webrtc]").get_by_role("button", name="Start the camera").click()
        expect(page.get_by_test_id("stHeading").nth(1)).to_be_visible(timeout=90_000)  # the first verdict
        page.wait_for_timeout(seconds * 1000)
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--run-dir", type=Path, help="a finished run to use instead of training one")
    parser.add_argument("--smoke", action="store_true",
                        help="a run on 200 digits at 16 px and two 1-second windows, to see that it runs")
    args = parser.parse_args()
    window, size = (1.0, 16) if args.smoke else (WINDOW_S, 64)
    seconds = 2 * window if args.smoke else args.seconds
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as scratch:
        data = str(digits_folder(Path(scratch) / "digits")) if args.smoke else "builtin:digits"
        run_dir = args.run_dir.resolve() if args.run_dir else train_lite0(Path(scratch) / "runs", size, data)
        log = Path(scratch) / "frames.log"
        os.environ[FPS_LOG_ENV] = str(log)  # streamlit_server passes the environment on
        with streamlit_server(run_dir.parent) as url:
            stream(url, run_dir.name, seconds)
        times = [float(line) for line in log.read_text().split()] if log.exists() else []
    if len(times) < 2:
        raise SystemExit("The demo classified no frames.")
    rates = window_rates(times, times[0] + window, window)
    load = os.getloadavg()[0]
    print(f"frames classified: {len(times)} in {times[-1] - times[0]:.1f} s; per {window:.0f} s window: "
          f"{', '.join(f'{r:.1f}' for r in rates)}; load average {load:.1f} on {os.cpu_count()} cores")
    print(f"demo frames per second: median {statistics.median(rates) if rates else 0:.1f} "
          f"(camera {CAMERA_FPS})")


if __name__ == "__main__":
    main()
