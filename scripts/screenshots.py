"""Screenshots of every page at 1400x1000 for the README: a run on the built-in digits is trained first (in a
private runs and data folder), then Chromium opens each page on it.

    .venv/bin/python scripts/screenshots.py [OUT_DIR]      # default: assets/screens/
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAGES = ["", "data", "fix", "train", "interpret", "layers", "predict", "runs"]


def main(out_dir: Path) -> None:
    from playwright.sync_api import sync_playwright

    from tests.browser_support import launch_chromium, streamlit_server

    work = Path(tempfile.mkdtemp(prefix="screens-"))
    os.environ["STUDIO_DATA_DIR"], os.environ["STUDIO_RUNS_DIR"] = str(work / "data"), str(work / "runs")
    from core.config import TrainConfig
    from core.runs.store import store
    from core.train.run import run_training

    run_dir = store.create_run(TrainConfig(), work / "runs", "digits-64px")
    assert run_training(run_dir) == "completed"
    out_dir.mkdir(parents=True, exist_ok=True)
    with streamlit_server(work / "runs") as url, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        for name in PAGES:
            page.goto(f"{url}/{name}?run={run_dir.name}")
            page.wait_for_selector("[data-testid=stAppViewContainer] h1")
            page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget] button')")
            page.wait_for_timeout(4000)  # charts and images finish drawing
            page.screenshot(path=str(out_dir / f"{name or 'home'}.png"))
            print(f"{out_dir / (name or 'home')}.png", flush=True)
        browser.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "assets" / "screens")
