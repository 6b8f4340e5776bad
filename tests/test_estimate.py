"""The time a run will take, said before it starts: timed costs added up over the run's phases."""
import math

import pytest
import torch

from core.config import TrainConfig
from core.inspect.trust import BANK_SIZE
from core.train.estimate import Costs, measure, run_seconds


def test_a_run_from_scratch_costs_its_steps_its_validation_passes_and_the_final_pass():
    config = TrainConfig(pretrained=False, epochs=2, bs=64)
    costs = Costs(forward_s=0.001, step_s=0.064)
    # 2 epochs x 10 steps x 0.064 s, 2 validation passes over 160 images, then the final pass (train bank + valid)
    expected = 2 * 10 * 0.064 + 2 * 160 * 0.001 + (min(BANK_SIZE, 640) + 160) * 0.001
    assert run_seconds(config, 640, 160, costs) == pytest.approx(expected)


def test_a_cached_frozen_phase_costs_one_pass_over_every_image_and_doubling_the_epochs_doubles_the_rest():
    costs = Costs(forward_s=0.002, step_s=0.1)
    frozen_only = run_seconds(TrainConfig(freeze_epochs=5, epochs=0), 640, 160, costs)
    assert frozen_only == pytest.approx(800 * 0.002 + (min(BANK_SIZE, 640) + 160) * 0.002)
    one = run_seconds(TrainConfig(freeze_epochs=5, epochs=1), 640, 160, costs) - frozen_only
    two = run_seconds(TrainConfig(freeze_epochs=5, epochs=2), 640, 160, costs) - frozen_only
    assert two == pytest.approx(2 * one) and one == pytest.approx(10 * 0.1 + 160 * 0.002)


def test_timed_costs_are_positive_and_finite_and_a_cut_times_its_late_step():
    small = measure("resnet18", 32, 64, torch.device("cpu"))
    big = measure("resnet18", 96, 64, torch.device("cpu"))
    for costs in (small, big):  # timings: only what no load can change (a busy machine reversed late < early)
        assert 0 < costs.forward_s and 0 < costs.step_s and math.isfinite(costs.step_s)
    assert small.late_step_s is None
    late = measure("resnet18", 32, 64, torch.device("cpu"), late_at=7).late_step_s  # layer4 and the head
    assert 0 < late and math.isfinite(late)


def test_where_the_late_stages_are_trained_their_timed_steps_and_share_of_the_pass_are_what_epochs_cost():
    from core.net.stages import LateCut

    cut = LateCut(at=2, share=0.25, shape=(8, 4, 4))
    costs = Costs(forward_s=0.004, step_s=1.0, late_step_s=0.25)
    config = TrainConfig(freeze_epochs=5, epochs=3, bs=64)
    # one pass over all 8,000 images (shared by both cached phases); 3 x 100 late steps as timed; a quarter pass
    # (the late stages' share) over the validation images each epoch; the final pass
    expected = 8000 * 0.004 + 3 * 100 * 0.25 + 3 * 1600 * 0.004 * 0.25 + \
        (min(BANK_SIZE, 6400) + 1600) * 0.004
    assert run_seconds(config, 6400, 1600, costs, cut) == pytest.approx(expected)
    whole = run_seconds(TrainConfig(freeze_epochs=5, epochs=3, bs=64, unfreeze="all"), 6400, 1600, costs)
    assert whole > 2 * expected  # every layer, every step


def test_decoding_a_folder_is_timed_on_a_sample_and_scaled_to_every_file(tmp_path):
    from core.train.estimate import DECODE_SAMPLE, decode_seconds
    from tests.conftest import write_image_folder

    folder = write_image_folder(tmp_path / "shapes", {"a": 20, "b": 20}, size=32)
    paths = sorted(folder.rglob("*.png"))
    assert decode_seconds([], 32) == 0.0
    assert decode_seconds(paths, 32) > 0 and DECODE_SAMPLE < len(paths)
