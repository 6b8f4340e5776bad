"""Sweeps (core.sweep): what can be searched, and real studies whose trials are real runs: two workers on one
storage, the pruner stopping a trial like Stop does, and a sweep stopped from outside."""
import signal
import subprocess
import sys
import time

import optuna
import pytest
from streamlit.testing.v1 import AppTest

from core.config import TrainConfig
from core.runs import store
from core.runs.folder import RunFolder
from core.sweep.space import (
    SEARCHABLE,
    Choices,
    Range,
    first_params,
    including,
    parse_range,
    search_space,
    with_params,
)
from core.sweep.worker import Worker, sweep_record
from tests.conftest import ROOT, write_image_folder

TINY = ["--size", "16", "--bs", "8", "--epochs", "1", "--freeze-epochs", "1"]  # a trial of a few seconds


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("sweep") / "colours", {"red": 8, "green": 8, "blue": 8})


def test_ranges_read_from_the_command_line_and_the_first_trial_is_the_starting_settings():
    assert parse_range("lr", "1e-4:1e-2") == Range(1e-4, 1e-2, log=True)
    assert parse_range("size", "32, 64") == Choices((32, 64))
    assert parse_range("augment", "on,off") == Choices((True, False))
    for name, text in [("lr", "1e-2:1e-4"), ("lr", "0:1"), ("size", "big"), ("seed", "1,2"), ("arch", "")]:
        with pytest.raises(ValueError, match=name):
            parse_range(name, text)
    with pytest.raises(ValueError, match="'seed' cannot be searched"):
        search_space("lr,seed", [])
    base = TrainConfig(lr=0.05, size=40, wd=0.0, flip=True, rotate=10.0, zoom=1.1, lighting=0.2)
    space = including(base, {name: SEARCHABLE[name] for name in ("lr", "size", "wd", "augment")})
    assert space["lr"].high == 0.05 and 40 in space["size"].options and space["wd"] == Range(0.0, 0.1, log=False)
    assert with_params(base, first_params(base, space)) == base
    assert with_params(base, {"augment": False}).augments is False


def worker_command(study, storage, runs_dir, data, trials):
    return [sys.executable, "-m", "core.sweep", "--data", str(data), "--trials", str(trials), "--study", study,
            "--storage", storage, "--runs-dir", str(runs_dir), "--search", "lr,label_smoothing", *TINY]


@pytest.fixture(scope="module")
def shared(colours, tmp_path_factory):
    """Two workers started at once on one storage, each with its own runs folder: (storage, folder, outputs)."""
    folder = tmp_path_factory.mktemp("shared")
    storage = f"sqlite:///{folder / 'study.db'}"
    workers = [subprocess.Popen(worker_command("shared", storage, folder / f"runs{n}", colours, 4), cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for n in (1, 2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    return storage, folder, outputs


def test_two_workers_on_one_storage_share_a_study_of_distinct_trials_each_a_run(shared):
    storage, tmp_path, outputs = shared
    study = optuna.load_study(study_name="shared", storage=storage)
    trials = study.get_trials()
    # four or more (two workers that look at once may each start one more); a trial whose one epoch past the frozen
    # phase fell below the median of the earlier ones may be pruned
    assert len(trials) >= 4 and {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}, outputs
    assert len({tuple(sorted(t.params.items())) for t in trials}) == len(trials)  # no settings tried twice
    runs = [r for n in (1, 2) for r in store.list_runs(tmp_path / f"runs{n}")]
    assert sorted(sweep_record(r.path)["trial"] for r in runs) == [t.number for t in trials]
    first = next(r for r in runs if sweep_record(r.path)["trial"] == 0)
    assert first.config.lr == TrainConfig().lr and first.config.label_smoothing == 0.0  # the starting settings
    assert all("sweep" in r.tags for r in runs)
    for run in runs:  # each finished trial's value is its run's final validation accuracy
        trial = trials[sweep_record(run.path)["trial"]]
        assert run.state == ("completed" if trial.state.name == "COMPLETE" else "stopped"), (run.state, trial)
        if trial.state.name == "COMPLETE":
            assert trial.value == RunFolder(run.path).read_metrics().epochs[-1]["accuracy"]
    assert any("Train with these settings: python -m core.train" in out for out in outputs), outputs


def test_a_pruned_trial_stops_like_a_run_and_says_why(colours, tmp_path, monkeypatch):
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1.01))
    base = TrainConfig(data=str(colours), size=16, bs=8, epochs=40, freeze_epochs=1)  # still training when pruned
    Worker(study, base, {"lr": SEARCHABLE["lr"]}, tmp_path, trials=1, log=lambda _: None).run()
    [trial] = study.get_trials()
    assert trial.state == optuna.trial.TrialState.PRUNED
    [run] = store.list_runs(tmp_path)
    assert run.state == "stopped" and RunFolder(run.path).can_resume()
    assert sweep_record(run.path)["pruned"].startswith("was pruned after epoch 2 (1 of its 40 epochs past the frozen "
                                                       "phase): validation accuracy")
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(tmp_path))
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))
    shown = [i.value for i in open_page("pages/train.py", run.run_id).info]
    assert any(text.startswith("This trial of the search") and "was pruned after epoch 2" in text for text in shown)


def test_ctrl_c_stops_the_sweep_and_its_trial_like_a_run_and_the_study_keeps_what_finished(colours, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    worker = subprocess.Popen(worker_command("stopped", storage, tmp_path, colours, 50), cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not [r for r in store.list_runs(tmp_path) if r.state == "running" and sweep_record(r.path).get("trial")]:
        assert worker.poll() is None and time.time() < deadline, worker.stdout.read()
        time.sleep(0.2)  # the second trial is training
    worker.send_signal(signal.SIGINT)  # Ctrl-C in the worker's terminal (its run, in a session of its own, gets none)
    output = worker.communicate(timeout=300)[0]
    assert worker.returncode == 0 and "The sweep was stopped" in output, output
    states = {sweep_record(r.path)["trial"]: r.state for r in store.list_runs(tmp_path)}
    assert states[0] == "completed" and states[1] == "stopped" and len(states) == 2, states
    stopped = next(r for r in store.list_runs(tmp_path) if sweep_record(r.path)["trial"] == 1)
    assert sweep_record(stopped.path)["stopped"] == "was stopped with the search"
    trials = optuna.load_study(study_name="stopped", storage=storage).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL"]


def open_page(page: str, run_id: str | None = None) -> AppTest:
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    if run_id:
        app.query_params["run"] = run_id
    app.run()
    app.switch_page(page).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def test_the_runs_page_shows_the_study_its_figures_and_trains_with_the_best_settings(shared, monkeypatch):
    storage, folder, _ = shared
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(folder / "runs1"))
    monkeypatch.setenv("STUDIO_DATA_DIR", str(folder / "data"))
    app = open_page("pages/runs.py")
    assert "Settings searches (Optuna studies)" in [h.value for h in app.subheader]
    trials = optuna.load_study(study_name="shared", storage=storage).get_trials()
    table = next(t.value for t in app.dataframe if "trial" in t.value.columns)
    assert sorted(table["trial"]) == [t.number for t in trials] and set(table["state"]) <= {"complete", "pruned"}
    best = max(trials, key=lambda t: t.value)
    assert any(s.value.startswith(f"Best so far: trial {best.number}, ") for s in app.success)
    assert any("validation images an accuracy is known to about ±" in c.value for c in app.caption)
    assert len(app.get("plotly_chart")) >= 2 + 2  # the runs' curves, then history and coordinates (and importances)
    mine = {sweep_record(r.path)["trial"]: r for r in store.list_runs(folder / "runs1")}
    if best.number in mine:  # the best trial ran in this runs folder: its settings go to the Train page
        next(b for b in app.button if b.label == "Train with these settings").click().run()
        assert app.session_state["lr"] == mine[best.number].config.lr


def test_the_train_page_starts_a_search_follows_its_trial_and_stops_it(colours, tmp_path, monkeypatch):
    from core.sweep.launch import active_worker

    runs_dir = tmp_path / "runs"
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(runs_dir))
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))
    app = open_page("pages/train.py")
    for name, value in dict(data=str(colours), size=16, bs=8, epochs=1, freeze_epochs=1).items():
        app.session_state[name] = value
    app.run()
    next(m for m in app.multiselect if m.label == "Settings to vary").set_value(["lr"])
    next(n for n in app.number_input if n.label == "Trials").set_value(3)
    next(t for t in app.text_input if t.label == "Study name").set_value("from the page")
    next(b for b in app.button if b.label == "Start the search").click().run()
    assert not app.exception, [e.value for e in app.exception]
    deadline = time.time() + 300
    while not store.active_run(runs_dir) or not active_worker(runs_dir):
        assert time.time() < deadline, (runs_dir / ".sweep-log.txt").read_text()
        time.sleep(0.2)
    app.run()
    assert any(t.value.startswith("Study from the page: 3 trials in all") for t in app.text)
    next(b for b in app.button if b.label == "Stop the search").click().run()
    while active_worker(runs_dir):
        assert time.time() < deadline, (runs_dir / ".sweep-log.txt").read_text()
        time.sleep(0.2)
    [run] = store.list_runs(runs_dir)
    assert run.state in ("stopped", "completed") and run.config.data == str(colours)
    assert "The sweep was stopped" in (runs_dir / ".sweep-log.txt").read_text()


def test_a_study_whose_database_is_gone_is_a_sentence_and_no_database_is_made(tmp_path, monkeypatch):
    from core.atomic import write_json_atomic

    run_dir = store.create_run(TrainConfig(), tmp_path / "runs", "orphan")
    RunFolder(run_dir).update_status(state="stopped")
    gone = tmp_path / "gone.db"
    write_json_atomic(run_dir / "sweep.json", {"study": "old", "storage": f"sqlite:///{gone}", "trial": 0})
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))
    app = open_page("pages/runs.py")
    assert any(e.value.startswith("The study old's database ") and e.value.endswith(" is not there any more.")
               for e in app.error)  # the path shown as text: its underscores escaped
    assert not gone.exists()
