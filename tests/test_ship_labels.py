"""A run of label sets leaves the app (issue 27): `python -m core.ship.predict --json` and `core.ship.serve` answer each
image's "labels" (those at or above the run's thresholds) beside "top" (every label) and "unknown"; the exports carry
the thresholds and return label sets that agree with the app's, checked by their verification; the Predict page and
the exported web page name the labels found. The run: tests.mosaics' digit mosaics (conftest's multilabel_run)."""
import contextlib
import io
import json
import zipfile

import numpy as np
import onnxruntime
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from core.data.load import Split, load_source
from core.runs.folder import RunFolder
from core.runs.labelsets import thresholds
from core.ship.export import describe, zip_export
from core.ship.predict import Predictor
from tests.browser_support import launch_chromium
from tests.conftest import linked_copy, made_once
from tests.test_demo import upload
from tests.test_pages import open_page


def validation_images(run_dir, count: int, folder) -> list:
    """`count` of the run's validation images as PNGs at its size (what a camera or a file would give)."""
    config = RunFolder(run_dir).config()
    valid = Split.from_dataset(load_source(config.data, config.size), config.valid_pct, config.seed).valid_images
    paths = []
    for i in range(count):
        paths.append(folder / f"valid{i}.png")
        Image.fromarray(valid[i].permute(1, 2, 0).numpy()).save(paths[-1])
    return paths


def expected_labels(prediction, names: list[str], chosen: list[float]) -> list[str]:
    """The labels at or above their thresholds, most probable first, from a prediction's full list."""
    by_name = dict(zip(names, chosen))
    return [name for name, p in prediction.top if np.float32(p) >= np.float32(by_name[name])]


@pytest.fixture(scope="module")
def exported_labels(multilabel_run, tmp_path_factory):
    """(a copy of the multi-label run exported once in every format by the command line, what it printed)."""
    from core.ship.export import main

    def make(folder) -> str:
        linked_copy(multilabel_run, folder / "ml")
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert main([str(folder / "ml")]) == 0
        return printed.getvalue()

    folder, printed = made_once(tmp_path_factory, "export-labels", make)
    return folder / "ml", printed


def test_predict_answers_the_labels_above_their_thresholds_and_every_label_in_top(multilabel_run, tmp_path, capsys):
    from core.ship.predict import main

    images = validation_images(multilabel_run, 6, tmp_path)
    assert main([str(multilabel_run), *map(str, images), "--json", "--top", "2"]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    predictor = Predictor.from_run(multilabel_run)
    chosen = thresholds(RunFolder(multilabel_run))
    assert predictor.thresholds == chosen and len(chosen) == len(predictor.class_names)
    for answer, path in zip(answers, images):
        assert set(answer) == {"file", "labels", "top", "unknown"} and answer["file"] == str(path)
        assert sorted(name for name, _ in answer["top"]) == sorted(predictor.class_names)  # every label, not 2
        assert [p for _, p in answer["top"]] == sorted((p for _, p in answer["top"]), reverse=True)
        prediction = predictor.file(path)
        assert answer["labels"] == prediction.labels == expected_labels(prediction, predictor.class_names, chosen)
    assert any(answer["labels"] for answer in answers) and any(len(a["labels"]) > 1 for a in answers)

    assert main([str(multilabel_run), str(images[0])]) == 0  # in words: the labels found
    found = predictor.file(images[0]).labels
    assert capsys.readouterr().out.strip() == f"{images[0]}: {', '.join(found) if found else 'none of the 5 labels'}"


@pytest.mark.slow
def test_every_export_carries_the_thresholds_and_returns_the_apps_label_sets(exported_labels, tmp_path):
    run_dir, printed = exported_labels
    folder, chosen = RunFolder(run_dir).export_folder, thresholds(RunFolder(run_dir))
    verification = json.loads((folder / "verification.json").read_text())
    assert printed.splitlines()[-1] == describe(verification)
    assert "label sets agree: ONNX 100.0%, TorchScript 100.0%, TFLite 100.0%" in printed
    for name in ("onnx", "torchscript", "tflite"):
        assert verification[f"{name}_label_set_agreement"] >= 0.999 and f"{name}_top1_agreement" not in verification
    assert {"onnx", "tflite"} <= set(verification["int8"])  # int8 files: measured, each yes/no against the app's
    assert all(m["label_agreement"] >= 0.9 for m in verification["int8"].values())
    preprocessing = json.loads((folder / "preprocessing.json").read_text())
    assert preprocessing["task"] == "multi-label" and preprocessing["label_thresholds"] == chosen
    assert [o["name"] for o in preprocessing["outputs"]] == ["probabilities", "unknown_score", "unknown", "labels"]
    coreml = verification["coreml"]  # no classifier (one label per image): the labels and thresholds in its metadata
    assert coreml["class_labels"] == json.loads((folder / "classes.json").read_text())
    assert coreml["label_thresholds"] == chosen and [o for o, _ in coreml["outputs"]][-1] == "labels"

    # the ONNX file on its own, as a program outside the app would run it
    images = validation_images(run_dir, 8, tmp_path)
    pixels = np.stack([np.asarray(Image.open(path).convert("RGB")) for path in images])
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    probabilities, _, unknown, labels = session.run(None, {"pixels": pixels})
    assert labels.dtype == bool and (labels == (probabilities >= np.float32(chosen))).all()
    predictor = Predictor.from_run(run_dir)
    names = json.loads((folder / "classes.json").read_text())
    for row, path in zip(labels, images):
        assert sorted(names[i] for i in np.flatnonzero(row)) == sorted(predictor.file(path).labels)


def test_the_server_answers_label_sets_from_the_run_and_from_its_export_zip(exported_labels, tmp_path):
    from core.ship.serve import create_app, load_model

    run_dir, _ = exported_labels
    zip_path = tmp_path / "ml.zip"
    zip_path.write_bytes(zip_export(run_dir))
    image = validation_images(run_dir, 3, tmp_path)[2]
    expected = Predictor.from_run(run_dir).file(image).to_dict(image.name)
    for source in (run_dir, zip_path):
        client = TestClient(create_app(load_model(source), ["testserver"]))
        assert client.get("/health").json()["multi_label"] is True
        answer = client.post("/predict", files={"file": (image.name, image.read_bytes(), "image/png")}).json()
        assert answer["labels"] == expected["labels"] and answer["unknown"] == expected["unknown"]
        assert [n for n, _ in answer["top"]] == [n for n, _ in expected["top"]]
        assert np.allclose([p for _, p in answer["top"]], [p for _, p in expected["top"]], atol=1e-5)


def test_the_predict_page_names_the_labels_found_with_each_labels_threshold(multilabel_run, tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(multilabel_run.parent))
    images = validation_images(multilabel_run, 3, tmp_path)
    predictor = Predictor.from_run(multilabel_run)
    app = upload(open_page("pages/predict.py", run_id="ml"), *((p.name, p.read_bytes()) for p in images))
    assert any("several labels per image" in c.value for c in app.caption)
    expected = [predictor.file(path) for path in images]
    assert [h.value for h in app.subheader] == [" · ".join(e.labels) if e.labels else "None of the 5 labels"
                                                for e in expected]
    by_name = dict(zip(predictor.class_names, predictor.thresholds))
    for prediction, chart in zip(expected, app.get("plotly_chart")):
        shown, marks = json.loads(chart.proto.spec)["data"]  # each label's bar, and its threshold
        assert shown["y"] == marks["y"] and set(prediction.labels) <= set(shown["y"])
        assert marks["x"] == pytest.approx([by_name[name] for name in shown["y"]])
        assert shown["x"][::-1] == pytest.approx([dict(prediction.top)[name] for name in shown["y"][::-1]])
        green = {name for name, colour in zip(shown["y"], shown["marker"]["color"]) if colour == "#2ea043"}
        assert green == set(prediction.labels)


@pytest.mark.slow
def test_the_exported_web_page_names_the_label_sets_the_app_finds(exported_labels, tmp_path):
    from playwright.sync_api import sync_playwright

    from tests.test_browser_web_export import answer, offline_page

    run_dir, _ = exported_labels
    with zipfile.ZipFile(io.BytesIO(zip_export(run_dir))) as archive:
        archive.extractall(tmp_path / "unzipped")
    images = validation_images(run_dir, 6, tmp_path)
    predictor = Predictor.from_run(run_dir)
    expected = [predictor.file(path) for path in images]
    asked, errors = [], []
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = offline_page(browser, asked)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto((tmp_path / "unzipped" / run_dir.name / "web" / "index.html").as_uri())
        for count, (path, app) in enumerate(zip(images, expected), start=1):
            shown = answer(page, path, count)
            assert shown["top1"] == (", ".join(app.labels) if app.labels else "None of the 5 labels"), path.name
            assert sorted(predictor.class_names[i] for i in shown["labels"]) == sorted(app.labels)
        assert page.locator("#top3 li").count() == len(predictor.class_names)  # every label's probability
        browser.close()
    assert not asked and not errors, (asked, errors)


def test_a_label_set_prediction_reads_the_same_from_pixels_and_bytes(multilabel_run, tmp_path):
    """Predictor.pixels and .data agree, and without thresholds.json (a run cut off before it) fastai's 0.5 is used."""
    image = validation_images(multilabel_run, 1, tmp_path)[0]
    copy = linked_copy(multilabel_run, tmp_path / "copy")
    (copy / "thresholds.json").unlink()
    predictor = Predictor.from_run(copy)
    assert predictor.thresholds == [0.5] * 5
    pixels = torch.from_numpy(np.asarray(Image.open(image).convert("RGB"))).permute(2, 0, 1)[None]
    from_pixels, from_bytes = predictor.pixels(pixels)[0], predictor.data(image.read_bytes())
    assert from_pixels == from_bytes
    assert from_pixels.labels == [name for name, p in from_pixels.top if p >= 0.5]


def test_the_camera_demo_draws_the_labels_found_in_green_and_names_them():
    from PIL import Image as PILImage

    from core.ship.predict import Prediction
    from pages._demo import draw_bars, verdict

    prediction = Prediction([("bag", 0.9), ("coat", 0.2), ("shirt", 0.7)], False, 0.1, ["bag", "shirt"])
    assert verdict(prediction, 3) == "bag · shirt"
    assert verdict(Prediction(prediction.top, False, 0.1, []), 3) == "None of the 3 labels"
    picture = PILImage.new("RGB", (270, 270), (0, 0, 0))
    draw_bars(picture, prediction, 3)
    row = 270 // 9  # three rows at the bottom, one a label, bars from the left edge
    colours = [picture.getpixel((2, 270 - row * (3 - i) + row // 2 - row // 3)) for i in range(3)]
    assert colours == [(46, 160, 67), (70, 110, 200), (46, 160, 67)], colours
