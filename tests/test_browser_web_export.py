"""The exported web page, unzipped and opened by double-click (file://) in Chromium with no network and no server:
it agrees with core.predict on validation images, says "Not one of the N classes", and runs the camera."""
import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from core.data.load import Split, load_source
from core.runs.folder import RunFolder
from core.ship.export import zip_export
from core.ship.predict import Predictor
from tests.browser_support import launch_chromium

pytestmark = pytest.mark.slow


def offline_page(browser, asked: list[str]):
    """A page in an offline context that refuses, and notes, every request that is not for a file."""
    context = browser.new_context(offline=True)
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("file:", "data:", "blob:"))
                  else (asked.append(route.request.url), route.abort()))
    page = context.new_page()
    page.set_default_timeout(90_000)
    return page


def answer(page, path, count: int) -> dict:
    """Choose `path` in the page and wait for its answer (the page's count-th)."""
    page.set_input_files("#file", str(path))
    page.wait_for_function("n => (window.__timing.count || 0) >= n", arg=count)
    return {"top1": page.inner_text("#top1"), "verdict": page.inner_text("#verdict"),
            **page.evaluate("window.__lastResult")}


def test_the_unzipped_web_page_agrees_with_the_app_offline_and_runs_the_camera(exported, tmp_path):
    from playwright.sync_api import sync_playwright

    run_dir, _ = exported
    with zipfile.ZipFile(io.BytesIO(zip_export(run_dir))) as archive:
        archive.extractall(tmp_path / "unzipped")
    page_url = (tmp_path / "unzipped" / run_dir.name / "web" / "index.html").as_uri()
    config = RunFolder(run_dir).config()
    valid = Split.from_dataset(load_source(config.data, config.size), config.valid_pct, config.seed).valid_images
    files = []
    for i in range(0, len(valid), len(valid) // 12)[:12]:  # PNGs at the run's size: the page draws them unscaled
        files.append(tmp_path / f"valid{i}.png")
        Image.fromarray(valid[i].permute(1, 2, 0).numpy()).save(files[-1])
    files.append(tmp_path / "noise.png")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (config.size, config.size, 3), dtype=np.uint8)).save(files[-1])
    predictor = Predictor.from_run(run_dir)
    expected = [predictor.file(path, top=len(predictor.class_names)) for path in files]
    assert expected[-1].unknown and not all(e.unknown for e in expected[:-1])  # noise is no digit

    asked = []
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, camera=True)
        page = offline_page(browser, asked)
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(page_url)
        for count, (path, app) in enumerate(zip(files, expected), start=1):
            shown = answer(page, path, count)
            assert shown["top1"] == app.top[0][0], path.name
            by_name = dict(zip(predictor.class_names, shown["probabilities"]))
            assert max(abs(by_name[name] - p) for name, p in app.top) < 1e-4, path.name
            assert shown["unknown"] == app.unknown
            assert shown["verdict"] == (f"Not one of the {len(predictor.class_names)} classes" if app.unknown else "")
        assert page.locator("#top3 li").count() == 3
        timing = page.evaluate("window.__timing")
        page.click("#camera")  # the fake camera's frames
        page.wait_for_function("n => window.__timing.count > n", arg=timing["count"] + 2)
        assert page.inner_text("#camera") == "Stop camera" and page.inner_text("#top1") in predictor.class_names
        page.click("#camera")
        browser.close()
    assert not asked and not errors, (asked, errors)
    print(f"web page: first answer {timing['first'] - timing['start']:.0f} ms after its script started")
