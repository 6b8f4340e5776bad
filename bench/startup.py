"""Start-up and page switches of the dashboard in a real browser, and the app's peak memory.

    .venv/bin/python -m bench.startup [--switches 12]   # targets: first page < 3 s, a page switch < 0.5 s
    .venv/bin/python -m bench.startup --smoke           # CI: one start, one switch

Chromium is started first (not timed); the clock starts when `streamlit run app.py` is launched and stops when
the Home page's heading is visible in the browser. A switch is timed from a click on a sidebar link to the new
page's heading (bench.page_switch's measure); the first visit to each page is reported apart, since it loads
what the page needs once. Peak resident memory of the server is read from /proc at the end.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from playwright.sync_api import expect, sync_playwright

from bench.common import ROOT, peak_rss_mb
from bench.page_switch import PAGES, time_switches
from tests.browser_support import free_port, launch_chromium


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--switches", type=int, default=12)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.switches = 1
    with tempfile.TemporaryDirectory() as runs_dir, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        port = free_port()
        url = f"http://localhost:{port}"
        started = time.perf_counter()
        server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                                   "--server.headless", "true"], cwd=ROOT,
                                  env={**os.environ, "STUDIO_RUNS_DIR": runs_dir},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            while True:
                try:
                    urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
                    break
                except OSError:
                    if server.poll() is not None or time.perf_counter() - started > 60:
                        raise SystemExit("streamlit did not start") from None
                    time.sleep(0.05)
            listening = time.perf_counter() - started
            page.goto(url)
            expect(page.get_by_role("heading", name="Transfer Learning Studio")).to_be_visible(timeout=60_000)
            first_page = time.perf_counter() - started
            expect(page.get_by_text("Device ·")).to_be_visible(timeout=60_000)  # the sidebar's last line
            complete = time.perf_counter() - started
            first_visits = time_switches(page, len(PAGES))
            switches = time_switches(page, args.switches)
            memory = peak_rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=20)
            browser.close()
    every = [t for ts in switches.values() for t in ts]
    print(f"streamlit run -> server answering: {listening:.2f} s; -> Home page rendered: {first_page:.2f} s "
          f"({first_page / 3:.2f} of the 3 s target); sidebar complete (device found): {complete:.2f} s")
    print("first visit: " + ", ".join(f"{link} {ts[0] * 1000:.0f} ms" for link, ts in first_visits.items()))
    print(f"page switch: median {statistics.median(every) * 1000:.0f} ms over {len(every)} switches "
          f"(max {max(every) * 1000:.0f} ms; {statistics.median(every) / 0.5:.2f} of the 0.5 s target)")
    print(f"app server peak RSS {memory:.0f} MB")


if __name__ == "__main__":
    main()
