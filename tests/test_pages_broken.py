"""A broken run folder never takes a page down: it shows as broken, with the reason, and every other run and page
keeps working; an address naming a folder outside the runs folder shows nothing from it."""
from __future__ import annotations

import json
import os
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT
from tests.test_broken_runs import BROKEN_CONFIGS, apply_damage, copy_run, damage

pytestmark = pytest.mark.slow  # ./test.sh -m "not slow" leaves these out

PAGES = ["pages/home.py", "pages/train.py", "pages/interpret.py", "pages/layers.py", "pages/predict.py",
         "pages/runs.py", "pages/fix.py"]


def render(page: str, run_id: str | None) -> AppTest:
    """The page as a user opening `?run=run_id` sees it; fails on any exception."""
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    if run_id is not None:
        app.query_params["run"] = run_id
    app.run()
    if page != "pages/home.py":
        app.switch_page(page).run()
    assert not app.exception, (page, [e.value for e in app.exception])
    return app


def shown_text(app: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "error", "warning", "info", "text") for e in app.get(kind)]
    parts += [e.value for e in app.sidebar.get("warning")]
    return "\n".join(str(p) for p in parts)


@pytest.fixture
def runs_with_one_broken(trained_run, tmp_path, monkeypatch):
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    copy_run(trained_run, runs_dir, "sound", link=True)
    copy_run(trained_run, runs_dir, "broken", link=True)
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(runs_dir))
    return runs_dir


@pytest.mark.parametrize("damage_name", ["a JSON array", "not UTF-8", "a created time that is text"])
def test_a_run_with_a_broken_config_shows_as_broken_and_every_page_renders(runs_with_one_broken, damage_name):
    breaker, reason = BROKEN_CONFIGS[damage_name]
    run = runs_with_one_broken / "broken"
    (run / "config.json").unlink()  # hard-linked to the shared run: replace, never write into it
    breaker(run) if damage_name != "a created time that is text" else \
        (run / "config.json").write_text(json.dumps({**json.loads((runs_with_one_broken / "sound" / "config.json")
                                                                   .read_text()), "created": "yesterday"}))
    for page in PAGES:
        app = render(page, "broken")
        assert any(reason in w.value for w in app.sidebar.get("warning")), page
    runs_page = render("pages/runs.py", None)
    table = runs_page.dataframe[0].value
    assert "broken" in set(table["state"]) and reason in " ".join(str(p) for p in table["problem"])
    interpret = render("pages/interpret.py", "sound")  # the sound run is untouched
    assert interpret.get("plotly_chart")


def test_a_zero_length_checkpoint_is_a_sentence_on_every_page_that_loads_the_model(runs_with_one_broken):
    for name in ("last.pt", "best.pt"):
        path = runs_with_one_broken / "broken" / "checkpoints" / name
        path.unlink()
        path.write_bytes(b"")
    for page in ("pages/layers.py", "pages/predict.py", "pages/interpret.py"):
        app = render(page, "broken")
        assert any("is empty (0 bytes)" in e.value for e in app.error), page


@pytest.mark.parametrize("address", ["../outside", "/tmp", "link", "..", "sound/../../outside"])
def test_an_address_naming_a_folder_outside_the_runs_folder_shows_nothing_from_it(runs_with_one_broken,
                                                                                 trained_run, address):
    outside = runs_with_one_broken.parent / "outside"
    copy_run(trained_run, runs_with_one_broken.parent, "outside", link=True)
    (runs_with_one_broken / "link").symlink_to(outside)
    for page in ("pages/train.py", "pages/runs.py", "pages/interpret.py"):
        app = render(page, address)
        assert "outside" not in [b.label for b in app.button] and not any(
            b.label == "Resume" for b in app.button), page
        assert any("is not a run folder" in w.value for w in app.sidebar.get("warning")), page
    assert sorted(p.name for p in outside.iterdir()) == sorted(p.name for p in trained_run.iterdir())


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damages=st.lists(damage(), min_size=1, max_size=3))
def test_whatever_happens_to_a_run_folders_files_every_page_still_renders(trained_run, tmp_path, damages):
    runs_dir = tmp_path / f"runs-{os.urandom(4).hex()}"
    runs_dir.mkdir()
    previous = os.environ.get("STUDIO_RUNS_DIR")
    os.environ["STUDIO_RUNS_DIR"] = str(runs_dir)  # hypothesis runs many examples per test call: no monkeypatch
    try:
        run = copy_run(trained_run, runs_dir, "fuzzed", link=True)
        copy_run(trained_run, runs_dir, "sound", link=True)
        outside = tmp_path / "outside.json"
        outside.write_text('{"state": "completed"}')
        for name, how, payload in damages:
            apply_damage(run, name, how, payload, outside)
        for page in PAGES:
            render(page, "fuzzed")
    finally:
        os.environ.pop("STUDIO_RUNS_DIR") if previous is None else os.environ.update(STUDIO_RUNS_DIR=previous)
        shutil.rmtree(runs_dir)


def test_a_run_whose_predictions_and_model_change_is_shown_afresh(trained_run, tmp_path, monkeypatch):
    import numpy as np

    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    run = copy_run(trained_run, runs_dir, "changing")
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(runs_dir))
    app = render("pages/interpret.py", "changing")
    before = next(m.value for m in app.metric if m.label == "Validation accuracy")
    with np.load(run / "predictions.npz") as npz:
        arrays = dict(npz)
    arrays["targets"] = (arrays["probs"].argmax(1) + 1) % arrays["probs"].shape[1]  # every answer now wrong
    (run / "predictions.npz").unlink()  # hard-linked to nothing here, but replace rather than write into it
    np.savez(run / "predictions.npz", **arrays)
    os.utime(run / "predictions.npz", (1e9, 2e9))  # a new stamp, whatever the clock's resolution
    app.run()
    after = next(m.value for m in app.metric if m.label == "Validation accuracy")
    assert before != "0.0%" and after == "0.0%"
