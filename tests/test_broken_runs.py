"""A damaged or foreign run folder is reported in a sentence and never takes the run list (or a page) down; only
run folders inside the runs folder are ever shown, resumed, exported or deleted."""
from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import BrokenRun
from core.inspect.interpret import load_predictions
from core.runs import compare, store
from core.runs.checkpoint import load_checkpoint, load_model
from core.runs.folder import RunFolder
from core.train.__main__ import main as train_main


def copy_run(trained_run: Path, runs_dir: Path, name: str, link: bool = False) -> Path:
    """A copy of the run folder; with `link`, its files hard-linked (no disk used: a tiny run's checkpoints weigh
    250 MB), for tests that only ever replace files, never write into them."""
    shutil.copytree(trained_run, runs_dir / name, copy_function=os.link if link else shutil.copy2)
    return runs_dir / name


def rewrite_config(run: Path, change) -> None:
    request = json.loads((run / "config.json").read_text(encoding="utf-8"))
    change(request)
    (run / "config.json").write_text(json.dumps(request), encoding="utf-8")


BROKEN_CONFIGS = {
    "a JSON array": (lambda run: (run / "config.json").write_text("[1, 2]"), "holds a JSON list, not an object"),
    "not UTF-8": (lambda run: (run / "config.json").write_bytes(b'{"config": {"data": "caf\xe9"}}'),
                  "is not UTF-8 text"),
    "cut off": (lambda run: (run / "config.json").write_text('{"config": {"da'), "is not valid JSON"),
    "a created time that is text": (lambda run: rewrite_config(run, lambda r: r.update(created="yesterday")),
                                    "'created' is 'yesterday', not a time"),
    "a size that is text": (lambda run: rewrite_config(run, lambda r: r["config"].update(size="big")),
                            "setting 'size' is 'big', not a whole number"),
    "settings that are a list": (lambda run: rewrite_config(run, lambda r: r.update(config=[1])),
                                 "the settings are a list, not an object"),
}


@pytest.mark.parametrize("damage", list(BROKEN_CONFIGS))
def test_a_run_whose_config_cannot_be_read_is_listed_as_broken_with_the_reason(trained_run, tmp_path, damage):
    good = copy_run(trained_run, tmp_path, "good")
    broken = copy_run(trained_run, tmp_path, "broken")
    breaker, reason = BROKEN_CONFIGS[damage]
    breaker(broken)
    listed = {run.run_id: run for run in store.list_runs(tmp_path)}
    assert set(listed) == {"good", "broken"} and set(store.run_ids(tmp_path)) == {"good", "broken"}
    assert listed["good"].problem is None and listed["good"].state == "completed"
    assert listed["broken"].state == "broken" and reason in listed["broken"].problem
    assert listed["broken"].problem.startswith("Run broken cannot be read: ")
    assert RunFolder(broken).problem() == listed["broken"].problem
    with pytest.raises(BrokenRun, match=re.escape(reason)):
        RunFolder(broken).config()
    store.delete_run(broken, tmp_path)  # a broken run can still be cleaned away
    assert not broken.exists() and good.exists()


def test_a_zero_length_checkpoint_is_a_sentence_not_a_crash(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path, "empty")
    for checkpoint in (run / "checkpoints").iterdir():
        checkpoint.write_bytes(b"")
    with pytest.raises(BrokenRun, match=r"checkpoints/last.pt is empty \(0 bytes\)"):
        load_model(run)
    (run / "checkpoints" / "last.pt").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(BrokenRun, match="is damaged and cannot be read"):
        load_checkpoint(run / "checkpoints" / "last.pt")


def test_resume_from_a_checkpoint_with_a_pickle_payload_is_refused_in_a_sentence(trained_run, tmp_path, capfd):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    run = copy_run(trained_run, tmp_path, "evil")
    (run / "checkpoints" / "last.pt").write_bytes(pickle.dumps({"model": Payload()}, protocol=2))
    RunFolder(run).finish("stopped", "Stopped by hand.")
    assert train_main(["--resume", str(run)]) == 1
    out, err = capfd.readouterr()
    message = RunFolder(run).status()["message"]
    assert RunFolder(run).status()["state"] == "failed" and "holds more than weights" in message
    assert "Traceback" not in out + err and not (tmp_path / "pwned").exists()


def test_resume_of_a_folder_that_is_no_run_says_so_and_writes_nothing(tmp_path, capfd):
    (tmp_path / "not-a-run").mkdir()
    assert train_main(["--resume", str(tmp_path / "not-a-run")]) == 2
    assert "is not a run folder" in capfd.readouterr().err
    assert list((tmp_path / "not-a-run").iterdir()) == []


def test_only_run_folders_directly_inside_the_runs_folder_are_named_by_a_run_id(trained_run, tmp_path):
    runs_dir, outside = tmp_path / "runs", tmp_path / "elsewhere"
    runs_dir.mkdir()
    copy_run(trained_run, runs_dir, "real")
    copy_run(trained_run, tmp_path, "elsewhere")
    (runs_dir / "link").symlink_to(outside)
    copy_run(trained_run, runs_dir, ".hidden")
    assert store.run_folder("real", runs_dir) == runs_dir / "real"
    for run_id in [str(outside), "../elsewhere", "real/../../elsewhere", "link", ".hidden", "..", ".", "", "a/b",
                   "real\x00", "missing", None, 7]:
        assert store.run_folder(run_id, runs_dir) is None, run_id
    assert store.run_ids(runs_dir) == ["real"]
    with pytest.raises(ValueError):
        store.delete_run(runs_dir / "link", runs_dir)
    with pytest.raises(ValueError):
        store.delete_run(outside, runs_dir)
    assert outside.exists()


def test_a_dashboard_looking_at_the_lock_never_makes_a_starting_run_fail(tmp_path):
    stop = threading.Event()

    def look():
        while not stop.is_set():
            store.TrainingLock(tmp_path).held_by_other()

    lookers = [threading.Thread(target=look) for _ in range(2)]
    for looker in lookers:
        looker.start()
    try:
        for n in range(100):
            lock = store.TrainingLock(tmp_path)
            lock.acquire(f"run-{n}")  # DeviceBusy here would be a start failing because someone looked
            assert store.TrainingLock(tmp_path).held_by_other() == f"run-{n}"
            lock.release()
    finally:
        stop.set()
        for looker in lookers:
            looker.join()
    assert (tmp_path / store.LOCK_NAME).read_text() == "run-99"  # looking wrote nothing


def test_status_fields_and_metric_rows_of_the_wrong_type_are_left_out(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path, "odd")
    status = json.loads((run / "status.json").read_text())
    status.update(started="x", best_accuracy="high", heartbeat=float("nan"), pid=True, epoch=[1], active_s="long")
    (run / "status.json").write_text(json.dumps(status))
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"kind": "step", "step": "x", "loss": 1, "lr": 1}\n[1]\n"text"\n{"kind": "epoch", "epoch": 9}\n')
        f.write('{"kind": "step", "step": 999, "loss": NaN, "lr": 0.1}\n{"kind": "step", "step": 1000, "loss": 0.5, '
                '"lr": 0.1}\n')
    folder = RunFolder(run)
    assert not {"started", "best_accuracy", "heartbeat", "pid", "epoch", "active_s"} & set(folder.raw_status())
    summary = store.summarize(run)
    assert summary.state == "completed" and summary.best_accuracy is None and summary.seconds is None
    metrics = folder.read_metrics()
    assert metrics.steps[-1]["step"] == 1000 and all(isinstance(row["step"], int) for row in metrics.steps)
    assert [row["epoch"] for row in metrics.epochs] == [1]


def test_damaged_predictions_are_a_sentence(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path, "bad-predictions")
    with np.load(run / "predictions.npz") as npz:
        arrays = dict(npz)
    np.savez(run / "predictions.npz", **{**arrays, "probs": arrays["probs"][:, :3]})  # fewer classes than the run
    with pytest.raises(BrokenRun, match="does not fit its 10 classes"):
        load_predictions(run)
    (run / "predictions.npz").write_bytes(b"")
    with pytest.raises(BrokenRun, match="predictions.npz is damaged"):
        load_predictions(run)


# Property: whatever happens to the files of a run folder, the engine's readers return or raise BrokenRun.
RUN_FILES = ["config.json", "status.json", "metrics.jsonl", "data.json", "data_items.json", "predictions.npz",
             "checkpoints/last.pt", "checkpoints/best.pt", "lr_find.json", "recipe.json"]
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=3), max_leaves=6)


FILE_KEYS = {"config.json": ["config", "created", "task", "command", "versions"],
             "status.json": ["state", "pid", "heartbeat", "started", "finished", "best_accuracy", "step", "epoch",
                             "total_steps", "total_epochs", "imgs_per_s", "eta_s", "message", "model_checkpoint"],
             "data.json": ["class_names", "n_train", "n_valid", "edits", "data_fingerprint"],
             "lr_find.json": ["lrs", "losses", "suggestions"],
             "recipe.json": ["unfrozen", "late_cut", "late_share", "cached_shape"]}
SETTINGS = ["data", "size", "arch", "lr", "epochs", "pretrained", "label_regex"]


@st.composite
def damage(draw):
    """(file, how, payload): a mutation of one run-folder file; "fields" replaces some of its JSON fields (or, in
    config.json, some settings) by values of any JSON type."""
    name = draw(st.sampled_from(RUN_FILES + list(FILE_KEYS) * 2))  # the JSON files most: pages read their fields
    hows = ["delete", "empty", "half", "bytes", "folder", "json", "link"] + ["fields"] * 7 * (name in FILE_KEYS)
    how = draw(st.sampled_from(hows))
    if how == "bytes":
        return name, how, draw(st.binary(max_size=64))
    if how == "fields":
        keys = FILE_KEYS[name] + (["config." + key for key in SETTINGS] if name == "config.json" else [])
        return name, how, draw(st.dictionaries(st.sampled_from(keys), JSON_VALUES, min_size=1, max_size=len(keys)))
    return name, how, draw(JSON_VALUES)


def apply_damage(run: Path, name: str, how: str, payload, outside: Path) -> None:
    path = run / name
    original = path.read_bytes() if path.is_file() else b""
    if path.is_file() or path.is_symlink():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    if how == "empty":
        path.write_bytes(b"")
    elif how == "half":
        path.write_bytes(original[: len(original) // 2])
    elif how == "bytes":
        path.write_bytes(payload)
    elif how == "folder":
        path.mkdir()
    elif how == "json":
        path.write_text(json.dumps(payload))
    elif how == "fields":
        try:
            data = json.loads(original)
        except ValueError:
            data = {}
        data = data if isinstance(data, dict) else {}
        for key, value in payload.items():
            if key.startswith("config.") and isinstance(data.get("config"), dict):
                data["config"][key[7:]] = value
            else:
                data[key] = value
        path.write_text(json.dumps(data))
    elif how == "link":
        path.symlink_to(outside)


def read_everything(run: Path) -> None:
    """Every way the engine reads a run folder for the dashboard; BrokenRun is the only failure allowed."""
    folder = RunFolder(run)
    store.list_runs(run.parent), store.run_ids(run.parent), store.summarize(run), store.run_folder(run.name, run.parent)
    folder.status(), folder.raw_status(), folder.is_active(), folder.can_resume(), folder.read_metrics()
    folder.lr_find(), folder.data_items(), folder.model_stamp(), folder.problem(), compare.recipe_text(folder.recipe())
    for read in (folder.config, folder.class_names, lambda: load_predictions(run), lambda: load_model(run)):
        try:
            read()
        except (BrokenRun, FileNotFoundError):
            pass


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # examples: the profile's (conftest.py)
@given(damages=st.lists(damage(), min_size=1, max_size=3))
@pytest.mark.slow
def test_whatever_happens_to_a_run_folders_files_the_engine_answers_or_says_broken(trained_run, tmp_path, damages):
    runs_dir = tmp_path / f"runs-{os.urandom(4).hex()}"
    runs_dir.mkdir()
    try:
        run = copy_run(trained_run, runs_dir, "fuzzed", link=True)  # every damage replaces a file, never edits it
        copy_run(trained_run, runs_dir, "sound", link=True)
        outside = tmp_path / "outside.json"
        outside.write_text('{"state": "completed"}')
        for name, how, payload in damages:
            apply_damage(run, name, how, payload, outside)
        read_everything(run)
        assert store.summarize(runs_dir / "sound").state == "completed"
        assert "sound" in store.run_ids(runs_dir)
    finally:
        shutil.rmtree(runs_dir)
