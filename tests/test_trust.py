"""Calibration, "none of these" and test-time augmentation (core.inspect.trust), and `python -m core.ship.predict`."""
from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from core.data.augment import Augment
from core.data.batches import normalize
from core.inspect.interpret import load_predictions
from core.inspect.trust import (
    FLAG_RATE,
    Trust,
    TrustedModel,
    calibrated,
    expected_calibration_error,
    fit_temperature,
    knn_scores,
    reliability,
    tta_probs,
)
from core.runs.checkpoint import load_model
from core.runs.folder import RunFolder
from core.ship.predict import Predictor
from core.ship.predict import main as predict_main


def test_temperature_scaling_recovers_how_overconfident_the_logits_were():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, size=(20000, 5))
    probs = calibrated(true_logits, 1.0)
    targets = np.array([rng.choice(5, p=p / p.sum()) for p in probs])
    assert fit_temperature(3 * true_logits, targets) == pytest.approx(3.0, rel=0.05)  # 3x too sure: T = 3
    assert fit_temperature(true_logits, targets) == pytest.approx(1.0, rel=0.05)
    assert (calibrated(3 * true_logits, 3.0).argmax(1) == true_logits.argmax(1)).all()  # never changes the winner


def test_calibration_error_and_reliability_bins_by_hand():
    sure_and_right = np.tile([[0.9, 0.1]], (10, 1))
    targets = np.array([0] * 9 + [1])
    assert expected_calibration_error(sure_and_right, targets) == pytest.approx(0.0, abs=1e-9)  # 90% sure, 90% right
    certain = np.tile([[1.0, 0.0]], (4, 1))
    assert expected_calibration_error(certain, np.array([0, 0, 1, 1])) == pytest.approx(0.5)
    table = reliability(np.array([[0.55, 0.45], [0.95, 0.05], [0.92, 0.08]]), np.array([0, 0, 1]), bins=10)
    assert table["count"].tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 0, 2]
    assert table["accuracy"][9] == pytest.approx(0.5) and table["confidence"][9] == pytest.approx(0.935)


def test_the_unknown_score_is_the_cosine_distance_to_the_kth_nearest_training_image():
    bank = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), dim=1)
    query = torch.tensor([[1.0, 0.0]])
    assert knn_scores(query, bank, 1).item() == pytest.approx(0.0)
    assert knn_scores(query, bank, 2).item() == pytest.approx(1 - 2 ** -0.5)
    assert knn_scores(query, bank, 3).item() == pytest.approx(1.0)


def test_a_trained_run_is_calibrated_and_its_trusted_model_matches_the_plain_one(trained_run):
    trust = Trust.load(RunFolder(trained_run).trust_path)
    predictions = load_predictions(trained_run)
    assert predictions.raw_probs.shape == predictions.probs.shape and trust.temperature > 0
    assert (predictions.raw_probs.argmax(1) == predictions.probs.argmax(1)).all()
    # the temperature is fitted to lower the validation NLL (the ECE, a binned figure, may move either way a little)
    picked = np.arange(len(predictions.targets)), predictions.targets
    nll = -np.log(predictions.probs[picked].astype(np.float64)).mean()
    assert nll <= -np.log(predictions.raw_probs[picked].astype(np.float64)).mean() + 1e-6
    assert expected_calibration_error(predictions.probs, predictions.targets) < 0.1
    flagged = (predictions.unknown_scores > trust.threshold).mean()
    assert flagged <= FLAG_RATE + 1e-9  # the threshold is the validation scores' (1 - FLAG_RATE) quantile
    model, _, _ = load_model(trained_run)
    trusted = TrustedModel(model, trust)
    pixels = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        probs, scores = trusted(pixels)
        expected = (model(normalize(pixels)) / trust.temperature).softmax(1)
    assert torch.allclose(probs, expected, atol=1e-5) and scores.shape == (4,) and (scores >= -1e-6).all()


def test_tta_mixes_augmented_copies_with_the_plain_prediction_as_fastai_does(trained_run):
    model, _, _ = load_model(trained_run)
    trusted = TrustedModel(model, Trust.load(RunFolder(trained_run).trust_path))
    pixels = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        plain = trusted(pixels)[0].numpy()
    assert np.allclose(tta_probs(trusted, pixels, Augment(zoom=1.2), beta=1.0), plain, atol=1e-6)
    mixed = tta_probs(trusted, pixels, Augment(zoom=1.2))
    assert np.allclose(mixed.sum(1), 1, atol=1e-5) and not np.allclose(mixed, plain, atol=1e-4)
    again = tta_probs(trusted, pixels, Augment(zoom=1.2))
    assert np.array_equal(mixed, again)  # seeded: the same answer twice


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_predict_prints_one_json_object_per_image_and_a_sentence_for_a_bad_file(trained_run, tmp_path, capsys):
    from core.data.builtin import load_builtin

    digits = load_builtin("digits", 32)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        (folder / f"digit{i}.png").write_bytes(png(digits.images[i].permute(1, 2, 0).numpy()))
    (folder / "notes.txt").write_text("not an image")  # not an image suffix: not listed
    (tmp_path / "broken.png").write_bytes(b"not a png")
    assert predict_main([str(trained_run), str(folder), str(tmp_path / "broken.png"), "--json", "--top", "3"]) == 2
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["file"].split("/")[-1] for row in rows] == ["digit0.png", "digit1.png", "digit2.png", "broken.png"]
    for row in rows[:3]:
        assert set(row) == {"file", "top", "unknown"} and len(row["top"]) == 3 and isinstance(row["unknown"], bool)
        assert row["top"][0][1] >= row["top"][1][1] >= row["top"][2][1]
    assert rows[3]["error"].endswith(".") and "top" not in rows[3]
    predictor = Predictor.from_run(trained_run)
    assert predictor.data(png(digits.images[0].permute(1, 2, 0).numpy()), top=3).to_dict(rows[0]["file"]) == rows[0]


def test_a_run_from_before_calibration_is_refused_in_a_sentence(trained_run, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(trained_run, old)
    RunFolder(old).trust_path.unlink()
    assert predict_main([str(old), str(tmp_path)]) == 2
    assert "has no calibration" in capsys.readouterr().err


def test_a_run_with_too_few_validation_images_says_none_of_these_is_a_guess(tmp_path, monkeypatch, runs_env):
    """A camera-sized dataset (2 classes of 6 photos: 2 held out) cannot learn how far its classes reach; the Predict
    page and the trust section say so, and a run of the digits (359 held out) does not."""
    from core.inspect.trust import MIN_VALID_TO_KNOW, unknown_caveat
    from core.train.__main__ import main
    from tests.conftest import write_image_folder
    from tests.test_pages import open_page

    assert MIN_VALID_TO_KNOW == round(1 / FLAG_RATE) and unknown_caveat(MIN_VALID_TO_KNOW, 10) is None
    data = write_image_folder(tmp_path / "toys", {"red circle": 6, "blue square": 6})
    runs = tmp_path / "runs"
    assert main(["--data", str(data), "--arch", "resnet18", "--no-pretrained", "--size", "16", "--epochs", "1",
                 "--bs", "4", "--runs-dir", str(runs), "--name", "toys"]) == 0
    assert "only 2 validation images" in unknown_caveat(RunFolder(runs / "toys").data_record()["n_valid"], 2)
    for runs_dir, run_id, warned in ((runs, "toys", True), (runs_env, "tiny", False)):
        monkeypatch.setenv("STUDIO_RUNS_DIR", str(runs_dir))
        for page in ("pages/predict.py", "pages/interpret.py"):
            app = open_page(page, run_id)
            said = [w.value for w in app.warning if "is a guess" in w.value]
            assert bool(said) == warned, (page, run_id, said)
