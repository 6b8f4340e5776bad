"""Page-switch latency in a real browser, idle and while a run trains on the same CPU; prints the ratio.

    .venv/bin/python -m bench.page_switch [--switches 12]

A switch is timed from the click on a sidebar link to the new page's heading being visible. The training run
is the app's default (EfficientNet-Lite0, 64 px), started as its own process like the Train page does.
"""
from __future__ import annotations

import argparse
import statistics
import time

from playwright.sync_api import expect, sync_playwright

from bench.common import scratch
from core.config import TrainConfig
from core.runs import store
from core.runs.folder import RunFolder
from tests.browser_support import launch_chromium, streamlit_server

PAGES = [("Data", "Data"), ("Home", "Transfer Learning Studio"), ("Train", "Train")]


def time_switches(page, count: int) -> dict[str, list[float]]:
    """Seconds from a click on each sidebar link to its page's heading, per page."""
    times: dict[str, list[float]] = {link: [] for link, _ in PAGES}
    for i in range(count):
        link, heading = PAGES[i % len(PAGES)]
        started = time.perf_counter()
        page.get_by_test_id("stSidebarNav").get_by_role("link", name=link).click()
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible(timeout=30_000)
        times[link].append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--switches", type=int, default=12)
    args = parser.parse_args()
    with scratch("bench-runs-") as runs_dir:
        with streamlit_server(runs_dir) as url, sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            expect(page.get_by_role("heading", name="Transfer Learning Studio")).to_be_visible(timeout=60_000)
            time_switches(page, len(PAGES))  # warm the caches (dataset decode, imports)
            idle = time_switches(page, args.switches)

            run_dir = store.create_run(TrainConfig(epochs=30), runs_dir, "bench")
            process = store.launch(run_dir)
            while RunFolder(run_dir).status().get("state") != "running" or not RunFolder(run_dir).read_metrics().steps:
                time.sleep(0.5)
            page.goto(f"{url}/train?run=bench")
            expect(page.get_by_role("heading", name="Run bench · running")).to_be_visible(timeout=30_000)
            busy = time_switches(page, args.switches)
            steps = len(RunFolder(run_dir).read_metrics().steps)
            RunFolder(run_dir).request_stop()
            process.wait(timeout=120)
            browser.close()
        for link, _ in PAGES:
            print(f"to {link:6} idle median {statistics.median(idle[link]) * 1000:5.0f} ms, "
                  f"while training median {statistics.median(busy[link]) * 1000:5.0f} ms "
                  f"(max {max(busy[link]) * 1000:.0f} ms)")
        idle_all = [t for ts in idle.values() for t in ts]
        busy_all = [t for ts in busy.values() for t in ts]
        print(f"all switches: idle median {statistics.median(idle_all) * 1000:.0f} ms, while training median "
              f"{statistics.median(busy_all) * 1000:.0f} ms; "
              f"ratio {statistics.median(busy_all) / statistics.median(idle_all):.2f}"
              f" ({steps} training steps meanwhile)")


if __name__ == "__main__":
    main()
