"""The dataset and settings kept beside the data (core.runs.settings), zips imported before, and the pages that use
them."""
import io
import json
import time
import zipfile

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.data.archive import UNPACKED_RECORD, unpack, unpacked_datasets
from core.data.sources import source_label
from core.runs.settings import load_settings, save_settings, settings_path
from tests.conftest import ROOT

TIMEOUT = 120


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path / "data"


def digits_zip(classes=("zero", "one"), per_class: int = 6) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for k, name in enumerate(classes):
            for i in range(per_class):
                image = io.BytesIO()
                Image.new("RGB", (16, 16), (40 + 150 * k, 90, 200 - 150 * k + i)).save(image, format="PNG")
                zf.writestr(f"{name}/{i}.png", image.getvalue())
    return buffer.getvalue()


def test_the_settings_file_follows_the_data_folder_and_round_trips_only_what_changed(data_dir):
    assert settings_path() == data_dir / "settings.json"
    assert load_settings() == ({}, None)  # nothing saved yet: the defaults, without a word
    save_settings({"size": 32, "lr": 1e-3})
    save_settings({"flip": True})  # a second tab changes another setting: both are kept
    assert load_settings() == ({"size": 32, "lr": 1e-3, "flip": True}, None)
    save_settings({})
    assert json.loads(settings_path().read_text())["settings"] == {"size": 32, "lr": 1e-3, "flip": True}


@pytest.mark.parametrize("content, says", [
    ("{not json", "could not be read"),
    ('{"settings": {"size": "big"}}', "setting 'size' is 'big', not a whole number"),
    ('{"settings": {"resize": "melt"}}', "'resize' is 'melt'"),
    ('["a list"]', "not an object"),
])
def test_a_damaged_settings_file_is_the_defaults_and_a_sentence(data_dir, content, says):
    data_dir.mkdir(parents=True)
    settings_path().write_text(content)
    values, notice = load_settings()
    assert values == {} and says in notice and "defaults are used" in notice


def test_settings_whose_dataset_is_gone_are_the_defaults_and_a_sentence(data_dir, tmp_path):
    save_settings({"data": str(tmp_path / "gone"), "size": 32})
    values, notice = load_settings()
    assert values == {} and "is no longer there" in notice and "gone" in notice
    save_settings({"data": "builtin:digits", "size": 50})
    values, notice = load_settings({"size": [16, 32, 64]})  # a size the page's slider cannot show
    assert values == {} and "'size' is 50" in notice


def test_an_unpacked_zip_keeps_its_own_name_and_is_listed_for_reuse(data_dir):
    first = unpack(digits_zip(), "My digits", file_name="My digits.zip")
    time.sleep(0.01)
    second = unpack(digits_zip(("a", "b", "c")), "other")
    assert json.loads((first.folder / UNPACKED_RECORD).read_text())["name"] == "My digits.zip"
    assert source_label(str(first.folder)) == "My digits.zip (uploaded)"
    assert source_label(str(second.folder)) == "other.zip (uploaded)"
    listed = unpacked_datasets()
    assert [(e.folder, e.name, e.n_files) for e in listed] == [(second.folder, "other.zip", 18),
                                                               (first.folder, "My digits.zip", 12)]
    assert unpack(digits_zip(), "My digits").name == "My digits.zip"  # reused, with the name it was unpacked as
    (first.folder / UNPACKED_RECORD).unlink()  # unpacked before records kept the name: the folder's, unhashed
    assert source_label(str(first.folder)) == "My-digits.zip (uploaded)"
    assert {e.folder: e.name for e in unpacked_datasets()}[first.folder] == "My-digits.zip"


def new_session(page: str | None = None) -> AppTest:
    """A browser tab opened afresh (a reload, a second tab, or after a server restart): a new session."""
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    app.run()
    if page:
        app.switch_page(page).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def by_label(widgets, label):
    return next(w for w in widgets if w.label == label)


def sidebar_lines(app: AppTest) -> list[str]:
    return [c.value.split(" · ")[0] for c in app.sidebar.caption]


def test_a_reload_keeps_the_imported_dataset_and_size_and_the_data_page_offers_it_again(data_dir):
    extraction = unpack(digits_zip(), "few digits", file_name="few digits.zip")
    app = new_session("pages/data.py")
    by_label(app.radio, "Images from").set_value("Imported before").run()
    chosen = by_label(app.selectbox, "Dataset")
    assert chosen.value == str(extraction.folder) and "few digits.zip · uploaded" in chosen.options[0]
    assert app.success[0].value == "Ready: 12 images in 2 classes." and app.session_state["data"] == chosen.value
    app.switch_page("pages/train.py").run()
    by_label(app.select_slider, "Image size (pixels)").set_value(32).run()  # applies without pressing Start
    assert not app.exception

    again = new_session("pages/train.py")
    assert again.session_state["data"] == str(extraction.folder) and again.session_state["size"] == 32
    assert by_label(again.select_slider, "Image size (pixels)").value == 32
    assert "**Dataset** · few digits.zip (uploaded)" in [c.value for c in again.sidebar.caption]
    again.switch_page("pages/data.py").run()
    assert by_label(again.radio, "Images from").value == "Imported before"
    assert by_label(again.selectbox, "Dataset").value == str(extraction.folder)
    assert any("At 32 px" in c.value for c in again.caption)
    assert not [w for w in [*again.slider, *again.select_slider] if "size" in w.label.lower()]  # set on Train only


def test_a_damaged_settings_file_opens_the_defaults_and_says_so_once(data_dir):
    data_dir.mkdir(parents=True)
    settings_path().write_text('{"settings": {"size": 32, "data": "/nowhere/at/all"}}')
    app = new_session()
    assert app.session_state["size"] == 64 and app.session_state["data"] == "builtin:digits"
    assert "is no longer there" in app.sidebar.warning[0].value
    app.run()
    assert not app.sidebar.warning  # said once
    assert load_settings() == (json.loads(settings_path().read_text())["settings"], None)  # mended on disk


def test_every_page_shows_the_dataset_and_device_lines_even_when_it_stops_early(data_dir):
    for page in ["pages/home.py", "pages/data.py", "pages/fix.py", "pages/train.py", "pages/interpret.py",
                 "pages/layers.py", "pages/predict.py", "pages/runs.py"]:
        app = new_session(page)  # no run yet: Interpret, Layers and Predict stop after saying so
        assert sidebar_lines(app)[:1] == ["**Dataset**"] and "**Device**" in sidebar_lines(app), page


def test_the_augmentation_button_says_what_it_costs_and_the_train_page_repeats_it(data_dir):
    app = new_session("pages/data.py")
    button = next(b for b in app.button if b.label.startswith("Use fastai"))
    cost = next(w.value for w in app.warning if "What it costs" in w.value)
    assert "10× slower" in cost and "Which to pick" in cost
    button.click().run()
    app.switch_page("pages/train.py").run()
    assert any("about 10× slower" in c.value for c in app.caption)
    assert new_session().session_state["flip"] is True  # kept for the next tab too


def test_the_lr_finder_marks_the_suggestion_to_pick_and_says_why(data_dir, tmp_path):
    from core.config import TrainConfig
    from core.runs import store
    from core.runs.folder import RunFolder

    folder = RunFolder(store.create_run(TrainConfig(), tmp_path / "runs", "sweep", task="lr_find"))
    lrs = [10 ** (-6 + i / 10) for i in range(50)]
    folder.write_lr_find(lrs, [2.3 - 0.02 * i for i in range(50)], {"valley": 1e-4, "steep": 1e-2})
    folder.finish("completed", "Suggested learning rate 1.0e-04 (valley); steepest 1.0e-02.")
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    app.query_params["run"] = "sweep"
    app.run()
    app.switch_page("pages/train.py").run()
    assert not app.exception
    assert any(":green-badge[:material/thumb_up: Recommended]" in m.value for m in app.markdown)
    steep = next(b for b in app.button if b.label.startswith("Use steep"))
    valley = next(b for b in app.button if b.label.startswith("Use valley"))
    assert steep.proto.type == "primary" and valley.proto.type == "secondary"
    assert any(c.value.startswith("**Pick steep.**") and "96%" in c.value and "Valley:" in c.value for c in app.caption)
    steep.click().run()
    assert app.session_state["lr"] == 1e-2
