"""Several labels per image (issue 27), as far as it goes: a labels CSV of label sets is read, checked and described
(command line, Data page), loaded as a row of yes/no per label, split so every label is learnt and judged, and
trained on (sigmoid outputs, scores per epoch, a threshold per label); interpreting, fixing, predicting and exporting
such runs are tested in test_interpret_labels.py, test_fix_labels.py and test_ship_labels.py, the Map in
test_map_labels.py and planning what to collect in test_plan_labels.py. Real images: 2x2 mosaics of handwritten digits,
labelled with the digits they show (fastai's planet format, labels separated by spaces)."""
import io
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from core.data.edits import EditLog
from core.data.load import inspect_source, load_source, split_indices
from core.data.multilabel import label_separator, split_labels
from core.runs.folder import RunFolder
from tests.conftest import ROOT
from tests.mosaics import DIGITS, write_mosaics


def test_a_label_column_is_read_as_label_sets_only_where_it_holds_them():
    planet = ["clear primary", "clear primary water", "haze primary", "clear primary road", "haze primary water",
              "cloudy", "partly_cloudy primary", "clear primary road water", "partly_cloudy primary road"]
    assert label_separator(planet) == " "  # 7 words in 9 different rows
    assert label_separator(planet[:6]) is None  # 6 words in 6 rows: as many as class names could have
    assert label_separator(["golden retriever", "great dane", "pug", "golden retriever"]) is None  # class names
    assert label_separator(["red car", "blue car", "red bike", "blue bike"]) is None  # as many words as classes
    assert label_separator(["cat", "dog", "cat"]) is None
    assert label_separator(["sea;sky", "sky", "golden retriever;sky"]) == ";"
    assert label_separator(["a|b", "b"]) == "|"
    assert split_labels(" water  clear primary clear ", " ") == ("clear", "primary", "water")
    assert split_labels("golden retriever; sky;;", ";") == ("golden retriever", "sky")
    assert split_labels("", " ") == ()


def test_the_health_report_describes_label_sets_and_the_command_line_says_so(tmp_path):
    written = write_mosaics(tmp_path / "mosaics")
    report = inspect_source(str(tmp_path / "mosaics"))
    assert report.ok and report.multi_label and report.layout == "CSV of file,labels (separated by spaces)"
    counts = {label: sum(label in labels for labels in written.values()) for label in DIGITS}
    assert report.class_counts == dict(sorted(counts.items())) and report.n_images == 63
    per_image = [len(labels) for labels in written.values()]
    assert report.label_sets["per_image"] == {"min": 0, "median": float(np.median(per_image)), "max": 4}
    assert report.label_sets["no_label"] == ["images/m060.png", "images/m061.png", "images/m062.png"]
    pairs = report.label_sets["co_occurrence"]
    top = max(((a, b) for a in DIGITS for b in DIGITS if a < b),
              key=lambda p: (sum(set(p) <= set(labels) for labels in written.values()), (-ord(p[0][0]))))
    assert pairs[0][2] == sum(set(top) <= set(labels) for labels in written.values())
    assert report.verdict().startswith("Ready: 63 images with 5 labels, 0–4 per image (median ")
    assert "3 image(s) with no label" in report.verdict() and not report.suggestions  # no sampler for label sets

    printed = subprocess.run([sys.executable, "-m", "core.data", "inspect", str(tmp_path / "mosaics"), "--json"],
                             cwd=ROOT, capture_output=True, text=True)
    assert printed.returncode == 0, printed.stderr
    said = json.loads(printed.stdout)
    assert said["multi_label"] and said["class_counts"] == report.class_counts
    assert said["label_sets"]["no_label"] == report.label_sets["no_label"]
    text = subprocess.run([sys.executable, "-m", "core.data", "inspect", str(tmp_path / "mosaics")], cwd=ROOT,
                          capture_output=True, text=True).stdout
    assert "labels per image: 0–4" in text and "3 image(s) with no label" in text and "together on" in text


def test_label_sets_load_as_rows_of_yes_or_no_and_every_label_is_in_both_parts_of_the_split(tmp_path):
    written = write_mosaics(tmp_path / "mosaics", separator="|")
    data = load_source(str(tmp_path / "mosaics"), 32)
    assert data.multi_label and data.labels.shape == (63, 5) and data.labels.dtype == torch.bool
    for name, row in zip(data.item_names, data.labels):
        assert tuple(data.class_names[j] for j in torch.nonzero(row).flatten().tolist()) == written[name]
    assert data.class_counts() == inspect_source(str(tmp_path / "mosaics")).class_counts
    train, valid = split_indices(data, 0.2, seed=3)
    assert sorted([*train, *valid]) == list(range(63)) and len(valid) == pytest.approx(63 * 0.2, abs=3)
    assert data.labels[train].any(0).all() and data.labels[valid].any(0).all()
    again = split_indices(data, 0.2, seed=3)
    assert np.array_equal(again[1], valid) and not np.array_equal(split_indices(data, 0.2, seed=4)[1], valid)


def test_a_relabel_sets_a_label_set_and_the_mended_set_reads_back_the_same(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))
    folder = tmp_path / "mosaics"
    write_mosaics(folder)
    EditLog(folder).append([{"file": "images/m000.png", "label": "one;four"}], "fix")
    data = load_source(str(folder), 32)
    row = data.labels[data.item_names.index("images/m000.png")]
    assert [data.class_names[j] for j in torch.nonzero(row).flatten().tolist()] == ["four", "one"]

    from core.fix.mend import mended_zip

    with zipfile.ZipFile(io.BytesIO(mended_zip(str(folder)))) as archive:  # the mended set, read back the same
        archive.extractall(tmp_path / "exported")
    again = load_source(str(tmp_path / "exported"), 32)
    assert again.class_names == data.class_names and again.item_names == data.item_names
    assert torch.equal(again.labels, data.labels)


def test_a_run_learns_label_sets_scores_them_each_epoch_and_picks_a_threshold_per_label(tmp_path, monkeypatch,
                                                                                        capsys):
    """fastai's multi-label recipe on the one loop: sigmoid outputs, binary cross-entropy, the cached frozen phase and
    the late stages; each epoch row carries accuracy_multi, F1 (samples, macro) and mean average precision, and the
    terminal's table titles its columns as fastai's planet table does."""
    from core.inspect.interpret import load_predictions
    from core.inspect.labelsets import per_label_metrics
    from core.net import stages
    from core.runs.checkpoint import load_model
    from core.runs.labelsets import thresholds
    from core.train.__main__ import main

    monkeypatch.setattr(stages, "ALL_BUDGET_S", 0.0)  # the late stages on cached early outputs, as on a big dataset
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))
    written = write_mosaics(tmp_path / "mosaics", n=300, seed=1)
    assert main(["--data", str(tmp_path / "mosaics"), "--size", "32", "--freeze-epochs", "2", "--epochs", "2",
                 "--runs-dir", str(tmp_path / "runs"), "--name", "ml"]) == 0
    folder = RunFolder(tmp_path / "runs" / "ml")
    assert folder.status()["state"] == "completed" and folder.status()["message"].startswith("Epoch 4: accuracy_multi ")
    rows = folder.read_metrics().epochs
    printed = capsys.readouterr().out.splitlines()
    assert next(line for line in printed if line.lstrip().startswith("epoch")).split() == [
        "epoch", "phase", "train_loss", "valid_loss", "accuracy_multi", "f1_samples", "time"]
    last = next(line for line in reversed(printed) if line.lstrip().startswith("4 "))
    assert [float(v) for v in last.split()[4:6]] == [round(rows[-1]["accuracy_multi"], 4),
                                                       round(rows[-1]["f1_samples"], 4)]
    assert [r["phase"] for r in rows] == ["frozen", "frozen", "late", "late"]  # the default recipe, cached
    for row in rows:
        assert {"accuracy_multi", "f1_samples", "f1_macro", "map"} <= set(row)
        assert row["accuracy"] == row["accuracy_multi"] and 0 <= row["f1_macro"] <= 1
    chance = np.mean([len(labels) for labels in written.values()]) / len(DIGITS)  # a label's share of images
    assert rows[-1]["map"] > chance + 0.2, (rows[-1], chance)
    with np.load(folder.predictions_path) as saved:
        targets, probs = saved["targets"], saved["probs"]
    assert targets.dtype == bool and targets.shape == probs.shape and targets.shape[1] == len(DIGITS)
    assert ((probs >= 0) & (probs <= 1)).all() and not np.allclose(probs.sum(1), 1)  # sigmoids, not a softmax
    chosen = thresholds(folder)
    assert chosen is not None and len(chosen) == len(DIGITS) and all(0.05 <= t <= 0.95 for t in chosen)
    model, class_names, _ = load_model(folder.path)
    assert class_names == sorted(DIGITS) and model(torch.zeros(1, 3, 32, 32)).shape == (1, len(DIGITS))
    predictions = load_predictions(folder.path)  # interpreted at the run's own thresholds (tests/test_interpret_labels)
    assert predictions.targets.dtype == bool and predictions.thresholds.tolist() == chosen

    monkeypatch.setenv("STUDIO_RUNS_DIR", str(tmp_path / "runs"))  # the Train page's table, and Interpret's
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    app.query_params["run"] = "ml"
    app.run()
    app.switch_page("pages/train.py").run()
    table = app.table[0].value
    assert list(table.columns)[:8] == ["epoch", "phase", "train_loss", "valid_loss", "accuracy_multi", "f1_samples",
                                       "f1_macro", "map"]
    assert table["map"].tolist()[-1] == round(rows[-1]["map"], 4)
    scores = json.loads(next(c for c in app.get("plotly_chart") if "Scores" in c.proto.spec).proto.spec)["data"]
    assert [line["name"] for line in scores] == ["accuracy_multi", "f1_samples", "f1_macro", "map"]
    assert scores[3]["y"] == [r["map"] for r in rows] and scores[0]["x"] == [r["epoch"] for r in rows]
    app.switch_page("pages/interpret.py").run()
    assert not app.exception and not app.error
    assert app.dataframe[0].value["label"].tolist()[0] == min(per_label_metrics(predictions, class_names),
                                                             key=lambda m: (m.f1, m.label)).label


def test_label_sets_refuse_class_balancing_and_label_smoothing_in_a_sentence(tmp_path, monkeypatch):
    from core.train.__main__ import main

    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))
    write_mosaics(tmp_path / "mosaics", n=20)
    assert main(["--data", str(tmp_path / "mosaics"), "--arch", "resnet18", "--no-pretrained", "--size", "16",
                 "--epochs", "1", "--balance", "sampler", "--runs-dir", str(tmp_path / "runs"), "--name", "ml"]) != 0
    status = RunFolder(tmp_path / "runs" / "ml").status()
    assert status["state"] == "failed" and "Balancing classes and label smoothing are for one label" in \
        status["message"]


def test_the_data_page_shows_label_sets_and_the_train_page_says_it_cannot_train_them_yet(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(tmp_path / "runs"))
    write_mosaics(tmp_path / "mosaics")
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    app.switch_page("pages/data.py").run()
    next(r for r in app.radio if r.label == "Images from").set_value("A folder on this machine").run()
    next(t for t in app.text_input if t.label == "Folder path").set_value(str(tmp_path / "mosaics")).run()
    assert not app.exception, [e.value for e in app.exception]
    assert app.success[0].value.startswith("Ready: 63 images with 5 labels")
    assert {m.label: m.value for m in app.metric} == {"Images": "63", "Labels": "5", "Skipped files": "0"}
    assert [s.value for s in app.subheader][:2] == ["Images per label", "Labels per image"]
    expanders = [e.label for e in app.expander]
    assert "Images with no label (3)" in expanders and any(e.startswith("Labels most often") for e in expanders)
    assert len(app.get("plotly_chart")) == 2  # label counts and the samples, captioned with their label sets
    app.switch_page("pages/train.py").run()
    assert not app.exception and not app.warning
    app.session_state["label_smoothing"] = 0.1
    app.run()
    assert any("set Imbalanced classes to none and Label smoothing to 0" in w.value for w in app.warning)
    app.switch_page("pages/layers.py").run()  # the pretrained network on the dataset's images, captioned with sets
    next(r for r in app.radio if r.label == "Look inside").set_value("The pretrained network alone (ImageNet)").run()
    assert not app.exception, [e.value for e in app.exception]
