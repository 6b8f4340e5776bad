"""Every page through streamlit.testing.v1.AppTest, against run folders the tests make."""
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.atomic import read_json, write_json_atomic
from core.runs import compare, store
from core.runs.folder import RunFolder
from tests.conftest import ROOT, write_image_folder
from tests.waiting import RunWatch

TIMEOUT = 120  # the first run imports torch and builds caches


def open_page(page: str, run_id: str | None = "tiny") -> AppTest:
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    if run_id:
        app.query_params["run"] = run_id
    app.run()
    if page != "pages/home.py":  # Home is the default page
        app.switch_page(page).run()
    assert not app.exception, [e.value for e in app.exception]
    assert any(c.value.startswith("**Dataset**") for c in app.sidebar.caption)  # app.py ran around the page
    return app


def by_label(widgets, label):
    return next(w for w in widgets if w.label == label)


def test_home_explains_and_shows_where_the_user_is(runs_env):
    app = open_page("pages/home.py")
    assert app.title[0].value == "Transfer Learning Studio"
    assert "Transfer learning" in app.markdown[0].value
    metrics = {m.label: m.value for m in app.metric}
    assert metrics == {"Dataset": "Handwritten digits (offline)", "Run": "tiny"}
    assert any("Device" in c.value and "CPU" in c.value for c in app.sidebar.caption)
    linked = {link.proto.page for link in app.get("page_link")}  # the path names every page but Home itself
    pages = {path.stem for path in (ROOT / "pages").glob("*.py") if not path.name.startswith("_")} - {"home"}
    assert {Path(page).name for page in linked} == pages


def test_data_shows_classes_counts_and_samples_at_the_chosen_size(runs_env):
    app = open_page("pages/data.py")
    assert app.success[0].value == "Ready: 1,797 images in 10 classes."
    metrics = {m.label: m.value for m in app.metric}
    assert metrics == {"Images": "1,797", "Classes": "10", "Skipped files": "0"}
    assert len(app.get("plotly_chart")) == 2  # counts bar chart and sample grid
    assert any("At 64 px" in c.value for c in app.caption)  # the size is chosen on the Train page
    assert any(c.value == "Decoded, these images take 21 MB of memory." for c in app.caption)
    app.session_state["size"] = 32
    app.run()
    assert not app.exception and any("At 32 px" in c.value for c in app.caption)
    by_label(app.radio, "Make images square by").set_value("pad").run()
    assert not app.exception and app.session_state["resize"] == "pad"


def test_data_checks_a_folder_lists_what_it_skipped_and_previews_augmentation(runs_env, tmp_path):
    folder = write_image_folder(tmp_path / "photos", {"cat": 6, "dog": 6})
    (folder / "dog" / "broken.jpg").write_bytes(b"not a jpeg")
    app = open_page("pages/data.py")
    by_label(app.radio, "Images from").set_value("A folder on this machine").run()
    by_label(app.text_input, "Folder path").set_value(str(folder)).run()
    assert not app.exception
    assert app.success[0].value == "Ready: 12 images in 2 classes (1 file(s) skipped)."
    assert app.session_state["data"] == str(folder)
    assert app.expander[-1].label == "Skipped files (1)"
    assert app.dataframe[0].value.to_dict("records") == [{"file": "dog/broken.jpg", "reason": "not a readable image"}]
    next(b for b in app.button if b.label.startswith("Use fastai")).click().run()
    assert not app.exception and app.session_state["flip"] and app.session_state["rotate"] == 10.0
    assert len(app.get("plotly_chart")) == 3  # counts, samples, augmented batch


def test_data_says_a_dataset_past_what_memory_holds_comfortably_is_read_from_a_file(runs_env, tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_RAM_IMAGES_MB", "0")  # as for 100,000 photos at 128 px
    folder = write_image_folder(tmp_path / "photos", {"cat": 6, "dog": 6})
    app = open_page("pages/data.py")
    by_label(app.radio, "Images from").set_value("A folder on this machine").run()
    by_label(app.text_input, "Folder path").set_value(str(folder)).run()
    assert not app.exception and len(app.get("plotly_chart")) == 2
    assert any("kept in a file in the data folder's cache" in c.value for c in app.caption)


def test_a_setting_keeps_its_value_on_other_pages_and_comes_back_with_its_page(runs_env):
    app = open_page("pages/data.py")
    by_label(app.radio, "Make images square by").set_value("crop").run()
    app.switch_page("pages/train.py").run()  # the radio is not drawn here: Streamlit would drop its state
    assert not app.exception and app.session_state["resize"] == "crop"
    assert any("images made square by crop" in c.value for c in app.caption)
    app.switch_page("pages/data.py").run()
    assert by_label(app.radio, "Make images square by").value == "crop"


def test_data_refuses_an_unusable_folder_and_keeps_the_dataset(runs_env, tmp_path):
    write_image_folder(tmp_path / "one", {"only": 3})
    app = open_page("pages/data.py")
    by_label(app.radio, "Images from").set_value("A folder on this machine").run()
    by_label(app.text_input, "Folder path").set_value(str(tmp_path / "one" / "only" / "..")).run()
    assert not app.exception and "Only one class" in app.error[0].value
    assert app.session_state["data"] == "builtin:digits"


def test_downloadable_datasets_explain_themselves_without_a_network(runs_env, monkeypatch, tmp_path):
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path))
    app = open_page("pages/data.py")
    by_label(app.selectbox, "Dataset").set_value("cifar10").run()
    assert not app.exception
    if app.error:  # no network here: a sentence, not a traceback
        assert "downloaded once" in app.error[0].value


def test_train_shows_a_finished_run_with_curves_and_epoch_table(runs_env):
    app = open_page("pages/train.py")
    assert by_label(app.selectbox, "Backbone").value == "efficientnet_lite0"
    assert {s.label for s in app.select_slider} == {"Image size (pixels)", "Batch size", "Learning rate",
                                                    "Weight decay"}
    assert app.session_state["size"] == 64 and app.session_state["arch"] == "efficientnet_lite0"  # keyed by field
    assert any(h.value == "Run tiny · completed" for h in app.subheader)
    assert len(app.get("plotly_chart")) == 2  # loss and learning rate
    table = app.table[0].value
    assert list(table.columns) == ["epoch", "phase", "train_loss", "valid_loss", "accuracy", "error_rate", "time"]
    assert len(table) == 1


def test_the_epoch_table_says_which_epoch_s_head_a_frozen_phase_kept(tmp_path, monkeypatch):
    from core.train.__main__ import main

    # a rate far too high for the head: the phase's last epoch is worse than an earlier one
    assert main(["--size", "16", "--epochs", "0", "--freeze-epochs", "3", "--lr", "1", "--runs-dir", str(tmp_path),
                 "--name", "kept"]) == 0
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(tmp_path))
    rows = RunFolder(tmp_path / "kept").read_metrics().epochs
    kept = rows[-1]["kept_epoch"]
    table = open_page("pages/train.py", run_id="kept").table[0].value
    assert table["phase"].tolist()[-1] == f"frozen (epoch {kept}'s head kept)"
    assert table["valid_loss"].tolist()[-1] == table["valid_loss"].tolist()[kept - 1]
    assert read_json(tmp_path / "kept" / "status.json")["final_accuracy"] == rows[kept - 1]["accuracy"]


@pytest.mark.slow
def test_start_launches_one_run_process_and_a_second_start_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(tmp_path))
    app = open_page("pages/train.py", run_id=None)
    assert "Start training" in app.info[0].value
    by_label(app.selectbox, "Backbone").set_value("resnet18")
    by_label(app.toggle, "Start from ImageNet weights").set_value(False)
    by_label(app.select_slider, "Image size (pixels)").set_value(16)
    by_label(app.number_input, "Epochs").set_value(1)
    by_label(app.button, "Start training").click().run()
    assert not app.exception
    [run] = store.list_runs(tmp_path)
    assert run.config.arch == "resnet18" and run.config.size == 16 and not run.config.pretrained
    assert app.query_params["run"] == run.run_id
    assert RunFolder(run.path).is_active()
    by_label(app.button, "Start training").click().run()  # a second Start while the first is queued or training
    assert "is training on this device" in app.warning[0].value
    assert len(store.list_runs(tmp_path)) == 1
    second_tab = open_page("pages/train.py", run_id=None)  # no ?run= in its address
    assert any(h.value.startswith(f"Run {run.run_id} · ") for h in second_tab.subheader)
    RunWatch(RunFolder(run.path)).wait_for("completed")


def test_interpret_shows_matrix_cells_pairs_top_losses_metrics_and_report(runs_env):
    app = open_page("pages/interpret.py")
    assert by_label(app.selectbox, "Run").value == "tiny"
    assert [h.value for h in app.subheader] == ["Confusion matrix", "Most confused", "Top losses",
                                                "Can you trust its probabilities?", "Per-class metrics",
                                                "Share this run"]
    metrics = {m.label: m.value for m in app.metric}
    assert set(metrics) == {"Validation accuracy", "Error rate", "Mistakes", "Calibration error before",
                            "after calibration", "Temperature"}
    pairs = app.dataframe[0].value
    assert list(pairs.columns) == ["actual", "predicted", "count"] and len(pairs) > 0
    # the cell chooser starts on the most confused pair and shows its images
    actual, predicted = by_label(app.selectbox, "Actual class"), by_label(app.selectbox, "Predicted as")
    assert (actual.value, predicted.value) == (pairs.iloc[0]["actual"], pairs.iloc[0]["predicted"])
    assert any(f"{pairs.iloc[0]['count']} validation images of **{actual.value}**" in c.value for c in app.caption)
    first = pairs.iloc[0]
    assert any(m.value.startswith(f"**{first['actual']}** mistaken for **{first['predicted']}**") for m in app.markdown)
    per_class = app.dataframe[1].value
    assert list(per_class.columns) == ["class", "precision", "recall", "f1", "support"] and len(per_class) == 10
    assert per_class["f1"].is_monotonic_increasing  # worst first
    assert app.get("download_button")
    by_label(app.button, "Measure what it gains on the validation set").click().run()
    tta = by_label(app.metric, "Validation accuracy with TTA")
    assert tta.value.endswith("%") and f"against {metrics['Validation accuracy']} without" in tta.delta
    by_label(app.toggle, "Show each row as shares of its class").set_value(True).run()
    by_label(app.slider, "Top losses to show").set_value(4).run()
    by_label(app.toggle, "Grad-CAM heat map").set_value(False).run()
    assert not app.exception
    slider = by_label(app.slider, "Show pairs confused at least this many times")
    slider.set_value(slider.max).run()
    assert not app.exception
    remaining = app.dataframe[0].value if len(app.dataframe) == 2 else []
    assert len(remaining) < len(pairs)


@pytest.mark.parametrize("view", ["Filters", "Activations", "Attributions", "What excites a channel", "Basics"])
def test_layers_views_of_a_trained_run(runs_env, view):
    app = open_page("pages/layers.py")
    by_label(app.radio, "View").set_value(view).run()
    assert not app.exception and app.get("plotly_chart")
    if view == "Filters":  # a deeper layer is shown input channel by input channel
        layer = by_label(app.selectbox, "Convolution layer")
        layer.set_value(layer.options[3]).run()
        assert not app.exception and any(n.label.startswith("Filter (output channel") for n in app.number_input)
    if view == "Attributions":
        for method in ["integrated_gradients", "saliency", "occlusion", "grad_cam"]:
            by_label(app.radio, "Method").set_value(method).run()
            assert not app.exception, method
        by_label(app.selectbox, "Explain the class").set_value("3").run()
        assert not app.exception and len(app.dataframe[0].value) == 5  # top-5 predictions
    if view == "Basics":
        by_label(app.selectbox, "Filter").set_value("One the network learned (first layer)").run()
        assert not app.exception


def test_layers_on_the_pretrained_network_alone(runs_env):
    app = open_page("pages/layers.py")
    by_label(app.radio, "Look inside").set_value("The pretrained network alone (ImageNet)").run()
    by_label(app.select_slider, "Image size (pixels)").set_value(64).run()
    by_label(app.radio, "View").set_value("Attributions").run()
    assert not app.exception
    assert len(by_label(app.selectbox, "Explain the class").options) == 1000
    by_label(app.radio, "View").set_value("What excites a channel").run()
    assert not app.exception and app.get("plotly_chart")


@pytest.mark.parametrize("page", ["pages/interpret.py", "pages/layers.py"])
def test_analysis_pages_without_runs_point_to_training(page, tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(tmp_path))
    app = open_page(page, run_id=None)
    assert "No finished run yet" in app.info[0].value


def test_runs_lists_every_run_compares_and_deletes_with_confirmation(trained_run, tmp_path, monkeypatch):
    import shutil

    runs_dir = tmp_path / "runs"
    shutil.copytree(trained_run, runs_dir / "tiny")
    shutil.copytree(trained_run, runs_dir / "other")
    meta = read_json(runs_dir / "other" / "config.json")
    meta["config"]["size"], meta["created"] = 24, meta["created"] + 1
    write_json_atomic(runs_dir / "other" / "config.json", meta)
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(runs_dir))
    app = open_page("pages/runs.py")
    table = app.dataframe[0].value
    assert list(table["run"]) == ["other", "tiny"] and set(table["state"]) == {"completed"}
    best = max(row["accuracy"] for row in RunFolder(runs_dir / "tiny").read_metrics().epochs)
    assert list(table["best accuracy"]) == [round(best, 4)] * 2  # from status.json, kept at each epoch's end
    assert len(app.get("plotly_chart")) == 3  # accuracy, validation loss, training loss
    assert any(h.value == "Run tiny" for h in app.subheader)  # the current run, from the address
    assert app.code[0].value.startswith("python -m core.train --data builtin:digits --arch resnet18")
    by_label(app.button, "Yes, delete it").click().run()
    assert not app.exception and not (runs_dir / "tiny").exists() and (runs_dir / "other").exists()


def test_settings_that_differ_between_runs():
    from core.config import TrainConfig

    rows = compare.config_differences({"a": TrainConfig(size=32), "b": TrainConfig(size=64, lr=1e-3)})
    assert rows == [{"setting": "size", "a": "32", "b": "64"}, {"setting": "lr", "a": "0.005", "b": "0.001"}]
    # the same settings, but a recipe that cut the network elsewhere: not "the same"
    same = {"a": TrainConfig(), "b": TrainConfig()}
    recipes = {"a": {"unfrozen": "late stages", "late_cut": 12, "late_share": 0.23}, "b": {"unfrozen": "every layer"}}
    assert compare.config_differences(same, recipes) == [{"setting": "unfrozen epochs trained (chosen by the recipe)",
                                                        "a": "the late stages from block 12 (23% of the work)",
                                                        "b": "every layer"}]
    assert compare.config_differences(same, {"a": recipes["a"], "b": dict(recipes["a"])}) == []


def test_a_stopped_run_offers_resume_and_finishes(trained_run, tmp_path, monkeypatch):
    import shutil

    runs_dir = tmp_path / "runs"
    shutil.copytree(trained_run, runs_dir / "paused")
    (runs_dir / "paused" / "predictions.npz").unlink()
    RunFolder(runs_dir / "paused").update_status(state="stopped", message="Stopped by hand.")
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(runs_dir))
    app = open_page("pages/train.py", run_id="paused")
    by_label(app.button, "Resume").click().run()
    assert not app.exception
    RunWatch(RunFolder(runs_dir / "paused")).wait_for("completed")
    assert (runs_dir / "paused" / "predictions.npz").exists()


@pytest.mark.parametrize("model", ["A trained run", "The pretrained network alone (ImageNet, 1,000 classes)"])
def test_predict_asks_for_images_from_either_model(runs_env, model):
    app = open_page("pages/predict.py")
    by_label(app.radio, "Model").set_value(model).run()
    assert not app.exception and "Drop one or more images" in app.info[0].value
    assert by_label(app.slider, "Classes to show").max == 10


@pytest.mark.slow
def test_the_lr_finder_runs_from_the_train_page_and_its_suggestion_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(tmp_path))
    app = open_page("pages/train.py", run_id=None)
    by_label(app.selectbox, "Backbone").set_value("resnet18")
    by_label(app.toggle, "Start from ImageNet weights").set_value(False)
    by_label(app.select_slider, "Image size (pixels)").set_value(16)
    by_label(app.select_slider, "Batch size").set_value(16)  # a quarter of the default's work a step
    by_label(app.button, "Find a learning rate").click().run()
    [run] = store.list_runs(tmp_path)
    assert run.task == "lr_find"
    RunWatch(RunFolder(run.path)).wait_for("completed")
    app.run()
    use = next(b for b in app.button if b.label.startswith("Use valley"))
    suggested = float(use.label.split(": ")[1])
    use.click().run()
    assert not app.exception and app.session_state["lr"] == suggested
    assert by_label(app.select_slider, "Learning rate").value == suggested


def test_the_lesson_one_preset_fills_in_fastais_recipe(runs_env):
    app = open_page("pages/train.py")
    by_label(app.selectbox, "Start from").set_value("lesson1").run()
    assert not app.exception
    assert by_label(app.selectbox, "Backbone").value == "resnet34"
    assert by_label(app.number_input, "Frozen epochs first").value == 4
    assert by_label(app.number_input, "Epochs").value == 2
    assert by_label(app.select_slider, "Image size (pixels)").value == 224
    assert app.session_state["data"] == "builtin:pets" and app.session_state["lr"] == 1e-3
