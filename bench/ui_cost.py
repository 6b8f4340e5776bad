"""What watching a run in the dashboard costs the training: images/s with the Train page open and polling,
against the same run headless, alternating, on the same machine.

    .venv/bin/python -m bench.ui_cost [--repeats 2 --epochs 3]   # target: ratio >= 0.95
    .venv/bin/python -m bench.ui_cost --smoke                    # CI: one tiny pair

Each run is what the Train page starts (`python -m core.train --run-dir`, its own process): pretrained
EfficientNet-Lite0 at 64 px, batch 64, every layer training (no frozen epochs, so every step is the same work).
With the dashboard, Chromium shows /train?run=ID for the whole run: its status line redraws every 2 s and its
curves every 10 s (pages/train.py). Images/s is training images over the epochs' seconds (validation included).
Reports the training process's and the app server's peak resident memory.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from bench.common import digits_folder, peak_rss_mb, scratch
from core.config import TrainConfig
from core.runs import store
from core.runs.folder import RunFolder
from tests.browser_support import launch_chromium, streamlit_server


def cpu_seconds(match: bytes) -> float:
    """User + system CPU seconds so far of every process whose command line contains `match`."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if match in Path(f"/proc/{pid}/cmdline").read_bytes():
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError):
            pass
    return total


def train(config: TrainConfig, runs_dir: Path, name: str, page=None, url: str = "") -> tuple[float, float, float]:
    """(training images/s over the whole run, the same after its first epoch, peak RSS MB) of one run, watched
    in `page` when given."""
    if page is not None:  # the Train page is open before the run starts, as when its Start button is pressed
        page.goto(f"{url}/train")
        expect(page.get_by_role("heading", name="Train", exact=True)).to_be_visible(timeout=60_000)
    run_dir = store.create_run(config, runs_dir, name)
    process = store.launch(run_dir)
    if page is not None:
        page.goto(f"{url}/train?run={run_dir.name}")
        expect(page.get_by_role("heading", name=f"Run {run_dir.name}", exact=False)).to_be_visible(timeout=60_000)
    rss = 0.0
    while RunFolder(run_dir).status().get("state") in ("queued", "running", "stopping"):
        try:  # the high-water mark, read until the process is gone (core.runs.store reaps it)
            rss = max(rss, peak_rss_mb(process.pid))
        except OSError:
            pass
        time.sleep(0.5)
    if page is not None:  # the page saw the run to its end
        expect(page.get_by_role("heading", name=f"Run {run_dir.name} · completed")).to_be_visible(timeout=30_000)
    state = RunFolder(run_dir).status()
    if state.get("state") != "completed":
        raise SystemExit(f"run {run_dir.name} ended {state.get('state')}: {state.get('message')}")
    epochs = RunFolder(run_dir).read_metrics().epochs
    images = epochs[0]["step"] * config.bs  # per epoch
    steady = epochs[1:] or epochs  # after the first epoch, during which the page itself loads
    return (images * len(epochs) / sum(row["seconds"] for row in epochs),
            images * len(steady) / sum(row["seconds"] for row in steady), rss)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="one pair of one-epoch runs on 200 digits at 16 px")
    args = parser.parse_args()
    with scratch("bench-ui-") as runs_dir:
        config = TrainConfig(epochs=args.epochs, freeze_epochs=0, size=64, bs=64)
        if args.smoke:  # 200 digits at 16 px; their folder has no config.json, so the app lists it among no runs
            digits = digits_folder(runs_dir / "digits")
            args.repeats, config = 1, TrainConfig(data=str(digits), epochs=1, freeze_epochs=0, size=16, bs=64)
        headless, watched, memory, ui_load = [], [], [], []
        with streamlit_server(runs_dir) as url, sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            for i in range(args.repeats):
                page.goto("about:blank")  # nothing polls during the headless run
                *speeds, rss = train(config, runs_dir, f"headless-{i}")
                headless.append(speeds)
                before = cpu_seconds(b"streamlit"), cpu_seconds(b"chromium")
                started = time.perf_counter()
                *speeds, rss = train(config, runs_dir, f"watched-{i}", page, url)
                elapsed = time.perf_counter() - started
                watched.append(speeds)
                ui_load.append(((cpu_seconds(b"streamlit") - before[0]) / elapsed,
                                (cpu_seconds(b"chromium") - before[1]) / elapsed))
                memory.append(rss)
                time.sleep(1)
            server_pid = next((int(p) for p in os.listdir("/proc") if p.isdigit() and _is_server(int(p), runs_dir)),
                              None)
            app_memory = peak_rss_mb(server_pid) if server_pid else float("nan")
            browser.close()
    print(f"EfficientNet-Lite0, {config.size} px, batch {config.bs}, {config.epochs} epochs a run; training images/s")
    for label, k in (("whole run, the page loading during epoch 1", 0), ("after epoch 1, the page polling", 1)):
        alone, seen = (statistics.median(v[k] for v in values) for values in (headless, watched))
        print(f"  {label:42} headless {alone:6.1f}, watched {seen:6.1f}: ratio {seen / alone:.3f}")
    steady = statistics.median(v[1] for v in watched) / statistics.median(v[1] for v in headless)
    print(f"watched / headless while polling: {steady:.3f} (target >= 0.95)")
    server, chromium = (statistics.median(load[k] for load in ui_load) for k in (0, 1))
    print(f"while watching, the dashboard used {server:.2f} cores in the app server and {chromium:.2f} in Chromium")
    print(f"training process peak RSS {max(memory):.0f} MB; app server peak RSS {app_memory:.0f} MB")


def _is_server(pid: int, runs_dir: Path) -> bool:
    """Whether `pid` is the streamlit server serving `runs_dir` (its environment names the folder)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"streamlit" in cmdline and f"STUDIO_RUNS_DIR={runs_dir}".encode() in environ


if __name__ == "__main__":
    main()
