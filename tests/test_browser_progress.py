"""The progress bar in a real browser (issue 11, point 3): a run started from the Train page says how long it has
left, and from a quarter of the way on that is within 1.5x of the time that actually remained."""
import re
import time

import pytest
from playwright.sync_api import expect, sync_playwright

from core.runs.folder import RunFolder
from tests.browser_support import launch_chromium
from tests.waiting import RunWatch

pytestmark = pytest.mark.slow  # ./test.sh -m "not slow" leaves these out

RATIO = 1.5  # the bound


def seconds_left(text: str) -> float | None:
    found = re.search(r"(\d+):(\d\d) left", text)
    return int(found.group(1)) * 60 + int(found.group(2)) if found else None


def test_the_time_left_at_a_quarter_of_a_run_is_within_the_bound(server):
    # The default settings (EfficientNet-Lite0, 64 px, the digits) but four unfrozen epochs: five frozen epochs on
    # cached features, then the unfrozen ones at ~100x the cost a step; about 35 s on two CPU cores.
    url, runs_dir = server
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(f"{url}/train")
        epochs = page.get_by_label("Epochs", exact=True)
        epochs.fill("4")
        epochs.press("Tab")
        page.wait_for_timeout(500)  # the setting applies on the rerun its change starts
        page.get_by_role("button", name="Start training").click()
        page.wait_for_url("**run=*")
        run_id = page.url.split("run=")[1].split("&")[0]
        bar = page.get_by_test_id("stProgress")
        readings = []  # (when, what the bar said)
        watch = RunWatch(RunFolder(runs_dir / run_id))  # fails only if the run stops moving, not if it is slow
        while watch.status().get("state") in ("queued", "running", "stopping", None):
            if bar.count():
                readings.append((time.time(), bar.first.inner_text()))
            page.wait_for_timeout(1000)
        status = RunFolder(runs_dir / run_id).status()
        assert status["state"] == "completed" and status["total_epochs"] == 9, status
        expect(page.get_by_role("heading", name=f"Run {run_id} · completed")).to_be_visible()
        browser.close()
    began, finished = status["started"], status["finished"]
    quarter = [(when, seconds_left(text)) for when, text in readings
               if 0.2 <= (when - began) / (finished - began) <= 0.4 and seconds_left(text) is not None]
    assert quarter, readings
    for when, left in quarter:
        assert 1 / RATIO <= left / (finished - when) <= RATIO, \
            (left, finished - when, [(round(when - began, 1), text) for when, text in readings])
    # never the cached phase's speed alone with nothing left ("70072 images/s · 00:00 left")
    assert not [text for when, text in readings if finished - when > 5 and "00:00 left" in text]
