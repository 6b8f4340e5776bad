"""A run as a process with a folder: what a finished run leaves, the device lock, stop, resume, a NaN loss, the
command line and torchrun."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from core.config import TrainConfig
from core.runs import store
from core.runs.folder import RunFolder
from core.train.__main__ import main
from core.train.run import run_training
from tests.conftest import ROOT


def test_run_folder_after_a_one_epoch_run(trained_run):
    config = json.loads((trained_run / "config.json").read_text())  # what was asked, written once
    assert config["config"]["arch"] == "resnet18" and set(config) == {"config", "task", "command", "created",
                                                                      "versions"}
    assert config["command"].startswith("python -m core.train --data builtin:digits --arch resnet18")
    data = json.loads((trained_run / "data.json").read_text())  # what the data turned out to be
    assert data["class_names"] == [str(i) for i in range(10)] == RunFolder(trained_run).class_names()
    assert data["n_train"] + data["n_valid"] == 1797 and len(data["data_fingerprint"]) == 16
    status = RunFolder(trained_run).status()
    assert status["state"] == "completed" and status["step"] == status["total_steps"] == 1437 // 64
    tail = RunFolder(trained_run).read_metrics()
    assert len(tail.steps) == 22 and [row["epoch"] for row in tail.epochs] == [1]
    epoch = tail.epochs[0]
    assert set(epoch) >= {"epoch", "train_loss", "valid_loss", "accuracy", "error_rate", "seconds"}
    assert epoch["accuracy"] > 0.5  # chance is 0.1
    assert epoch["error_rate"] == pytest.approx(1 - epoch["accuracy"])
    checkpoint = torch.load(trained_run / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["epoch"] == 1 and "optimizer" in checkpoint and "scheduler" in checkpoint
    with np.load(trained_run / "predictions.npz") as predictions:
        assert predictions["probs"].shape == (data["n_valid"], 10)
        assert (predictions["probs"].argmax(1) == predictions["targets"]).mean() == pytest.approx(epoch["accuracy"])


def test_a_second_training_is_refused_while_one_holds_the_device(tmp_path):
    lock = store.TrainingLock(tmp_path)
    lock.acquire("first-run")
    try:
        run_dir = store.create_run(TrainConfig(), tmp_path, "second")
        assert run_training(run_dir) == "failed"
        assert "first-run is training" in RunFolder(run_dir).status()["message"]
        assert store.active_run(tmp_path) == "first-run"
    finally:
        lock.release()
    assert store.TrainingLock(tmp_path).held_by_other() is None


def wait_for(condition, timeout=240):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)


RESUME_CONFIG = TrainConfig(arch="resnet18", pretrained=False, size=32, bs=64, epochs=3, seed=1)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    run_dir = store.create_run(RESUME_CONFIG, tmp_path_factory.mktemp("whole"), "whole")
    assert run_training(run_dir) == "completed"
    return RunFolder(run_dir).read_metrics().epochs[-1]


@pytest.mark.slow
def test_a_run_killed_then_stopped_mid_epoch_resumes_each_time_where_it_was(tmp_path, uninterrupted):
    """One run, two ends: killed mid-epoch (interrupted: resume from the last checkpoint), then, resumed as a
    process, stopped mid-epoch by request (stopped: it checkpoints that very step), then resumed to the end."""
    run_dir = store.create_run(RESUME_CONFIG, tmp_path, "killed")
    process = store.launch(run_dir)
    wait_for(lambda: len(RunFolder(run_dir).read_metrics().steps) >= 30)  # well into the second epoch (22 steps each)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = RunFolder(run_dir).read_metrics()
    assert RunFolder(run_dir).status()["state"] == "interrupted" and RunFolder(run_dir).can_resume()
    assert len(before.steps) >= 30 and [row["epoch"] for row in before.epochs] == [1]
    # a checkpoint write cut short leaves only a temporary file, never a broken last.pt
    (run_dir / "checkpoints" / ".last.pt.tmp").write_bytes(b"half a checkpoint")

    process = store.launch(run_dir, resume=True)
    wait_for(lambda: len(RunFolder(run_dir).read_metrics().steps) >= 49)  # into the third epoch
    assert RunFolder(run_dir).status()["state"] == "running"
    RunFolder(run_dir).request_stop()
    assert process.wait(timeout=120) == 0
    status = RunFolder(run_dir).status()
    assert status["state"] == "stopped" and "Stopped at epoch" in status["message"]
    assert 49 <= status["step"] < 66 == status["total_steps"]
    assert (run_dir / "checkpoints" / "last.pt").exists() and (run_dir / "predictions.npz").exists()
    assert "Stopped at epoch" in (run_dir / "log.txt").read_text()
    checkpoint = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["step"] == status["step"] and checkpoint["batch_in_epoch"] == status["step"] - 44

    assert main(["--resume", str(run_dir)]) == 0
    after = RunFolder(run_dir).read_metrics()
    assert RunFolder(run_dir).status()["state"] == "completed"
    assert [row["step"] for row in after.steps] == list(range(1, 67))  # every step once, none lost or doubled
    assert [row["epoch"] for row in after.epochs] == [1, 2, 3]
    assert abs(after.epochs[-1]["accuracy"] - uninterrupted["accuracy"]) <= 0.02
    # each epoch's training loss is over all its batches, the stopped one's before the stop too (full batches of 64)
    for row in after.epochs:
        losses = [step["loss"] for step in after.steps if step["epoch"] == row["epoch"]]
        assert len(losses) == 22 and row["train_loss"] == pytest.approx(sum(losses) / 22, rel=1e-6)


def test_checkpoints_load_weights_only_and_a_pickle_payload_never_runs(tmp_path, trained_run):
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"model": Payload()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError):
        torch.load(evil, weights_only=True)
    assert not (tmp_path / "pwned").exists()
    shutil.copytree(trained_run, tmp_path / "run")
    for name in ("best.pt", "last.pt"):  # whichever the run's model is read from
        shutil.copyfile(evil, tmp_path / "run" / "checkpoints" / name)
    from core.errors import BrokenRun
    from core.runs.checkpoint import load_model
    with pytest.raises(BrokenRun, match="holds more than weights"):  # torch's UnpicklingError, as a sentence
        load_model(tmp_path / "run")
    assert not (tmp_path / "pwned").exists()


def test_a_nan_loss_stops_the_run_with_a_sentence_and_keeps_the_last_good_epoch(tmp_path):
    config = TrainConfig(arch="resnet18", pretrained=False, size=16, epochs=1, lr=1e9)
    early = store.create_run(config, tmp_path, "early")
    assert run_training(early) == "failed"
    status = RunFolder(early).status()
    assert status["message"].startswith("The loss became nan") and "10 times lower" in status["message"]
    assert "no model to keep" in status["message"] and not (early / "predictions.npz").exists()
    # a blow-up after a checkpoint (here: optimizer state poisoned so the first resumed step breaks the weights)
    later = store.create_run(TrainConfig(arch="resnet18", pretrained=False, size=16, epochs=2), tmp_path, "later")
    (later / "STOP").touch()  # stops after its first batch, saving a good checkpoint
    assert run_training(later) == "stopped"
    checkpoint = torch.load(later / "checkpoints" / "last.pt", weights_only=True)
    for state in checkpoint["optimizer"]["state"].values():
        state["exp_avg_sq"].fill_(-1.0)  # sqrt of a negative: the next update is NaN
    torch.save(checkpoint, later / "checkpoints" / "last.pt")
    assert run_training(later, resume=True) == "failed"
    assert "last checkpoint is kept" in RunFolder(later).status()["message"]
    with np.load(later / "predictions.npz") as predictions:
        assert np.isfinite(predictions["probs"]).all()


@pytest.mark.slow
def test_keep_best_finishes_with_the_best_epoch_and_label_smoothing_trains(tmp_path):
    config = TrainConfig(arch="resnet18", pretrained=False, size=16, epochs=3, keep_best=True, label_smoothing=0.1)
    run_dir = store.create_run(config, tmp_path)
    assert run_training(run_dir) == "completed"
    best = max(row["accuracy"] for row in RunFolder(run_dir).read_metrics().epochs)
    assert RunFolder(run_dir).status()["final_accuracy"] == pytest.approx(best)
    assert "--keep-best" in RunFolder(run_dir).command
    assert_model_is_the_one_that_predicted(run_dir, "best.pt")


def assert_model_is_the_one_that_predicted(run_dir, checkpoint_name: str) -> None:
    """Every page that loads a run's model gets the weights its predictions.npz was made with."""
    from core.data.load import Split, load_source
    from core.inspect.interpret import load_predictions
    from core.runs.checkpoint import load_model
    from core.train.loop import evaluate

    folder = RunFolder(run_dir)
    assert folder.model_checkpoint().name == checkpoint_name
    model, class_names, config = load_model(run_dir)
    data = load_source(config.data, config.size)
    split = Split.from_dataset(data, config.valid_pct, config.seed)
    evaluation = evaluate(model, split.valid_images, split.valid_labels, batch_size=64, device=torch.device("cpu"))
    assert np.allclose(evaluation.probs, load_predictions(run_dir).raw_probs, atol=1e-5)  # before calibration
    assert class_names == folder.class_names()


def test_the_model_of_a_run_without_keep_best_is_its_last_epoch(trained_run):
    assert_model_is_the_one_that_predicted(trained_run, "last.pt")


@pytest.mark.slow
def test_lr_find_from_the_command_line_writes_its_curve_and_suggestion(sweep_run):
    found = RunFolder(sweep_run).lr_find()
    assert len(found["lrs"]) == len(found["losses"]) > 10 and set(found["suggestions"]) == {"valley", "steep"}
    assert RunFolder(sweep_run).status()["state"] == "completed"
    assert "--lr-find" in RunFolder(sweep_run).command


@pytest.mark.slow
def test_torchrun_trains_with_two_processes_and_rank_zero_writes_the_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on two cores: one thread each
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
               "core.train", "--arch", "resnet18", "--no-pretrained", "--size", "16", "--bs", "32", "--epochs", "2",
               "--runs-dir", str(tmp_path), "--name", "ddp"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    run_dir = tmp_path / "ddp"
    status = RunFolder(run_dir).status()
    # 1,437 training images in batches of 32: 44 full batches an epoch, 22 for each of the two processes
    assert status["state"] == "completed" and status["total_steps"] == 44
    tail = RunFolder(run_dir).read_metrics()
    assert [row["step"] for row in tail.steps] == list(range(1, 45)) and len(tail.epochs) == 2
    assert tail.epochs[-1]["accuracy"] > 0.8
    assert sorted(p.name for p in tmp_path.iterdir()) == [".train.lock", "ddp"]  # one run folder, from rank 0


def test_a_stop_asked_while_the_frozen_layers_output_is_computed_ends_the_run_at_once(tmp_path):
    """The pass over every image before the first step does not make a stop wait for it (on a big dataset it takes
    minutes); with nothing trained yet, the run says there is nothing to resume."""
    from core.train.callbacks import StopTraining
    from core.train.recipe import body_features

    asked = iter([False, False, True])
    body = torch.nn.Conv2d(3, 4, 3)
    with pytest.raises(StopTraining):
        body_features(body, torch.zeros(100, 3, 8, 8, dtype=torch.uint8), batch_size=10, device=torch.device("cpu"),
                      chunk=10, stop_requested=lambda: next(asked))
    run_dir = store.create_run(TrainConfig(size=32), tmp_path, "stop-at-once")  # pretrained: a cached frozen phase
    RunFolder(run_dir).request_stop()  # asked before the pass began: it stops at its first chunk
    assert run_training(run_dir) == "stopped"
    status = RunFolder(run_dir).status()
    assert status["step"] == 0 and "nothing to resume" in status["message"]
    assert not RunFolder(run_dir).can_resume() and not RunFolder(run_dir).has_predictions()  # no untrained model
