"""Predictions you can trust on the Predict page (AppTest): calibrated probabilities for a digit, "Not one of the
10 classes" for a photo, test-time augmentation, and older runs without a calibration; and the live camera demo in
Chromium, whose fake camera plays a video of two digits."""
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from playwright.sync_api import expect, sync_playwright
from sklearn.datasets import load_digits, load_sample_images

from core.data.images import decode_image, fit_square, resize_uint8
from core.inspect.attribution import top_predictions
from core.runs.checkpoint import load_model
from core.ship.predict import Predictor
from tests.browser_support import CHROMIUM, CHROMIUM_ARGS, streamlit_server
from tests.test_broken_runs import copy_run
from tests.test_pages import by_label, open_page


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def digit_pixels(index: int) -> np.ndarray:
    """(8, 8) uint8: a digit as the built-in dataset draws it, white on black."""
    return np.rint(load_digits().images[index] * (255.0 / 16.0)).astype(np.uint8)


DIGIT_THREE = 3  # load_digits().target[3] == 3


def flower_crop() -> bytes:
    """A 200×200 corner of scikit-learn's flower photo: nothing like a handwritten digit."""
    return png(load_sample_images().images[1][:200, :200])


def bars(app) -> list[dict]:
    """Each plotly chart's title and bars (classes and probabilities, most probable first)."""
    found = []
    for chart in app.get("plotly_chart"):
        figure = json.loads(chart.proto.spec)
        bar = figure["data"][0]
        found.append({"title": figure["layout"]["title"]["text"], "classes": bar["y"][::-1],
                      "probs": bar["x"][::-1], "colour": bar.get("marker", {}).get("color")})
    return found


def upload(app, *files: tuple[str, bytes]):
    app.file_uploader[0].set_value([(name, data, "image/png") for name, data in files]).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def test_a_digit_gets_its_class_with_calibrated_probabilities_and_tta_steadies_them(runs_env, trained_run):
    predictor = Predictor.from_run(trained_run)
    three = png(digit_pixels(DIGIT_THREE))
    app = upload(open_page("pages/predict.py"), ("three.png", three))
    [shown] = bars(app)
    expected = predictor.data(three, top=5)
    assert shown["classes"][0] == "3" and not expected.unknown and not app.subheader
    assert shown["classes"] == [name for name, _ in expected.top]
    assert shown["probs"] == pytest.approx([p for _, p in expected.top], abs=1e-6)
    assert shown["title"] == f"3 ({expected.top[0][1]:.1%})"
    # calibrated, not the model's own softmax: the run's temperature moved every probability
    model, class_names, config = load_model(trained_run)
    with torch.no_grad():
        raw = dict(top_predictions(model, decode_image(three, config.size, config.resize), class_names, k=5))
    assert predictor.trusted.temperature.item() != 1.0
    assert all(abs(raw[name] - p) > 1e-7 for name, p in expected.top)

    by_label(app.toggle, "Test-time augmentation").set_value(True).run()
    [steadied] = bars(app)
    with_tta = predictor.data(three, top=5, tta=True)
    assert steadied["probs"] == pytest.approx([p for _, p in with_tta.top], abs=1e-6)
    assert steadied["probs"] != pytest.approx(shown["probs"], abs=1e-6)


def test_a_photo_is_not_one_of_the_ten_classes_with_the_closest_in_small_print(runs_env, trained_run):
    photo = flower_crop()
    expected = Predictor.from_run(trained_run).data(photo, top=5)
    assert expected.unknown  # the run's own verdict, before the page shows it
    app = upload(open_page("pages/predict.py"), ("flower.png", photo), ("three.png", png(digit_pixels(DIGIT_THREE))))
    assert [h.value for h in app.subheader] == ["Not one of the 10 classes"]  # the flower only
    flower, three = bars(app)
    closest, p = expected.top[0]
    assert flower["title"] == f"{closest} ({p:.1%}) is the closest" and flower["colour"] == "#9e9e9e"
    assert three["title"].startswith("3 (") and three["colour"] is None


def test_a_run_trained_before_calibration_says_so_and_still_predicts(trained_run, tmp_path, monkeypatch):
    runs_dir = tmp_path / "runs"
    old = copy_run(trained_run, runs_dir, "old", link=True)
    (old / "trust.npz").unlink()  # a hard link: the shared run keeps its own
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(runs_dir))
    app = open_page("pages/predict.py", run_id="old")
    assert any("trained before this app calibrated its runs" in i.value for i in app.info)
    assert "Test-time augmentation" not in [t.label for t in app.toggle]
    three = png(digit_pixels(DIGIT_THREE))
    [shown] = bars(upload(app, ("three.png", three)))
    model, class_names, config = load_model(old)
    with torch.no_grad():
        raw = top_predictions(model, decode_image(three, config.size, config.resize), class_names, k=5)
    assert shown["classes"] == [name for name, _ in raw] and shown["classes"][0] == "3"
    assert shown["probs"] == pytest.approx([p for _, p in raw], abs=1e-6)


# ---- the live demo, in a real browser -------------------------------------------------------------------------

FRAME = 240  # the fake camera's video: square frames of this side, ten a second, two seconds of each digit
SECONDS_EACH = 2


def video_pixels(index: int) -> np.ndarray:
    """(FRAME, FRAME) uint8: a digit enlarged smoothly, as the dataset enlarges its 8×8 images."""
    pixels = torch.from_numpy(digit_pixels(index))[None, None]
    return resize_uint8(pixels, FRAME)[0, 0].numpy()


def confident_digits(predictor: Predictor, count: int = 2) -> list[tuple[int, str]]:
    """(dataset index, class) of the first digits of different classes that the run names surely and does not call
    unknown, as the demo sees them: the video frame made square at the run's size."""
    found, classes = [], set()
    for index in range(200):
        square = np.asarray(fit_square(Image.fromarray(video_pixels(index)).convert("RGB"), predictor.size,
                                 predictor.resize))
        [prediction] = predictor.pixels(torch.from_numpy(square.copy()).permute(2, 0, 1)[None], top=1)
        name, p = prediction.top[0]
        if p > 0.97 and not prediction.unknown and prediction.score < 0.5 * predictor.trusted.threshold \
                and name == str(load_digits().target[index]) and name not in classes:
            found.append((index, name))
            classes.add(name)
        if len(found) == count:
            return found
    raise AssertionError("the run names fewer than two digits surely")


def write_y4m(path, frames: list[np.ndarray], fps: int = 10) -> None:
    """A YUV4MPEG2 video of grey (H, W) uint8 frames, as Chromium's fake camera plays it (4:2:0, full range)."""
    height, width = frames[0].shape
    grey_chroma = np.full((height // 2) * (width // 2), 128, np.uint8).tobytes()
    with open(path, "wb") as video:
        video.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            video.write(b"FRAME\n" + frame.tobytes() + grey_chroma + grey_chroma)


@pytest.mark.slow
def test_the_live_demo_names_the_digits_the_camera_shows_as_they_change(trained_run, tmp_path):
    (first, first_class), (second, second_class) = confident_digits(Predictor.from_run(trained_run))
    video = tmp_path / "digits.y4m"
    write_y4m(video, [video_pixels(first)] * (10 * SECONDS_EACH) + [video_pixels(second)] * (10 * SECONDS_EACH))
    with streamlit_server(trained_run.parent) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + [
            "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={video}"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(90_000)
        expect.set_options(timeout=90_000)
        page.goto(f"{url}/predict?run={trained_run.name}")
        page.get_by_text("Live camera demo").click()
        page.frame_locator("iframe[title*=webrtc]").get_by_role("button", name="Start the camera").click()
        verdict = page.get_by_test_id("stHeading").nth(1)  # under the video; the first heading is the page's
        expect(verdict).to_be_visible()
        seen = []
        for _ in range(240):  # the video loops every four seconds; the verdict is read back twice a second
            text = verdict.inner_text().replace("\u2060", "")
            if not seen or seen[-1] != text:
                seen.append(text)
            if {first_class, second_class} <= {t.split(" · ")[0] for t in seen} and len(seen) >= 3:
                break
            page.wait_for_timeout(250)
        names = [t.split(" · ")[0] for t in seen]
        assert first_class in names and second_class in names, seen
        assert all(t.endswith("%") for t in seen), seen  # "3 · 99%": a class and its calibrated probability
        expect(page.get_by_test_id("stException")).to_have_count(0)
        browser.close()


def test_a_damaged_calibration_is_a_sentence_and_the_run_still_predicts(trained_run, tmp_path, monkeypatch):
    runs_dir = tmp_path / "runs"
    run = copy_run(trained_run, runs_dir, "damaged", link=True)
    (run / "trust.npz").unlink()
    (run / "trust.npz").write_bytes(b"not a calibration")
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(runs_dir))
    app = upload(open_page("pages/predict.py", run_id="damaged"), ("three.png", png(digit_pixels(DIGIT_THREE))))
    assert any("trust.npz is damaged" in w.value and "without calibration" in w.value for w in app.warning)
    [shown] = bars(app)
    assert shown["classes"][0] == "3"
