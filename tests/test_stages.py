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
