"""The Runs page (issue 11, point 8): sweeps listed apart, a dataset column, names and tags, a delete that leaves
nothing picked, a sentence for a run without curves, and curves lined up by epoch, fine-tuning epoch or time."""
from __future__ import annotations

import itertools
import json
import os
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.config import TrainConfig
from core.runs import store
from core.runs.curves import epoch_curve, step_curve
from core.runs.folder import RunFolder
from tests.conftest import ROOT, linked_copy

pytestmark = pytest.mark.slow  # ./test.sh -m "not slow" leaves these out

TIMEOUT = 120


@pytest.fixture(scope="module")
def base_runs(trained_run, warm_run, sweep_run, tmp_path_factory) -> Path:
    """Real runs of the digits: "tiny" (from scratch, 1 epoch), "warm" (pretrained: 2 frozen epochs, then 1),
    "sweep" (a learning-rate sweep) and "broke" (failed before its first epoch ended)."""

    base = tmp_path_factory.mktemp("runs_page")
    linked_copy(trained_run, base / "tiny")
    linked_copy(warm_run, base / "warm")
    linked_copy(sweep_run, base / "sweep")
    broke = store.create_run(TrainConfig(), base, "broke")
    RunFolder(broke).finish("failed", "The data folder was gone.")
    return base


@pytest.fixture
def runs_dir(base_runs, tmp_path, monkeypatch) -> Path:
    """A private copy of the runs (hard links: every write replaces a file), so a test may delete and name."""
    shutil.copytree(base_runs, tmp_path / "runs", copy_function=os.link)
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path / "runs"


def open_runs(run_id: str | None) -> AppTest:
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    if run_id:
        app.query_params["run"] = run_id
    app.run()
    app.switch_page("pages/runs.py").run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def table_of(app: AppTest, prefix: str):
    return next(t for t in app.dataframe if t.key.split(":")[0] == prefix)


def figure(app: AppTest, key: str) -> dict:
    return json.loads(next(c for c in app.get("plotly_chart") if c.proto.id.endswith(key)).proto.spec)


def headings(app: AppTest) -> list[str]:
    return [h.value for h in app.subheader]


def test_curves_line_up_by_fine_tuning_epoch_and_by_time(base_runs):
    warm, tiny = (RunFolder(base_runs / name).read_metrics() for name in ("warm", "tiny"))
    assert [e["phase"] for e in warm.epochs] == ["frozen", "frozen", "unfrozen"]
    assert epoch_curve(warm.epochs, "accuracy", "epoch").x == [1, 2, 3]
    by_fine_tuning = epoch_curve(warm.epochs, "accuracy", "fine_tune")
    assert by_fine_tuning.x == [-1, 0, 1] and by_fine_tuning.frozen == [True, True, False]
    assert epoch_curve(tiny.epochs, "accuracy", "fine_tune").x == [1]  # from scratch: its only epoch lines up
    by_time = epoch_curve(warm.epochs, "accuracy", "time")
    assert by_time.x == pytest.approx(list(itertools.accumulate(e["seconds"] / 60 for e in warm.epochs)))
    steps = step_curve(warm.steps, warm.epochs, "fine_tune")
    frozen_steps = warm.epochs[1]["step"]
    assert len(steps.x) == len(warm.steps) and steps.x == sorted(steps.x)
    assert steps.x[frozen_steps - 1] == 0 and steps.x[-1] == 1  # the last frozen step ends at 0, the last at 1
    assert steps.frozen == [s["step"] <= frozen_steps for s in warm.steps]
    assert step_curve(warm.steps, [], "epoch").x == []  # no finished epoch: nothing says where a step lies


def test_sweeps_are_listed_apart_with_their_suggestions_and_runs_show_their_dataset(runs_dir):
    app = open_runs("tiny")
    table = table_of(app, "runs_table").value
    assert set(table["run"]) == {"tiny", "warm", "broke"}  # no sweep among the training runs
    assert set(table["dataset"]) == {"Handwritten digits (offline)"}
    sweeps = table_of(app, "sweeps_table").value
    assert list(sweeps["sweep"]) == ["sweep"] and "valley" in sweeps["suggestions"][0]
    assert "Learning-rate sweeps" in headings(app)
    app.session_state[table_of(app, "sweeps_table").key] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    app.run()
    next(b for b in app.button if b.key == "delete:sweep").click().run()
    assert not app.exception and not (runs_dir / "sweep").exists() and (runs_dir / "tiny").exists()
    assert not [t for t in app.dataframe if t.key.startswith("sweeps_table")]


def test_a_run_is_named_and_tagged_on_the_page_and_the_table_filters_by_tag(runs_dir):
    config_bytes = (runs_dir / "warm" / "config.json").read_bytes()
    app = open_runs("warm")
    assert headings(app)[0] == "Run warm"
    app.text_input(key="name:warm").set_value("Pretrained, 2 frozen")
    app.multiselect(key="tags:warm").set_value(["baseline", "frozen-2"])
    next(b for b in app.button if b.label == "Save name and tags").click().run()
    assert not app.exception
    assert store.read_naming(runs_dir / "warm") == ("Pretrained, 2 frozen", ("baseline", "frozen-2"))
    assert (runs_dir / "warm" / "config.json").read_bytes() == config_bytes
    table = table_of(app, "runs_table").value.set_index("run")
    assert table.loc["warm", "name"] == "Pretrained, 2 frozen" and list(table.loc["warm", "tags"]) == \
        ["baseline", "frozen-2"]
    assert "Run warm · Pretrained, 2 frozen" in headings(app)
    app.multiselect(key="runs_tag_filter").set_value(["baseline"]).run()
    assert list(table_of(app, "runs_table").value["run"]) == ["warm"]
    legend = [trace["name"] for trace in figure(app, "compare_accuracy")["data"]]
    assert set(legend) == {"Pretrained, 2 frozen (warm)"}


def test_after_a_delete_nothing_is_picked_and_the_page_says_what_was_deleted(runs_dir):
    app = open_runs("tiny")
    table = table_of(app, "runs_table")
    assert app.session_state[table.key]["selection"]["rows"] == [list(table.value["run"]).index("tiny")]
    next(b for b in app.button if b.key == "delete:tiny").click().run()
    assert not app.exception and not (runs_dir / "tiny").exists()
    table = table_of(app, "runs_table")
    assert "tiny" not in set(table.value["run"]) and app.session_state[table.key]["selection"]["rows"] == []
    assert "Deleted run tiny" in app.success[0].value
    assert not [h for h in headings(app) if h.startswith("Run ")] and not app.get("plotly_chart")
    assert app.session_state["run_id"] is None and "run" not in app.query_params
    app.run()  # another rerun still shows nothing picked: the selection never moves to another run by itself
    assert not [h for h in headings(app) if h.startswith("Run ")]


def test_a_failed_run_shows_a_sentence_instead_of_empty_charts(runs_dir):
    app = open_runs("broke")
    assert "Run broke failed before it finished an epoch" in app.info[0].value
    assert "The data folder was gone." in app.info[0].value
    assert not app.get("plotly_chart")


def test_compared_curves_line_up_by_the_chosen_axis_and_show_what_was_frozen(runs_dir):
    app = open_runs("warm")
    order = list(table_of(app, "runs_table").value["run"])
    rows = [order.index("warm"), order.index("tiny")]
    app.session_state[table_of(app, "runs_table").key] = {"selection": {"rows": rows, "columns": [], "cells": []}}
    app.run()
    assert any("Dotted lines and open markers" in c.value for c in app.caption)

    def last_x(align: str) -> dict[str, float]:
        app.radio(key="runs_align").set_value(align).run()
        assert not app.exception
        spec = figure(app, "compare_accuracy")
        return {t["name"]: t["x"][-1] for t in spec["data"] if t["line"]["dash"] == "solid"}, spec

    by_epoch, _ = last_x("epoch")
    assert by_epoch == {"warm": 3, "tiny": 1}
    by_fine_tuning, spec = last_x("fine_tune")
    assert by_fine_tuning == {"warm": 1, "tiny": 1}  # each run's first fine-tuning epoch at 1
    frozen = [t for t in spec["data"] if t["line"]["dash"] == "dot"]
    assert [(t["name"], t["x"]) for t in frozen] == [("warm", [-1, 0])]
    assert spec["layout"]["xaxis"]["title"]["text"].startswith("fine-tuning epoch")
    assert any(a["text"] == "unfrozen" for a in spec["layout"]["annotations"])
    by_time, spec = last_x("time")
    assert spec["layout"]["xaxis"]["title"]["text"] == "training time (minutes)" and by_time["warm"] > 0
