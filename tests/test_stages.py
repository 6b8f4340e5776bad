"""Cutting a body into early and late stages: the chain computes exactly the body, for every backbone that has
stages; a body without answers None."""
import pytest
import torch

from core.models import build_classifier
from core.stages import split, stages_of


@pytest.mark.parametrize("arch", ["efficientnet_lite0", "resnet18", "timm:resnet10t"])
def test_the_early_and_late_stages_compute_exactly_the_body(arch):
    torch.manual_seed(0)
    body = build_classifier(arch, 3, pretrained=False, size=64).body.eval()
    x = torch.randn(2, 3, 64, 64)
    stages = stages_of(body)
    assert len(stages.cuts) >= 3
    with torch.no_grad():
        whole = body(x)
        for at in stages.cuts:
            early, late = split(body, at)
            assert torch.allclose(late(early(x)), whole, atol=1e-5)
    early, late = split(body, stages.cuts[-1])
    body_params = {id(p) for p in body.parameters()}
    assert {id(p) for p in late.parameters()} <= body_params  # the late stages are the body's own layers


def test_a_body_without_stages_answers_none_and_refuses_a_cut():
    body = build_classifier("timm:vit_tiny_patch16_224", 3, pretrained=False, size=32).body
    assert stages_of(body) is None
    with pytest.raises(ValueError):
        split(body, 3)


def test_the_cut_comes_from_the_machine_and_the_data(monkeypatch):
    from core import stages

    body = build_classifier("efficientnet_lite0", 3, pretrained=False, size=64).body
    cpu = torch.device("cpu")
    assert stages.choose_cut(body, 64, 100, 25, 3, cpu) is None  # training every layer costs seconds: it pays
    monkeypatch.setattr(stages, "ALL_BUDGET_S", 0.0)
    cut = stages.choose_cut(body, 64, 100, 25, 3, cpu)
    assert cut is not None and cut.at in stages_of(body).cuts and 0 < cut.share <= stages.LATE_SHARE
    monkeypatch.setattr(stages, "available_bytes", lambda device: 1000)  # no room for any cache
    assert stages.choose_cut(body, 64, 100, 25, 3, cpu) is None


def test_a_run_trains_its_late_stages_on_cached_early_outputs_and_keeps_where_it_cut(tmp_path, monkeypatch):
    from core import runs, stages
    from core.config import TrainConfig
    from core.run import run_training
    from core.runfolder import RunFolder

    monkeypatch.setattr(stages, "ALL_BUDGET_S", 0.0)  # as on a slow machine or a big dataset
    config = TrainConfig(size=32, freeze_epochs=2, epochs=2)
    run_dir = runs.create_run(config, tmp_path, "late")
    assert run_training(run_dir) == "completed"
    folder = RunFolder(run_dir)
    rows = folder.read_metrics().epochs
    assert [row["phase"] for row in rows] == ["frozen", "frozen", "late", "late"]
    assert rows[-1]["accuracy"] > 0.8  # digits at 32 px; chance is 0.1
    status = folder.raw_status()
    assert status["late_cut"] in stages_of(build_classifier("efficientnet_lite0", 10, pretrained=False,
                                                            size=32).body).cuts
    # the run's model is the whole network: its own pass over the validation images agrees with the late epochs'
    import numpy as np
    with np.load(run_dir / "predictions.npz") as predictions:
        accuracy = (predictions["raw_probs"].argmax(1) == predictions["targets"]).mean()
    assert abs(accuracy - rows[-1]["accuracy"]) < 0.02  # bfloat16 cache against float32 images
