"""Stop and Resume in a real browser (issue 11, point 4): the stop message, the progress bar and the epoch table
name the same epoch and accuracy, and the run's duration leaves out the time it spent stopped."""
import re
import time

import pytest
from playwright.sync_api import expect, sync_playwright

from core.runs import store
from core.runs.folder import RunFolder
from tests.browser_support import launch_chromium, new_page
from tests.waiting import RunWatch

pytestmark = pytest.mark.slow  # ./test.sh -m "not slow" leaves these out

PAUSE_S = 6.0  # stopped this long before Resume


def test_stop_and_resume_agree_and_the_time_stopped_is_not_counted(server):
    url, runs_dir = server
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = new_page(browser, 60_000)
        page.goto(f"{url}/train")  # the defaults (digits, 64 px) with two epochs after the five frozen ones
        epochs = page.get_by_label("Epochs", exact=True)
        epochs.fill("2")
        epochs.press("Tab")
        page.wait_for_timeout(500)
        page.get_by_role("button", name="Start training").click()
        page.wait_for_url("**run=*")
        run_id = page.url.split("run=")[1].split("&")[0]
        watch = RunWatch(RunFolder(runs_dir / run_id))  # fails only if the run stops moving, not if it is slow
        while (status := watch.status()).get("epoch", 0) < 6 or status.get("step", 0) % 22 < 5:  # inside epoch 7
            assert status.get("state") != "completed", status
            time.sleep(0.2)
        page.get_by_role("button", name="Stop").click()
        watch.wait_for("stopped")
        expect(page.get_by_role("heading", name=f"Run {run_id} · stopped")).to_be_visible()

        message = page.get_by_text(re.compile(r"^Stopped at epoch")).first.inner_text().replace("\u2060", "")
        stopped = re.search(r"Stopped at epoch (\d+) of (\d+), step (\d+) of (\d+);.*Last finished: epoch (\d+), "
                            r"validation accuracy ([\d.]+)%", message)
        assert stopped, message
        epoch, total, step, steps, finished, accuracy = stopped.groups()
        bar = page.get_by_test_id("stProgress").first.inner_text()
        assert f"epoch {epoch}/{total}" in bar and f"step {step}/{steps}" in bar, (bar, message)
        rows = page.get_by_test_id("stTable").locator("tbody tr")
        expect(rows).to_have_count(int(finished))
        last = rows.last.inner_text().split()
        assert last[0] == finished == str(int(epoch) - 1)
        assert f"{float(last[4]):.1%}" == f"{accuracy}%", (last, message)

        page.wait_for_timeout(PAUSE_S * 1000)
        page.get_by_role("button", name="Resume").click()
        status = watch.wait_for("completed")
        expect(page.get_by_role("heading", name=f"Run {run_id} · completed")).to_be_visible()
        browser.close()
    # the Runs page's duration (RunSummary.seconds, tests/test_runs.py) is the time spent running, not the pause
    assert status["active_s"] < status["finished"] - status["started"] - PAUSE_S
    assert store.summarize(runs_dir / run_id).seconds == pytest.approx(status["active_s"])
