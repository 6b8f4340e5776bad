"""Quick presses on the Train page's size slider in a real browser: how many end with the size shown but not saved,
on a quiet machine and beside another training (issue 21: one lost press in 16 tries there, before the fix).

    .venv/bin/python -m bench.slider_presses [--tries 16]

Each try moves to another page and back, flips "Start from ImageNet weights" (a rerun starts), then presses Home
and 3 to 6 right arrows at once, as a person does; a press is lost when, once the page is idle, the settings file
(what the next Start and the next session use) holds another size than the slider shows.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from bench.common import a_training_beside, scratch
from tests.browser_support import launch_chromium, streamlit_server

SIZES = [16, 24, 32, 48, 64, 96, 128]


def saved_size(settings: Path) -> int | None:
    try:
        return json.loads(settings.read_text())["settings"].get("size")
    except (OSError, ValueError, KeyError):
        return None


def lost_presses(tries: int) -> int:
    """Tries whose last press the app did not keep, on a fresh server and data folder."""
    with scratch("bench-presses-") as folder:
        os.environ["STUDIO_DATA_DIR"] = str(folder / "data")
        settings, lost = folder / "data" / "settings.json", 0
        with sync_playwright() as playwright, streamlit_server(folder / "runs") as url:
            browser = launch_chromium(playwright)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            expect.set_options(timeout=60_000)
            page.goto(f"{url}/train")
            size = page.get_by_test_id("stSlider").filter(has_text="Image size").get_by_role("slider")
            nav = page.get_by_test_id("stSidebarNav")
            for i in range(tries):
                presses = 3 + i % 4
                nav.get_by_role("link", name="Data").click()
                expect(page.get_by_text("Make images square by")).to_be_visible()
                nav.get_by_role("link", name="Train").click()
                expect(page.get_by_text("to start and decode the images")).to_be_visible()
                page.get_by_text("Start from ImageNet weights").click()
                size.focus()
                size.press("Home")
                for _ in range(presses):
                    size.press("ArrowRight")
                deadline = time.time() + 30
                while time.time() < deadline and saved_size(settings) != SIZES[presses]:
                    time.sleep(0.2)
                expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)  # no script run left to save
                shown, saved = size.get_attribute("aria-valuetext"), saved_size(settings)
                if str(saved) != shown:
                    lost += 1
                    print(f"try {i}: the slider shows {shown} px, the settings hold {saved} px", flush=True)
            browser.close()
        return lost


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tries", type=int, default=16)
    args = parser.parse_args()
    quiet = lost_presses(args.tries)
    with a_training_beside():
        busy = lost_presses(args.tries)
    print(f"presses lost: {quiet} of {args.tries} tries on a quiet machine, {busy} of {args.tries} beside a training")


if __name__ == "__main__":
    main()
