"""Every page through streamlit.testing.v1.AppTest, against run folders the tests make."""
import time

import pytest
from streamlit.testing.v1 import AppTest

from core import runs
from tests.conftest import ROOT

TIMEOUT = 120  # the first run imports torch and builds caches


def open_page(page: str, run_id: str | None = "tiny") -> AppTest:
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    if run_id:
        app.query_params["run"] = run_id
    app.run()
    if page != "pages/home.py":  # Home is the default page
        app.switch_page(page).run()
    assert not app.exception, [e.value for e in app.exception]
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


def test_data_shows_classes_counts_and_samples_at_the_chosen_size(runs_env):
    app = open_page("pages/data.py")
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Images"] == "1,797" and metrics["Classes"] == "10"
    assert len(app.get("plotly_chart")) == 2  # counts bar chart and sample grid
    by_label(app.select_slider, "Image size (pixels)").set_value(32).run()
    assert not app.exception
    assert any(h.value == "Samples at 32×32 px" for h in app.subheader)
    assert app.session_state["image_size"] == 32


def test_train_shows_a_finished_run_with_curves_and_epoch_table(runs_env):
    app = open_page("pages/train.py")
    assert by_label(app.selectbox, "Backbone").value == "efficientnet_lite0"
    assert {s.label for s in app.select_slider} == {"Image size (pixels)", "Batch size", "Learning rate"}
    assert any(h.value == "Run tiny · completed" for h in app.subheader)
    assert len(app.get("plotly_chart")) == 2  # loss and learning rate
    table = app.table[0].value
    assert list(table.columns) == ["epoch", "phase", "train_loss", "valid_loss", "accuracy", "error_rate", "time"]
    assert len(table) == 1


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
    [run] = runs.list_runs(tmp_path)
    assert run.config.arch == "resnet18" and run.config.size == 16 and not run.config.pretrained
    assert app.query_params["run"] == run.run_id
    assert runs.is_active(runs.read_status(run.path))
    by_label(app.button, "Start training").click().run()  # a second Start while the first is queued or training
    assert "is training on this device" in app.warning[0].value
    assert len(runs.list_runs(tmp_path)) == 1
    deadline = time.time() + 180
    while runs.is_active(runs.read_status(run.path)) and time.time() < deadline:
        time.sleep(0.5)
    assert runs.read_status(run.path)["state"] == "completed", (run.path / "log.txt").read_text()


def test_interpret_shows_the_confusion_matrix_and_most_confused_pairs(runs_env):
    app = open_page("pages/interpret.py")
    assert by_label(app.selectbox, "Run").value == "tiny"
    assert len(app.get("plotly_chart")) == 1
    slider = by_label(app.slider, "Show pairs confused at least this many times (min_val)")
    rows_at_one = len(app.dataframe[0].value)
    assert rows_at_one > 0 and list(app.dataframe[0].value.columns) == ["actual", "predicted", "count"]
    slider.set_value(slider.max).run()
    assert not app.exception
    remaining = app.dataframe[0].value if app.dataframe else []
    assert len(remaining) < rows_at_one


def test_layers_shows_filters_and_activations_of_a_chosen_layer(runs_env):
    app = open_page("pages/layers.py")
    assert len(app.get("plotly_chart")) == 3  # filters, the image, its activation maps
    layer = by_label(app.selectbox, "Convolution layer")
    layer.set_value(layer.options[0]).run()
    assert not app.exception
    by_label(app.number_input, "Validation image (0–358)").set_value(5).run()
    assert not app.exception and len(app.get("plotly_chart")) == 3


@pytest.mark.parametrize("page", ["pages/interpret.py", "pages/layers.py"])
def test_analysis_pages_without_runs_point_to_training(page, tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(tmp_path))
    app = open_page(page, run_id=None)
    assert "No finished run yet" in app.info[0].value
