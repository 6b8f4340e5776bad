"""Cutting a body into early and late stages: the chain computes exactly the body, for every backbone that has
stages; a body without answers None."""
import pytest
import torch

from core.net.backbones import build_classifier
from core.net.stages import split, stages_of


@pytest.mark.parametrize("arch", ["efficientnet_lite0", "resnet18", "timm:resnet10t", "timm:efficientnet_b0",
                                  "timm:tf_efficientnetv2_b0", "timm:mobilenetv3_large_100",
                                  "timm:mobilenetv4_conv_small", "timm:convnext_atto", "timm:regnety_002",
                                  "timm:vit_tiny_patch16_224", "timm:vit_small_patch16_224.augreg_in21k_ft_in1k"])
def test_the_early_and_late_stages_compute_exactly_the_body(arch):
    torch.manual_seed(0)
    body = build_classifier(arch, 3, pretrained=False, size=64).body.eval()
    x = torch.randn(2, 3, 64, 64)
    stages = stages_of(body)
    assert len(stages.cuts) >= 3 and 0 not in stages.cuts
    with torch.no_grad():
        whole = body(x)
        for at in stages.cuts:
            early, late = split(body, at)
            assert torch.allclose(late(early(x)), whole, atol=1e-5)
    body_params = {id(p) for p in body.parameters()}
    early, late = split(body, stages.cuts[-1])
    assert {id(p) for p in late.parameters()} <= body_params  # the late stages are the body's own layers
    early, late = split(body, stages.cuts[0])
    late_params = {id(p) for p in late.parameters()}
    assert late_params and not late_params & {id(p) for p in early.parameters()}  # no layer in both


def test_a_body_without_stages_answers_none_and_refuses_a_cut():
    body = build_classifier("timm:mixer_s16_224", 3, pretrained=False, size=32).body  # an MLP-Mixer
    assert stages_of(body) is None
    with pytest.raises(ValueError):
        split(body, 3)


def test_the_cut_comes_from_operation_counts_the_data_and_memory_the_same_on_a_busy_machine(monkeypatch):
    import subprocess
    import sys

    from core.net import stages

    body = build_classifier("efficientnet_lite0", 3, pretrained=False, size=64).body
    cpu = torch.device("cpu")
    quiet = stages.stage_costs(body, 64)
    assert stages.choose_cut(body, 64, 100, 25, 3, cpu) is None  # training every layer costs seconds: it pays
    big = stages.choose_cut(body, 64, 8000, 2000, 3, cpu)  # the same network on 10,000 images: cut
    assert big is not None and big.at in stages_of(body).cuts and 0 < big.share <= stages.MAX_LATE_SHARE
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]  # both cores busy
    try:
        assert stages.stage_costs(body, 64) == quiet
        assert stages.choose_cut(body, 64, 8000, 2000, 3, cpu) == big
    finally:
        for burner in burners:
            burner.kill()
    monkeypatch.setattr(stages, "total_bytes", lambda device: 1000)  # no room for any cache
    assert stages.choose_cut(body, 64, 8000, 2000, 3, cpu) is None


def test_op_counts_grow_with_the_image_and_say_what_each_cut_caches():
    from core.net import stages

    body = build_classifier("resnet18", 3, pretrained=False, size=32).body
    small, big = stages.stage_costs(body, 32), stages.stage_costs(body, 64)
    assert sum(big.seconds) > 2 * sum(small.seconds)  # 4x the pixels (the cost of each operation dispatched stays)
    assert big.shapes[big.cuts[0]] == (64, 16, 16) and small.shapes[small.cuts[0]] == (64, 8, 8)


def test_the_cut_is_the_one_whose_late_share_is_nearest_the_target_among_those_whose_cache_fits():
    from core.net.stages import LATE_SHARE, StageCosts

    # four modules of 0.4, 0.34, 0.1 and 0.16 s: the late part from cut 1 is 60%, from 2 26%, from 3 16%
    times = StageCosts(cuts=[1, 2, 3], seconds=[0.4, 0.34, 0.1, 0.16], shapes=[(3, 8, 8), (8, 4, 4), (16, 2, 2),
                                                                            (32, 1, 1)])
    huge = 1e12
    assert LATE_SHARE == 0.3 and times.pick(10**6, 0, 1, huge).at == 2  # 26%: nearer 30% than 16% (60% is too much)
    times = StageCosts(cuts=[1, 2, 3], seconds=[0.4, 0.38, 0.06, 0.16], shapes=times.shapes)
    assert times.pick(10**6, 0, 1, huge).at == 2  # 22%: still nearer than 16%
    times = StageCosts(cuts=[1, 2, 3], seconds=[0.4, 0.15, 0.16, 0.29], shapes=[(3, 8, 8), (8, 4, 4), (16, 2, 2),
                                                                             (64, 2, 2)])
    assert times.pick(10**6, 0, 1, huge).at == 3  # 29% against 45%
    assert times.pick(10**6, 0, 1, 10**6 * 64 * 2).at == 2  # cut 3's cache (256 values an image) does not fit
    assert times.pick(10**6, 0, 1, 10) is None  # no cache fits
    assert times.pick(10, 0, 1, huge) is None  # training every layer costs seconds: it pays


@pytest.mark.slow
def test_a_run_trains_its_late_stages_on_cached_early_outputs_and_keeps_where_it_cut(tmp_path, monkeypatch):
    from core.config import TrainConfig
    from core.net import stages
    from core.runs import store
    from core.runs.folder import RunFolder
    from core.train.run import run_training

    monkeypatch.setattr(stages, "ALL_BUDGET_S", 0.0)  # as on a slow machine or a big dataset
    config = TrainConfig(size=32, freeze_epochs=2, epochs=2)
    run_dir = store.create_run(config, tmp_path, "late")
    assert run_training(run_dir) == "completed"
    folder = RunFolder(run_dir)
    rows = folder.read_metrics().epochs
    assert [row["phase"] for row in rows] == ["frozen", "frozen", "late", "late"]
    assert rows[-1]["accuracy"] > 0.8  # digits at 32 px; chance is 0.1
    recipe = folder.recipe()
    body = build_classifier("efficientnet_lite0", 10, pretrained=False, size=32).body
    assert recipe["unfrozen"] == "late stages" and recipe["late_cut"] in stages_of(body).cuts
    assert recipe["cached_shape"] == list(stages.stage_costs(body, 32).shapes[recipe["late_cut"]])  # what was cached
    from core.train.estimate import planned_cut  # the Train page says before Start where the run will cut

    record = folder.data_record()
    planned = planned_cut(config, record["n_train"], record["n_valid"], torch.device("cpu"))
    assert {"unfrozen": "late stages", **planned.to_dict()} == recipe
    # the run's model is the whole network: its own pass over the validation images agrees with the late epochs'
    import numpy as np
    with np.load(run_dir / "predictions.npz") as predictions:
        accuracy = (predictions["raw_probs"].argmax(1) == predictions["targets"]).mean()
    assert abs(accuracy - rows[-1]["accuracy"]) < 0.02  # bfloat16 cache against float32 images


def test_a_vit_run_trains_its_late_blocks_on_cached_tokens(tmp_path, monkeypatch):
    """timm's ViT from a weights file (random weights: no network here), cut between transformer blocks."""
    import numpy as np

    from core.config import TrainConfig
    from core.net import stages
    from core.runs import store
    from core.runs.folder import RunFolder
    from core.train.run import run_training
    from tests.test_zoo import weights_file

    monkeypatch.setattr(stages, "ALL_BUDGET_S", 0.0)
    config = TrainConfig(arch="timm:vit_tiny_patch16_224", weights=weights_file(tmp_path, "vit_tiny_patch16_224"),
                         size=32, bs=64, freeze_epochs=1, epochs=2, lr=1e-2)
    run_dir = store.create_run(config, tmp_path / "runs", "vit")
    assert run_training(run_dir) == "completed", RunFolder(run_dir).status()
    folder = RunFolder(run_dir)
    rows = folder.read_metrics().epochs
    assert [row["phase"] for row in rows] == ["frozen", "late", "late"]
    body = build_classifier("timm:vit_tiny_patch16_224", 10, pretrained=False, size=32).body
    assert folder.recipe()["late_cut"] in stages_of(body).cuts
    assert rows[-1]["accuracy"] > 0.2  # chance is 0.1; random weights
    with np.load(run_dir / "predictions.npz") as predictions:  # the whole network's own pass agrees
        accuracy = (predictions["raw_probs"].argmax(1) == predictions["targets"]).mean()
    assert abs(accuracy - rows[-1]["accuracy"]) < 0.03
