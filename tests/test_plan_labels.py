"""What to collect next for label sets (core.fix.plan_labels): each label's recall and F1 now and its recall with more
images carrying it, through core.fix.mend, the command line and the Data page. Real images: 2x2 mosaics of
handwritten digits labelled with the digits they show (tests.mosaics), one label starved by dropping the images that
carry it."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from core.data.__main__ import main as data_main
from core.errors import DataError
from core.fix.mend import plan, run_label_set_predictions
from core.fix.plan_labels import label_set_folds
from core.runs.folder import RunFolder
from core.runs.labelsets import thresholds
from tests.conftest import ROOT, linked_copy
from tests.mosaics import write_mosaics

KEPT = 8  # images carrying "four" that the starved set keeps; the other labels have about 60 each


@pytest.fixture(scope="module")
def starved(tmp_path_factory) -> Path:
    """A folder of about 200 mosaics of the digits 0-4 where only KEPT images carry "four": the others that did are
    deleted, with their rows of labels.csv."""
    folder = tmp_path_factory.mktemp("starved") / "mosaics"
    written = write_mosaics(folder, n=400, seed=2)
    fours = [name for name, labels in written.items() if "four" in labels]
    for name in fours[KEPT:]:
        (folder / name).unlink()
    with open(folder / "labels.csv", "w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["image_name", "tags"])
        rows.writerows([name, " ".join(labels)] for name, labels in written.items() if name not in fours[KEPT:])
    return folder


@pytest.fixture(scope="module")
def mosaics(tmp_path_factory) -> Path:
    """120 mosaics, each label on about half of them: enough in the run's validation split to plan on it alone."""
    folder = tmp_path_factory.mktemp("plain") / "mosaics"
    write_mosaics(folder, n=120, seed=3)
    return folder


def test_a_starved_label_is_planned_first_with_a_projected_gain(starved):
    found = plan(str(starved), add=50, size=32)
    row = {c.name: c for c in found.classes}
    assert sorted(row) == ["four", "one", "three", "two", "zero"] and found.recall_from == "the probe"
    # 2 of the 8 "four"s fall in the run's validation split: too few, so every image is judged by cross-validation
    assert found.measured_on == "5-fold cross-validation"
    assert found.collect_next[0] == "four", [(c.name, c.recall, c.projected_recall) for c in found.classes]
    four = row["four"]
    assert four.train_images == 6  # 4/5 of the 8, in each fold
    assert four.projected_recall > four.recall + 0.1 and four.gain == max(c.gain for c in found.classes)
    assert all(c.train_images > 40 and c.recall > four.recall for name, c in row.items() if name != "four")
    assert all(0 <= c.recall <= c.projected_recall <= 1 and 0 <= c.f1 <= 1 and c.threshold == 0.5
               for c in found.classes)
    assert [n for n, _ in four.curve][-1] == pytest.approx(6.4) and len(four.curve) >= 3
    assert found.sentence("four").startswith("label four: 6 training images, recall ")
    assert found.sentence("four").endswith(" with 50 more images carrying it")


def test_too_few_validation_carriers_deal_each_label_round_five_folds():
    labels = torch.zeros(40, 3, dtype=torch.bool)
    labels[:8, 0] = True  # a rare label on 8 images
    labels[8:, 1] = True
    labels[::2, 2] = True
    train, valid = np.arange(30), np.arange(30, 40)  # no image of the rare label in validation
    folds = label_set_folds(labels, train, valid)
    assert len(folds) == 5 and sorted(np.concatenate([v for _, v in folds]).tolist()) == list(range(40))
    assert sorted(int(labels[v, 0].sum()) for _, v in folds) == [1, 1, 2, 2, 2]  # its 8 spread over the folds
    assert all(len(np.intersect1d(t, v)) == 0 for t, v in folds)
    enough = torch.zeros(40, 2, dtype=torch.bool)
    enough[::2, 0], enough[1::2, 1] = True, True
    assert label_set_folds(enough, train, valid) == [(train, valid)]  # 5 of each in validation: the run's split


def test_the_plan_command_prints_json_for_a_multi_label_folder(mosaics, capsys):
    assert data_main(["plan", str(mosaics), "--json", "--add", "20"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert sorted(found) == ["add", "collect_next", "labels", "measured_on", "multi_label", "recall_from"]
    assert found["multi_label"] is True and found["add"] == 20 and found["measured_on"] == "the validation split"
    assert sorted(found["collect_next"]) == ["four", "one", "three", "two", "zero"]
    assert {"label", "train_images", "recall", "f1", "threshold", "projected_recall", "curve"} == \
        set(found["labels"][0])
    assert all(row["recall"] <= row["projected_recall"] <= 1 and row["train_images"] > 20 for row in found["labels"])


def test_a_plan_with_a_run_of_label_sets_starts_from_its_recall_at_its_thresholds(multilabel_run):
    from core.inspect.labelsets import load_label_sets, per_label_metrics

    folder = RunFolder(multilabel_run)
    found = plan(str(multilabel_run.parent / "mosaics"), run_dir=multilabel_run, add=50, size=32)
    assert found.recall_from == "run ml" and found.measured_on == "the validation split"
    metrics = {m.label: m for m in per_label_metrics(load_label_sets(multilabel_run), folder.class_names())}
    assert {c.name: c.recall for c in found.classes} == pytest.approx({k: m.recall for k, m in metrics.items()})
    assert {c.name: c.f1 for c in found.classes} == pytest.approx({k: m.f1 for k, m in metrics.items()})
    assert {c.name: c.threshold for c in found.classes} == pytest.approx({k: m.threshold for k, m in metrics.items()})
    assert all(c.recall <= c.projected_recall <= 1 for c in found.classes)


def test_a_damaged_or_single_label_run_is_refused_in_a_sentence(multilabel_run, trained_run, tmp_path):
    damaged = linked_copy(multilabel_run, tmp_path / "damaged")
    (damaged / "predictions.npz").unlink()
    (damaged / "predictions.npz").write_bytes(b"not a zip")
    names = tuple(RunFolder(multilabel_run).class_names())
    with pytest.raises(DataError, match="has no predictions for this dataset's label sets; leave the run out"):
        run_label_set_predictions(damaged, names)
    with pytest.raises(DataError, match="has no predictions for this dataset's label sets"):
        run_label_set_predictions(trained_run, tuple(RunFolder(trained_run).class_names()))  # one label per image
    probs, targets, chosen = run_label_set_predictions(multilabel_run, tuple(reversed(names)))  # in the asked order
    with np.load(multilabel_run / "predictions.npz") as saved:
        assert np.array_equal(probs, saved["probs"][:, ::-1]) and np.array_equal(targets, saved["targets"][:, ::-1])
    assert chosen.tolist() == thresholds(RunFolder(multilabel_run))[::-1]


@pytest.mark.slow
def test_the_data_page_plans_what_to_collect_for_label_sets(mosaics, monkeypatch, tmp_path):
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(tmp_path / "runs"))  # no run: the probe's recall
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    app.switch_page("pages/data.py").run()
    next(r for r in app.radio if r.label == "Images from").set_value("A folder on this machine").run()
    next(t for t in app.text_input if t.label == "Folder path").set_value(str(mosaics)).run()
    next(t for t in app.toggle if t.label == "Plan what to collect").set_value(True).run()
    assert not app.exception, [e.value for e in app.exception]
    sentences = [t.value for t in app.text if "more images carrying it" in t.value]
    assert len(sentences) == 3 and all(s.startswith("label ") for s in sentences)
    assert any("now from the probe" in c.value for c in app.caption)
    table = next(d.value for d in app.dataframe if "recall now" in d.value.columns)
    assert list(table.columns) == ["label", "training images carrying it", "threshold", "recall now", "F1 now",
                                   "with 100 more"]
    assert [s.split(":")[0] for s in sentences] == [f"label {name}" for name in table["label"][:3]]  # in one order
    assert app.select_slider(key="plan_add").label == "Images you could add to a label"
