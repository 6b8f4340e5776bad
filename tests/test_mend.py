"""The data loop's engine: edits recorded and applied when read (files untouched), undo, the command line,
suspected label errors on real digits with labels moved on purpose, near-duplicates, a dataset made in the app,
and runs that record the data they trained on."""
import io
import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from bench.label_noise import precision, write_digits
from core.config import TrainConfig
from core.data.__main__ import main as data_main
from core.data.collect import add_images, create_dataset, rename_class, shortfall
from core.data.edits import EditLog
from core.data.load import edit_log_for, inspect_source, load_source
from core.errors import DataError
from core.fix.suspects import near_duplicates, neighbour_probs, probe_probs
from core.runs import compare, store
from core.train.run import run_training
from tests.conftest import write_image_folder


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_edits_apply_when_the_dataset_is_read_undo_takes_them_back_and_the_files_never_change(tmp_path, data_dir):
    folder = write_image_folder(tmp_path / "shapes", {"red": 6, "green": 6, "blue": 6})
    before = snapshot(folder)
    log = edit_log_for(str(folder))
    assert log.append([{"file": "red/0.png", "label": "green"}, {"file": "blue/1.png", "label": None}], "test") == 1
    report = inspect_source(str(folder))
    assert report.class_counts == {"blue": 5, "green": 7, "red": 5}
    assert "your edits: 1 relabelled, 1 removed" in report.verdict()
    data = load_source(str(folder), 8)
    assert data.class_names[int(data.labels[data.item_names.index("red/0.png")])] == "green"
    assert "blue/1.png" not in data.item_names and len(data) == 17
    log.append([{"file": "red/1.png", "label": "purple"}], "test")  # a new class, made by an edit
    assert inspect_source(str(folder)).class_counts["purple"] == 1
    assert log.undo()["batch"] == 2 and log.undo()["batch"] == 1 and log.undo() is None
    assert inspect_source(str(folder)).class_counts == {"blue": 6, "green": 6, "red": 6}
    assert snapshot(folder) == before  # nothing in the user's folder was written, moved or deleted
    assert not (folder / "edits").exists() and log.path.is_relative_to(data_dir)
    assert len(log.path.read_text().splitlines()) == 4  # append-only: two batches, then two undo lines


def test_edits_that_would_escape_the_dataset_or_name_no_class_are_refused(tmp_path, data_dir):
    log = EditLog(tmp_path)
    for bad in ([{"file": "../x.png", "label": "a"}], [{"file": "/etc/passwd", "label": "a"}],
                [{"file": "a.png", "label": "a/b"}], [{"file": "a.png", "label": " "}], [{"file": "a.png"}], []):
        with pytest.raises(DataError):
            log.append(bad, "test")
    assert not log.path.exists()


def test_a_built_in_dataset_can_be_mended_too(data_dir):
    log = edit_log_for("builtin:digits")
    log.append([{"file": "digit #0", "label": "7"}, {"file": "digit #1", "label": None}], "test")
    data = load_source("builtin:digits", 8)
    assert len(data) == 1796 and data.item_names[0] == "digit #0" and data.class_names[int(data.labels[0])] == "7"


def test_the_command_line_records_undoes_and_exports_and_refuses_in_a_sentence(tmp_path, data_dir, capsys):
    folder = write_image_folder(tmp_path / "shapes", {"red": 6, "green": 6})
    edits = tmp_path / "edits.json"
    edits.write_text(json.dumps([{"file": "red/0.png", "label": "green"}, {"file": "green/5.png", "label": None}]))
    assert data_main(["edit", str(folder), str(edits)]) == 0
    assert "Recorded 2 edit(s) as batch 1" in capsys.readouterr().out
    out = tmp_path / "mended.zip"
    assert data_main(["export", str(folder), str(out)]) == 0
    names = zipfile.ZipFile(out).namelist()
    assert "green/red/0.png" in names and not any(n.endswith("green/5.png") for n in names) and len(names) == 11
    assert data_main(["export", str(folder), str(out)]) == 2  # never over an existing file
    assert "exists already" in capsys.readouterr().out
    edits.write_text(json.dumps([{"file": "red/99.png", "label": "green"}]))
    assert data_main(["edit", str(folder), str(edits)]) == 2
    assert "not in this dataset" in capsys.readouterr().out
    edits.write_text("not json")
    assert data_main(["edit", str(folder), str(edits)]) == 2
    assert data_main(["undo", str(folder)]) == 0 and "Took back batch 1" in capsys.readouterr().out
    assert inspect_source(str(folder)).class_counts == {"green": 6, "red": 6}


def test_neighbours_vote_leaving_each_image_out():
    features = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]]), dim=1)
    labels = torch.tensor([0, 0, 1, 0])  # the last one sits among class 1's
    probs = neighbour_probs(features, labels, 2, k=1)
    assert probs.argmax(1).tolist() == [0, 0, 0, 1]  # each takes its one nearest other image's label
    assert np.allclose(probs.sum(1), 1)


def test_the_linear_probe_predicts_each_image_from_the_folds_it_is_not_in():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat(40)  # three classes, 40 images each, around three far-apart centres
    features = torch.eye(3)[labels] * 4 + torch.randn(120, 3, generator=generator) * 0.5
    labels[7] = (labels[7] + 1) % 3  # one label moved: the probe never saw this image, so it says its real class
    probs = probe_probs(features, labels, 3)
    assert probs.shape == (120, 3) and np.allclose(probs.sum(1), 1)
    truth = torch.arange(3).repeat(40)
    assert (probs.argmax(1) == truth.numpy()).mean() > 0.95 and probs[7].argmax() == truth[7]
    assert probs[7, labels[7]] < 0.2
    assert np.array_equal(probs, probe_probs(features, labels, 3))  # seeded folds: the same every time


def test_near_duplicates_are_flagged_across_the_split_and_across_labels():
    features = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.001], [0.0, 1.0], [0.001, 1.0]]), dim=1)
    found = near_duplicates(features, torch.tensor([0, 0, 1, 2]), torch.tensor([False, True, False, False]))
    assert [(d.first, d.second, d.crosses_split, d.labels_differ) for d in found] == \
        [(0, 1, True, False), (2, 3, False, True)] or \
        [(d.first, d.second, d.crosses_split, d.labels_differ) for d in found] == \
        [(2, 3, False, True), (0, 1, True, False)]


@pytest.mark.slow
def test_suspects_find_digits_moved_to_a_wrong_class(tmp_path, data_dir, capsys):
    folder = tmp_path / "noisy"
    moved = write_digits(folder, noise_seed=0)
    assert data_main(["suspects", str(folder), "--json", "--top", str(len(moved))]) == 0
    found = json.loads(capsys.readouterr().out)
    ranked = [row["file"] for row in found["suspects"]]
    assert len(ranked) == len(moved) == 180
    assert precision(ranked, moved) >= 0.8  # chance is 0.1; bench/label_noise measures 0.94 on seeds 3-7
    first = found["suspects"][0]
    assert set(first) == {"file", "label", "suggested", "score"} and first["label"] != first["suggested"]
    assert data_main(["suspects", str(folder)]) == 0  # the flagged ones, as text
    assert "whose label the neighbours contradict" in capsys.readouterr().out


def test_a_dataset_made_in_the_app_is_a_plain_folder_per_class(tmp_path, data_dir):
    folder = create_dataset("my pets!")
    assert folder == data_dir / "made" / "my-pets" and folder.is_dir()
    with pytest.raises(DataError, match="already"):
        create_dataset("my pets")
    photos = []
    for i in range(6):
        buffer = io.BytesIO()
        Image.new("RGB", (20, 20), (200, 40 * i, 40)).save(buffer, format="JPEG")
        photos.append((f"camera photo {i}.jpg", buffer.getvalue()))
    assert add_images(folder, "cat", photos) == []
    assert add_images(folder, "dog", photos[:3] + [("notes.txt", b"hello")]) == \
        [("notes.txt", "not an image this app can read (JPEG, PNG, WebP, BMP, GIF or TIFF)")]
    report = inspect_source(str(folder))
    assert report.class_counts == {"cat": 6, "dog": 3} and shortfall(report.class_counts) == {"dog": 2}
    assert add_images(folder, "dog", photos[:3]) == []  # the same photos again: new files, none overwritten
    assert len(list((folder / "dog").iterdir())) == 6
    items = {relative: item.label for relative, item in
             ((i.path.relative_to(folder).as_posix(), i) for i in inspect_source(str(folder)).accepted)}
    rename_class(folder, items, "dog", "puppy")
    assert inspect_source(str(folder)).class_counts == {"cat": 6, "puppy": 6}


def test_a_run_records_the_data_it_trained_on_and_two_runs_compare_by_data(tmp_path, data_dir):
    folder = write_image_folder(tmp_path / "shapes", {"red": 10, "green": 10})
    config = TrainConfig(data=str(folder), arch="resnet18", pretrained=False, size=16, bs=8, epochs=1)
    first = store.create_run(config, tmp_path / "runs", "before")
    assert run_training(first) == "completed"
    edit_log_for(str(folder)).append([{"file": "red/0.png", "label": "green"}, {"file": "red/1.png", "label": None}],
                                     "test")
    second = store.create_run(config, tmp_path / "runs", "after")
    assert run_training(second) == "completed"
    assert json.loads((second / "data.json").read_text())["edits"]["relabelled"] == 1
    assert compare.data_differences(first, second) == {"relabelled": [("red/0.png", "red", "green")],
                                                     "removed": ["red/1.png"], "added": []}
