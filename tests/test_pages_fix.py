"""The data loop in the pages (AppTest): make a dataset, find and fix label errors, undo, retrain, compare runs
by their data. What only a browser can do (dropping files, the camera) is in test_browser.py."""
import io
import json
import shutil

import pytest
from PIL import Image

from bench.label_noise import write_digits
from core.data.collect import add_images
from core.data.load import edit_log_for
from tests.test_pages import by_label, open_page


def photos(n: int, colour) -> list[tuple[str, bytes]]:
    files = []
    for i in range(n):
        buffer = io.BytesIO()
        Image.new("RGB", (16, 16), colour).save(buffer, format="PNG")
        files.append((f"photo{i}.png", buffer.getvalue()))
    return files


def test_make_a_dataset_in_the_app_and_train_only_once_it_has_enough(runs_env, tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))
    app = open_page("pages/data.py")
    by_label(app.radio, "Images from").set_value("Make my own").run()
    by_label(app.text_input, "Name").set_value("toys")  # in a form: sent with its button
    next(b for b in app.button if b.label == "Create").click().run()
    assert not app.exception and app.session_state["made_choice"] == "toys"
    for name in ("car", "ball"):
        by_label(app.text_input, "New class").set_value(name)
        next(b for b in app.button if b.label == "Add a class").click().run()
    folder = tmp_path / "data" / "made" / "toys"
    assert sorted(p.name for p in folder.iterdir()) == ["ball", "car"]
    add_images(folder, "car", photos(6, (200, 30, 30)))  # what a drop or six camera clicks save
    add_images(folder, "ball", photos(3, (30, 30, 200)))
    from pages._common import forget_dataset_caches
    forget_dataset_caches()
    app.run()
    assert not app.exception and any("at least 5 images" in w.value for w in app.warning)
    assert any("ball: 2 more" in t.value for t in app.text)
    train = app.switch_page("pages/train.py").run()
    assert any("needs more images" in w.value for w in train.warning)
    assert by_label(train.button, "Start training").disabled
    add_images(folder, "ball", photos(2, (30, 30, 190)))
    forget_dataset_caches()
    train.run()
    assert not by_label(train.button, "Start training").disabled and app.session_state["data"] == str(folder)


@pytest.mark.slow
def test_the_fix_page_finds_moved_digits_records_a_fix_and_undoes_it(runs_env, tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))
    folder = tmp_path / "noisy"
    moved = write_digits(folder, noise_seed=0)
    app = open_page("pages/fix.py")
    app.session_state["data"] = str(folder)
    app.run()
    by_label(app.toggle, "Look for label errors").set_value(True).run()
    assert not app.exception
    decisions = [s for s in app.selectbox if s.label == "Decision" and s.form_id == "review:suspects"]
    assert len(decisions) == 12
    shown = [t.value.split("\n")[0] for t in app.text if "\nlabel: " in t.value][:12]
    assert len(set(shown) & moved) >= 9  # most of the first twelve suspects were really moved
    target = next(o for o in decisions[0].options if o.startswith("relabel as "))
    decisions[0].set_value(target)
    next(b for b in app.button if b.label == "Record these decisions").click().run()
    assert not app.exception and any("Recorded 1 decision(s) as batch 1" in s.value for s in app.success)
    [batch] = edit_log_for(str(folder)).batches()
    assert batch["view"] == "suspects" and batch["edits"][0]["label"] == target[len("relabel as "):]
    assert app.dataframe[0].value.to_dict("records")[0]["edits"] == 1
    by_label(app.button, "Undo the last batch").click().run()
    assert not app.exception and edit_log_for(str(folder)).batches() == []
    # "Relabel all as suggested" takes the suggestions only where a person left "no change": a "keep" stays a keep,
    # and a relabel chosen by hand stays that label
    decisions = [s for s in app.selectbox if s.label == "Decision" and s.form_id == "review:suspects"]
    shown = [t.value for t in app.text if "\nlabel: " in t.value][:12]
    decisions[0].set_value("keep: the label is right")
    chosen = next(o for o in reversed(decisions[1].options) if o.startswith("relabel as "))
    decisions[1].set_value(chosen)
    next(b for b in app.button if b.label == "Relabel all as suggested").click().run()
    assert not app.exception
    [batch] = edit_log_for(str(folder)).batches()
    by_file = {edit["file"]: edit for edit in batch["edits"]}
    first, second = (text.split("\n")[0] for text in shown[:2])
    assert by_file[first] == {"file": first, "keep": True}
    assert by_file[second]["label"] == chosen[len("relabel as "):]
    others = [text for text in shown[2:] if "looks like: " in text]
    assert others and len(batch["edits"]) == 2 + len(others)
    assert all(by_file[text.split("\n")[0]]["label"] == text.split("looks like: ")[1].split("\n")[0]
               for text in others)
    assert all("% of the evidence against its label" in text for text in shown)  # how sure each suggestion is


def test_interpret_fixes_top_losses_and_runs_compare_two_runs_by_data(trained_run, tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))
    runs_dir = tmp_path / "runs"
    shutil.copytree(trained_run, runs_dir / "tiny")
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(runs_dir))
    app = open_page("pages/interpret.py")
    grid = [s for s in app.selectbox if s.label == "Decision"]
    assert grid, "the top losses come with a decision each"
    grid[-1].set_value("remove from the dataset")
    buttons = [b for b in app.button if b.label == "Record these decisions"]
    buttons[-1].click().run()
    assert not app.exception
    [batch] = edit_log_for("builtin:digits").batches()
    assert batch["view"] == "top losses" and batch["edits"][0]["label"] is None
    assert by_label(app.button, "Retrain with these fixes")
    # a second run as if retrained on the mended digits: its image list lacks the removed one
    shutil.copytree(trained_run, runs_dir / "mended")
    items = json.loads((runs_dir / "mended" / "data_items.json").read_text())
    removed = batch["edits"][0]["file"]
    (runs_dir / "mended" / "data_items.json").write_text(json.dumps([row for row in items if row[0] != removed]))
    meta = json.loads((runs_dir / "mended" / "config.json").read_text())
    meta["created"] += 1
    (runs_dir / "mended" / "config.json").write_text(json.dumps(meta))
    runs_page = open_page("pages/runs.py")
    runs_page.session_state["runs_table"] = {"selection": {"rows": [0, 1], "columns": []}}
    runs_page.run()
    assert not runs_page.exception
    metrics = {m.label: m.value for m in runs_page.metric}
    assert metrics.get("Images removed") == "1" and metrics.get("Images relabelled") == "0"
