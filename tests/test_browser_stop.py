"""Stop and Resume in a real browser (issue 11, point 4): the stop message, the progress bar and the epoch table
name the same epoch and accuracy, and the run's duration, and the duration of the epoch it stopped in, leave out the
time it spent stopped. (The time left after a resume: tests/test_progress.py, from what the run measured before.)"""
import re
import time

import pytest
from playwright.sync_api import expect, sync_playwright

from core.runs import store
from core.runs.folder import RunFolder
from tests.browser_support import launch_chromium, new_page
from tests.waiting import RunWatch

pytestmark = pytest.mark.slow  # ./test.sh -m "not slow" leaves these out

PAUSE_S = 4.0  # stopped this long before Resume


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
        bar, readings = page.get_by_test_id("stProgress"), []  # (when, what the bar said) until the Stop
        while (status := watch.status()).get("epoch", 0) < 6 or status.get("step", 0) % 22 < 5:  # inside epoch 7
            assert status.get("state") != "completed", status
            if bar.count() and (not readings or time.time() - readings[-1][0] >= 1.0):
                readings.append((time.time(), bar.first.inner_text()))
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
        # the table's 4 decimals and the message's 1 decimal round the same accuracy (0.9025 and 90.3%, say)
        assert abs(float(last[4]) * 100 - float(accuracy)) <= 0.05 + 0.005, (last, message)

        at_stop = RunFolder(runs_dir / run_id).status()
        page.wait_for_timeout(PAUSE_S * 1000)
        page.get_by_role("button", name="Resume").click()
        status = watch.wait_for("completed")
        expect(page.get_by_role("heading", name=f"Run {run_id} · completed")).to_be_visible()
        browser.close()
    # the Runs page's duration (RunSummary.seconds, tests/test_runs.py) is the time spent running, not the pause
    assert at_stop["active_s"] < status["active_s"] < status["finished"] - status["started"] - PAUSE_S
    assert store.summarize(runs_dir / run_id).seconds == pytest.approx(status["active_s"])
    time_left_said(readings, at_stop["finished"])
    # the epoch it stopped in counts its time before the stop and after the resume, not the pause
    interrupted = RunFolder(runs_dir / run_id).read_metrics().epochs[int(finished)]
    assert at_stop["epoch_s_at_stop"] < interrupted["seconds"] < status["finished"] - status["started"] - PAUSE_S


def seconds_left(text: str) -> float | None:
    found = re.search(r"(\d+):(\d\d) left", text)
    return int(found.group(1)) * 60 + int(found.group(2)) if found else None


def time_left_said(readings: list[tuple[float, str]], stopped_at: float) -> None:
    """Before the Stop, the bar says a time left, and never "00:00 left" while the run went on for more than 5 s
    (issue 11, point 3: the full bar sat at "00:35 left"; the 1.5x bound on its value is checked heartbeat by
    heartbeat on the same recipe in tests/test_progress.py)."""
    told = [(when, seconds_left(text)) for when, text in readings if seconds_left(text) is not None]
    assert told, readings
    assert not [(when, left) for when, left in told if left == 0 and stopped_at - when > 5], (stopped_at, told)
