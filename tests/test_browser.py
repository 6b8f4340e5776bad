"""One real browser: Debian's Chromium, driven by Playwright, against `streamlit run app.py`.

What only a browser shows: a zip dropped on the Data page is checked; a run started from the Train page keeps drawing
its live chart, fills its epoch table, and is still there after a refresh; the analysis pages open on it, and an
uploaded photo gets a heat map.
"""
import io
import zipfile

import pytest
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from core.inspect.attribution import METHODS
from tests.browser_support import launch_chromium, new_page, streamlit_server

pytestmark = pytest.mark.slow  # ./test.sh -m "not slow" leaves these out


@pytest.fixture(scope="module")
def one_server(tmp_path_factory):
    """One `streamlit run app.py` for this file's journeys (its start and first page load are paid once), with a
    data and runs folder of its own."""
    root = tmp_path_factory.mktemp("browser")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STUDIO_DATA_DIR", str(root / "data"))
        with streamlit_server(root / "runs") as url:
            yield url, root / "runs", root / "data"


@pytest.fixture
def server(one_server):
    """The shared server as a new visitor finds it: the settings the journey before saved are gone (each test opens
    a new browser, so a new session that reads them from disk)."""
    (one_server[2] / "settings.json").unlink(missing_ok=True)
    return one_server


def plotted_points(page) -> int:
    """Points in the loss chart's training-loss trace, read from plotly's own data."""
    return page.evaluate("() => { const p = document.querySelector('.js-plotly-plot'); "
                         "return p && p.data ? p.data[0].x.length : 0; }")


def wait_until_still(page, locator, settle_ms: int = 300, tries: int = 40) -> None:
    """Wait until an element's box stops moving, so a click lands where it was aimed."""
    box = None
    for _ in range(tries):
        now = locator.bounding_box()
        if now is not None and now == box:
            return
        box = now
        page.wait_for_timeout(settle_ms)


def test_train_watch_refresh_and_look_inside(server, tmp_path):
    # One journey, as a person clicks through it (longer than 60 lines on purpose): each later step needs the
    # run the earlier ones trained, and a second browser session would train it again.
    url, runs_dir, _ = server
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = new_page(browser, 90_000)
        # bring your own images: drop a zip on the Data page and read its health report
        archive = tmp_path / "pets.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            for label, colour in (("cat", (200, 120, 40)), ("dog", (40, 90, 200))):
                for i in range(6):
                    buffer = io.BytesIO()
                    Image.new("RGB", (24, 24), colour).save(buffer, format="PNG")
                    zf.writestr(f"pets/{label}/{i}.png", buffer.getvalue())
        page.goto(f"{url}/data")
        page.get_by_text("Upload a .zip").click()
        page.locator("input[type=file]").set_input_files(archive)
        expect(page.get_by_text("Ready: 12 images in 2 classes.")).to_be_visible()
        page.get_by_text("Built-in dataset").click()
        expect(page.get_by_text("Ready: 1,797 images in 10 classes.")).to_be_visible()

        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Train").click()
        expect(page.get_by_role("heading", name="Train")).to_be_visible()

        page.get_by_test_id("stSelectbox").filter(has_text="Backbone").click()
        page.get_by_role("option", name="ResNet-18", exact=True).click()
        page.get_by_text("Start from ImageNet weights").click()
        size = page.get_by_test_id("stSlider").filter(has_text="Image size").get_by_role("slider")
        size.focus()
        size.press("Home")
        size.press("ArrowRight")
        size.press("ArrowRight")  # 16 -> 24 -> 32 px
        expect(size).to_have_attribute("aria-valuetext", "32")
        epochs = page.get_by_label("Epochs", exact=True)
        epochs.fill("3")
        epochs.press("Tab")
        page.get_by_role("button", name="Start training").click()

        page.wait_for_url("**run=*")
        run_id = page.url.split("run=")[1].split("&")[0]
        expect(page.get_by_role("heading", name=f"Run {run_id}")).to_be_visible()
        page.wait_for_function("() => { const p = document.querySelector('.js-plotly-plot'); "
                               "return p && p.data && p.data[0].x.length > 0; }")
        early = plotted_points(page)
        # epoch rows arrive while it trains (the curves redraw every 10 s, so one may bring two rows at once)
        expect(page.get_by_test_id("stTable").locator("tbody tr").first).to_be_visible()
        # the chart redraws every few seconds while the run trains: it should grow without a reload
        page.wait_for_function("(early) => { const p = document.querySelector('.js-plotly-plot'); "
                               "return p && p.data && p.data[0].x.length > early; }", arg=early)
        assert plotted_points(page) > early

        page.reload()
        expect(page.get_by_role("heading", name=f"Run {run_id}")).to_be_visible()
        expect(page.get_by_test_id("stTable").locator("tbody tr")).to_have_count(3, timeout=180_000)
        expect(page.get_by_role("heading", name=f"Run {run_id} · completed")).to_be_visible(timeout=60_000)
        assert (runs_dir / run_id / "predictions.npz").exists()

        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Interpret").click()
        expect(page.get_by_role("heading", name="Confusion matrix")).to_be_visible()
        cells = page.locator(".js-plotly-plot").first.locator(".scatterlayer .point")
        expect(cells).to_have_count(100)
        cell = cells.nth(3 * 10 + 8)  # row: actual 3, column: predicted 8
        wait_until_still(page, cell)  # the page may still move the chart as it finishes drawing
        cell.click(force=True)
        expect(page.get_by_text("validation images of 3 predicted as 8")).to_be_visible()
        with page.expect_download() as download:
            page.get_by_role("button", name="Download an HTML report").click()
        report = download.value.path().read_text(encoding="utf-8")
        assert "<h2>Top losses, with Grad-CAM" in report and "Plotly.newPlot" in report
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Layers").click()
        expect(page.get_by_role("heading", name="Layers")).to_be_visible()
        assert f"run={run_id}" in page.url  # the run stays in the address across page switches

        # upload a picture of one's own and ask the model why it sees what it sees
        picture = tmp_path / "my photo.png"
        Image.new("RGB", (300, 200), (250, 250, 250)).save(picture)
        page.get_by_text("Upload my own").click()
        page.locator("input[type=file]").set_input_files(picture)
        expect(page.get_by_text("my photo.png").first).to_be_visible()
        page.get_by_test_id("stRadio").filter(has_text="View").get_by_text("Attributions").click()
        expect(page.get_by_text(METHODS["grad_cam"].explanation)).to_be_visible()
        expect(page.locator(".js-plotly-plot")).to_have_count(1)
        expect(page.get_by_test_id("stException")).to_have_count(0)
        browser.close()


def photos_of(page, name: str) -> int:
    """The running count the Data page shows for a class."""
    import re

    text = page.get_by_text(f"{name}: ").first.inner_text()
    return int(re.search(rf"^{name}: (\d+) image", text, re.M).group(1))


def camera_ready(page) -> None:
    """Wait until the camera widget shows live video: a click before that takes no photo."""
    page.wait_for_function("() => { const v = document.querySelector('video'); "
                           "return v && v.readyState >= 2 && v.videoWidth > 0; }")
    page.wait_for_timeout(300)


def test_a_dataset_from_camera_photos_trains_and_predicts(server):
    """Teachable Machine's path: two classes of camera photos (Chromium's fake camera), one click a photo,
    then training, then a prediction on a new photo."""
    url, runs_dir, data_dir = server
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, camera=True)
        page = new_page(browser, 90_000)
        page.goto(f"{url}/data")
        page.get_by_text("Make my own").click()
        page.get_by_label("Name").fill("camera toys")
        page.get_by_role("button", name="Create").click()
        for name in ("left", "right"):
            page.get_by_placeholder("cat").fill(name)
            page.get_by_role("button", name="Add a class").click()
            expect(page.get_by_text(f"{name}: 0 images")).to_be_visible()
        page.get_by_text("Use the camera").click()
        for name in ("left", "right"):
            page.get_by_test_id("stRadio").filter(has_text="Add images to").get_by_text(name, exact=True).click()
            while photos_of(page, name) < 5:
                before = photos_of(page, name)
                camera_ready(page)
                page.get_by_role("button", name="Take Photo").click()  # one click, one photo
                for _ in range(50):  # a click while the camera restarts after a save takes no photo: try again
                    if photos_of(page, name) > before:
                        break
                    page.wait_for_timeout(200)
            assert photos_of(page, name) == 5
        expect(page.get_by_text("Ready: 10 images in 2 classes")).to_be_visible()  # perhaps with notes
        assert len(list((data_dir / "made" / "camera-toys" / "left").iterdir())) == 5

        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Train").click()
        page.get_by_test_id("stSelectbox").filter(has_text="Backbone").click()
        page.get_by_role("option", name="ResNet-18", exact=True).click()
        page.get_by_text("Start from ImageNet weights").click()
        page.get_by_role("button", name="Start training").click()
        page.wait_for_url("**run=*")
        run_id = page.url.split("run=")[1].split("&")[0]
        expect(page.get_by_role("heading", name=f"Run {run_id} · completed")).to_be_visible(timeout=180_000)

        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Predict").click()
        page.get_by_text("Use the camera").click()
        camera_ready(page)
        page.get_by_role("button", name="Take Photo").click()
        expect(page.locator(".js-plotly-plot")).to_have_count(1)
        title = page.locator(".js-plotly-plot .gtitle").text_content()
        assert title.split(" (")[0] in ("left", "right")
        expect(page.get_by_test_id("stException")).to_have_count(0)
        browser.close()
