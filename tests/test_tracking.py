"""`--track mlflow,tensorboard`: a real run on digits, read back with MLflow's and TensorBoard's own readers; a
run without tracking writes neither; a tracker that fails leaves the run completed with a sentence."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.runs.folder import RunFolder
from core.train.__main__ import main
from core.train.tracking import EPOCH_METRICS
from tests.conftest import ROOT, TINY_RUN_ARGS

pytestmark = pytest.mark.slow  # ./test.sh -m "not slow" leaves these out

# Two epochs, so that a metric history is a history; 16 px keeps each epoch to a few seconds.
TRACKED_ARGS = [*TINY_RUN_ARGS, "--epochs", "2", "--size", "16", "--track", "mlflow,tensorboard"]


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory) -> Path:
    runs_dir = tmp_path_factory.mktemp("tracking") / "runs"
    with pytest.MonkeyPatch.context() as env:
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert main([*TRACKED_ARGS, "--runs-dir", str(runs_dir), "--name", "tracked"]) == 0
    return runs_dir / "tracked"


def test_mlflow_holds_the_runs_settings_epoch_metrics_and_exported_model(tracked_run):
    from mlflow import MlflowClient

    folder = RunFolder(tracked_run)
    # The store the README tells people to open: mlruns/mlflow.db beside the runs folder.
    client = MlflowClient(tracking_uri=f"sqlite:///{tracked_run.parent.parent.resolve() / 'mlruns' / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("Transfer Learning Studio").experiment_id])
    assert run.info.run_name == "tracked" and run.info.status == "FINISHED"
    assert run.data.params == {name: str(value) for name, value in folder.config().to_dict().items()}
    assert run.data.tags["task"] == "train" and run.data.tags["data"] == "builtin:digits"
    assert run.data.tags["command"] == folder.reproduce_command()  # the data as it read it: --edits-upto
    epochs = folder.read_metrics().epochs
    assert [row["epoch"] for row in epochs] == [1, 2]
    for name in EPOCH_METRICS:
        history = client.get_metric_history(run.info.run_id, name)
        assert [(metric.step, metric.value) for metric in history] == [(row["epoch"], row[name]) for row in epochs]
    assert run.data.metrics["final_accuracy"] == folder.status()["final_accuracy"]
    artifacts = {Path(item.path).name for item in client.list_artifacts(run.info.run_id, "model")}
    assert {"model.onnx", "model.torchscript.pt", "weights.safetensors", "classes.json"} <= artifacts
    classes = Path(client.download_artifacts(run.info.run_id, "model/classes.json", str(tracked_run.parent)))
    assert json.loads(classes.read_text()) == [str(digit) for digit in range(10)]


def test_tensorboard_events_hold_every_step_and_epoch_and_the_settings(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    events = EventAccumulator(str(tracked_run / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    tail = RunFolder(tracked_run).read_metrics()
    assert set(events.Tags()["scalars"]) == {"step/loss", "step/lr", *(f"epoch/{name}" for name in EPOCH_METRICS)}
    for name in ("loss", "lr"):  # TensorBoard keeps float32
        logged = [(event.step, event.value) for event in events.Scalars(f"step/{name}")]
        assert logged == [(row["step"], pytest.approx(row[name], rel=1e-6)) for row in tail.steps]
    assert len(tail.steps) == 2 * 22
    for name in EPOCH_METRICS:  # against the training step, like the step scalars
        logged = [(event.step, event.value) for event in events.Scalars(f"epoch/{name}")]
        assert logged == [(row["step"], pytest.approx(row[name], rel=1e-6)) for row in tail.epochs]
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = HParamsPluginData.FromString(content).session_start_info.hparams
    config = RunFolder(tracked_run).config().to_dict()
    assert set(hparams) == set(config)
    assert hparams["arch"].string_value == "resnet18" and hparams["size"].number_value == 16
    assert hparams["lr"].number_value == 2e-3 and hparams["track"].string_value == "mlflow,tensorboard"


def test_a_run_without_tracking_writes_neither_folder_nor_imports_either_library(trained_run):
    assert RunFolder(trained_run).config().track == ""
    assert not (trained_run / "tensorboard").exists()
    assert not (trained_run.parent.parent / "mlruns").exists()
    code = ("import sys, core.train.run, core.train.tracking, core.train; "
            "sys.exit(bool({'mlflow', 'tensorboard', 'torch.utils.tensorboard'} & set(sys.modules)))")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False).returncode == 0


def test_a_tracker_that_fails_leaves_the_run_completed_with_a_sentence_in_its_log(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "mlruns").write_text("a file where MLflow's folder would go")
    assert main([*TRACKED_ARGS, "--epochs", "1", "--runs-dir", str(tmp_path / "runs"), "--name", "broken"]) == 0
    log = capsys.readouterr().out  # what a launched run's log.txt holds
    sentence = f"Logging to MLflow stopped (FileExistsError: [Errno 17] File exists: '{tmp_path / 'mlruns'}')."
    assert f"{sentence} The run goes on without it." in log
    assert log.count("Logging to") == 1  # one sentence, however many epochs followed
    run_dir = tmp_path / "runs" / "broken"
    assert RunFolder(run_dir).status()["state"] == "completed"
    assert any((run_dir / "tensorboard").iterdir())  # the other tracker carried on
