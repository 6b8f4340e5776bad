"""The time a run will take, said before it starts: timed costs added up over the run's phases."""
import math

import pytest
import torch

from core.config import TrainConfig
from core.estimate import Costs, measure, run_seconds
from core.trust import BANK_SIZE


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


def test_timed_costs_are_positive_and_a_bigger_image_costs_more():
    small = measure("resnet18", 32, 64, torch.device("cpu"))
    big = measure("resnet18", 96, 64, torch.device("cpu"))
    for costs in (small, big):
        assert 0 < costs.forward_s < costs.step_s and math.isfinite(costs.step_s)
    assert big.step_s > small.step_s  # 9x the pixels
