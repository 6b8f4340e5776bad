"""EfficientNet-Lite0's "same" padding folded into its stride-1 convolutions (core.net.backbones.fold_same_padding)
against the port's own pad-then-convolve, one after the other in one process, on the CPU: the outputs must agree,
and a training step of the whole network and of its late stages is timed for each, interleaved.

    .venv/bin/python -m bench.same_padding            # 64 px, batch 64, medians of 11 steps a side
    .venv/bin/python -m bench.same_padding --smoke    # CI: 32 px, a few steps
"""
from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from bench.optimizer import timed
from core.device import in_layout, memory_format_for
from core.net import backbones
from core.net.stages import split as split_body


def build(folded: bool, size: int) -> torch.nn.Module:
    fold = backbones.fold_same_padding
    backbones.fold_same_padding = fold if folded else (lambda net: None)
    try:
        torch.manual_seed(0)
        return backbones.build_classifier("efficientnet_lite0", 10, pretrained=True, size=size).model
    finally:
        backbones.fold_same_padding = fold


def step_seconds(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)

    def step():
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    return timed(step, repeats)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    size, batch, repeats = (32, 8, 2) if args.smoke else (64, 64, 11)
    models = {folded: build(folded, size).train() for folded in (False, True)}
    layout = memory_format_for(models[True], torch.device("cpu"))
    x = in_layout(torch.randn(batch, 3, size, size), layout)
    y = torch.randint(0, 10, (batch,))
    with torch.no_grad():
        apart = (models[False].eval()(x) - models[True].eval()(x)).abs().max().item()
    print(f"largest difference of the logits: {apart:.2e}")
    times = {(folded, part): [] for folded in (False, True) for part in ("whole", "late")}
    for _ in range(3):  # interleaved rounds, so a busy moment falls on both sides
        for folded, model in models.items():
            model = model.to(memory_format=layout).train()
            times[folded, "whole"].append(step_seconds(model, x, y, repeats))
            early, late = split_body(model[0], 12)
            with torch.no_grad():
                features = early(x)
            times[folded, "late"].append(step_seconds(torch.nn.Sequential(late, model[1]), features, y, repeats))
    for part in ("whole", "late"):
        padded, folded = (statistics.median(times[f, part]) for f in (False, True))
        print(f"{part} network at {size} px, batch {batch}: padded {padded * 1e3:.0f} ms, folded "
              f"{folded * 1e3:.0f} ms a step; padded / folded {padded / folded:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
