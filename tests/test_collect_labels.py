"""A dataset made in the app with several labels per image (issue 27): images tagged with label sets are written as
images/ plus a labels.csv the reader takes as multi-label, odd label names round-trip or are refused in a sentence,
nothing is ever written over a file, such a dataset trains; and the Data page makes one from drops and camera photos
(AppTest), shows it as label sets, and the Train page lets it start. Real images: scikit-learn's handwritten digits."""
import csv
import io
import unicodedata

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits
from streamlit.testing.v1 import AppTest

from core.data import collect
from core.data.collect import add_images, add_tagged_images, check_tag, create_dataset, tags_cell
from core.data.load import inspect_source, load_source
from core.errors import DataError
from core.runs.folder import RunFolder
from tests.conftest import ROOT

ODD = ['golden retriever', 'say "hi", ok', 'café', '..x', '<b>bold **x**', 'a|b', "it's"]


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def digit_images(n: int, fmt: str = "PNG", start: int = 0) -> list[tuple[str, bytes]]:
    """`n` handwritten digits as image files (name, bytes), 16x16 RGB."""
    digits = load_digits()
    files = []
    for i in range(start, start + n):
        pixels = (digits.images[i] * 16).clip(0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).convert("RGB").resize((16, 16)).save(buffer, format=fmt)
        files.append((f"digit {i}.{fmt.lower()}", buffer.getvalue()))
    return files


def label_sets(folder) -> dict[str, tuple[str, ...]]:
    """{file under the dataset: label set} as the app reads the dataset."""
    report = inspect_source(str(folder))
    assert report.multi_label
    return {item.path.relative_to(folder).as_posix(): item.labels for item in report.accepted}


def snapshot(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_label_sets_with_odd_names_round_trip_through_labels_csv(data_dir):
    folder = create_dataset("street scenes", multi_label=True)
    assert folder == data_dir / "made" / "street-scenes" and (folder / "images").is_dir()
    assert (folder / "labels.csv").read_text() == "image_name,tags\n"
    chosen = [tuple(ODD[:3]), tuple(ODD[3:]), ("café",), ()]
    files = digit_images(8)
    decomposed = [unicodedata.normalize("NFD", label) for label in chosen[2]]  # as macOS types it: one label still
    for i, labels in enumerate([chosen[0], chosen[1], decomposed, chosen[3]]):
        assert add_tagged_images(folder, files[2 * i:2 * i + 2], labels) == []
    read = label_sets(folder)
    assert sorted(read.values()) == sorted(tuple(sorted(labels)) for labels in chosen for _ in range(2))
    assert all(name.startswith("images/digit-") for name in read)
    data = load_source(str(folder), 16)
    assert data.multi_label and tuple(data.class_names) == tuple(sorted(set(ODD)))
    rows = {tuple(name for name, on in zip(data.class_names, row) if on) for row in data.labels.tolist()}
    assert rows == {tuple(sorted(labels)) for labels in chosen}
    with open(folder / "labels.csv", newline="") as f:  # a plain CSV: commas and quotes quoted, `;` between tags
        written = list(csv.reader(f))
    assert written[0] == ["image_name", "tags"] and len(written) == 9
    assert {row[1] for row in written[1:]} == {tags_cell(sorted(labels)) for labels in chosen}
    assert inspect_source(str(folder)).layout == "CSV of file,labels (separated by semicolons)"


def test_one_label_or_none_per_image_still_reads_as_label_sets(data_dir):
    """A lone tag is written "cat;" and none ";": the column reads as label sets before any image has two."""
    folder = create_dataset("pets", multi_label=True)
    add_tagged_images(folder, digit_images(5), ["golden retriever"])
    add_tagged_images(folder, digit_images(5, start=5), ["great dane"])
    add_tagged_images(folder, digit_images(1, start=10), [])
    assert tags_cell(["cat"]) == "cat;" and tags_cell([]) == ";" and tags_cell(["a", "b"]) == "a;b"
    report = inspect_source(str(folder))
    assert report.multi_label and report.ok and report.class_counts == {"golden retriever": 5, "great dane": 5}
    assert report.verdict().startswith("Ready: 11 images with 2 labels, 0–1 per image")
    assert len(report.label_sets["no_label"]) == 1


@pytest.mark.parametrize("label", ["a;b", "cats/dogs", "../up", "..", "", "   ", None, "x" * 101])
def test_a_label_that_could_break_the_file_or_name_a_path_is_refused_and_nothing_is_written(data_dir, label):
    create_dataset("scenes", multi_label=True)
    before = snapshot(data_dir)
    with pytest.raises(DataError, match="not a usable label"):
        add_tagged_images(data_dir / "made" / "scenes", digit_images(2), ["ok", label])
    assert snapshot(data_dir) == before


def test_line_breaks_and_runs_of_spaces_in_a_label_become_one_space_as_the_file_reads_them_back():
    assert check_tag("  golden\nretriever\r\n ") == "golden retriever"
    assert check_tag("golden   retriever") == "golden retriever"


def test_an_existing_file_is_never_written_over_and_rows_already_there_are_kept(data_dir, monkeypatch):
    folder = create_dataset("scenes", multi_label=True)
    monkeypatch.setattr(collect.time, "time", lambda: 1.0)  # every save would pick the same name first
    files = digit_images(1)
    (folder / "images" / "digit-0-1000-0.png").write_bytes(mine := digit_images(1, start=1)[0][1])
    with open(folder / "labels.csv", "a") as f:  # a row written by hand, kept as it is
        f.write('images/digit-0-1000-0.png,"mine, too;"\n')
    assert add_tagged_images(folder, files, ["one"]) == []
    assert add_tagged_images(folder, files, ["one", "two"]) == []  # the same photo again: a new file
    images = folder / "images"
    assert (images / "digit-0-1000-0.png").read_bytes() == mine
    assert sorted(p.name for p in images.iterdir()) == [f"digit-0-1000-{n}.png" for n in range(3)]
    assert label_sets(folder) == {"images/digit-0-1000-0.png": ("mine, too",), "images/digit-0-1000-1.png": ("one",),
                                  "images/digit-0-1000-2.png": ("one", "two")}
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert not leftovers  # the atomic write left no temporary file


def test_a_labels_file_that_cannot_be_read_refuses_before_any_image_is_written(data_dir):
    folder = create_dataset("scenes", multi_label=True)
    (folder / "labels.csv").write_bytes(b"image_name,tags\nimages/x.png,caf\xe9;\n")  # Latin-1, not UTF-8
    before = snapshot(folder)
    with pytest.raises(DataError, match="labels.csv cannot be read"):
        add_tagged_images(folder, digit_images(2), ["one"])
    assert snapshot(folder) == before


def test_the_two_kinds_of_made_dataset_each_refuse_the_other_kinds_additions(data_dir):
    tagged, classes = create_dataset("tagged", multi_label=True), create_dataset("classes")
    with pytest.raises(DataError, match="several labels per image"):
        add_images(tagged, "cat", digit_images(1))
    with pytest.raises(DataError, match="one label per image"):
        add_tagged_images(classes, digit_images(1), ["cat"])
    assert not (tagged / "cat").exists() and not (classes / "images").exists()


def test_a_made_dataset_of_label_sets_trains(data_dir, tmp_path):
    from core.train.__main__ import main

    folder = create_dataset("digits tagged", multi_label=True)
    digits = load_digits()
    files = digit_images(40)
    for (name, data), target in zip(files, digits.target[:40]):
        labels = ["even" if target % 2 == 0 else "odd"] + (["small"] if target < 5 else [])
        add_tagged_images(folder, [(name, data)], labels)
    assert main(["--data", str(folder), "--arch", "resnet18", "--no-pretrained", "--size", "16", "--epochs", "1",
                 "--runs-dir", str(tmp_path / "runs"), "--name", "made"]) == 0
    run = RunFolder(tmp_path / "runs" / "made")
    assert run.status()["state"] == "completed" and "accuracy_multi" in run.read_metrics().epochs[-1]


def test_the_data_page_makes_a_dataset_of_label_sets_from_drops_and_camera_photos(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(tmp_path / "runs"))
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    app.switch_page("pages/data.py").run()
    next(r for r in app.radio if r.label == "Images from").set_value("Make my own").run()
    next(t for t in app.text_input if t.label == "Name").set_value("street")
    next(r for r in app.radio if r.label == "Labels").set_value("Several labels per image (tags)")
    next(b for b in app.button if b.label == "Create").click().run()
    assert not app.exception, [e.value for e in app.exception]
    folder = data_dir / "made" / "street"
    assert (folder / "labels.csv").is_file() and not app.file_uploader  # no drop zone before labels are chosen
    tags = next(m for m in app.multiselect if m.label == "Labels of the next images")
    tags.set_value(["a;b"]).run()
    assert any("';' separates" in e.value for e in app.error) and not app.file_uploader
    odd = "**bold** <i>x, \"q\""
    tags = next(m for m in app.multiselect if m.label == "Labels of the next images")
    tags.set_value(["golden retriever", odd]).run()
    app.file_uploader[0].set_value([(name, data, "image/png") for name, data in digit_images(5)]).run()
    assert not app.exception, [e.value for e in app.exception]
    assert set(label_sets(folder).values()) == {tuple(sorted(["golden retriever", odd]))}
    assert any(f"{odd}: 5 images" in t.value for t in app.text)  # shown as text, never markdown
    next(m for m in app.multiselect if m.label == "Labels of the next images").set_value(["cat"]).run()
    next(t for t in app.toggle if t.label == "Use the camera").set_value(True).run()
    for _, data in digit_images(5, fmt="JPEG", start=5):  # five camera clicks, one photo each
        app.camera_input[0].set_value(("shot.jpg", data, "image/jpeg")).run()
    assert not app.exception, [e.value for e in app.exception]
    read = label_sets(folder)
    assert sorted(read.values()).count(("cat",)) == 5 and len(read) == 10
    next(m for m in app.multiselect if m.label == "Labels of the next images").set_value([]).run()
    assert not app.camera_input  # no label chosen: nothing can be added...
    next(c for c in app.checkbox if c.label == "These images show none of the labels").check().run()
    photo = digit_images(1, fmt="JPEG", start=10)[0][1]
    app.camera_input[0].set_value(("shot.jpg", photo, "image/jpeg")).run()  # ...unless meant
    assert sorted(label_sets(folder).values())[0] == () and len(label_sets(folder)) == 11
    assert app.success and app.success[0].value.startswith("Ready: 11 images with 3 labels")
    assert app.session_state["data"] == str(folder)
    train = app.switch_page("pages/train.py").run()
    assert not train.exception and not train.warning
    assert not next(b for b in train.button if b.label == "Start training").disabled
