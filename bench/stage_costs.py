"""Where the late stages start is chosen from operation counts (core.net.stages.stage_costs), not from timings of
the moment: this fits the three weights (seconds per floating-point operation, per tensor element written, per
operation dispatched) to each stage's timed forward pass on this machine, and prints, for every cut, the late
stages' share of the pass as timed and as modelled with the weights in core.net.stages, and the cut each picks.

    .venv/bin/python -m bench.stage_costs [--smoke]

Run it alone (a busy machine times wrong, which is the point of not deciding from timings). The weights were fitted
here on 2 CPU cores over EfficientNet-Lite0, ResNet-18 and ResNet-50 at 32, 64, 128 and 224 px.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from core.net import stages as S
from core.net.backbones import build_classifier

PROBE_IMAGES = 16  # images a timed pass: a training batch's order of size


@torch.inference_mode()
def timed_modules(chain: S.Stages, size: int, repeats: int) -> list[float]:
    """Seconds each module takes for one image (the least of `repeats` passes of PROBE_IMAGES after a warm-up)."""
    x = torch.randn(PROBE_IMAGES, 3, size, size)
    best = [math.inf] * len(chain.modules)
    for _ in range(repeats + 1):
        h = x
        for i, module in enumerate(chain.modules):
            started = time.perf_counter()
            h = module(h)
            best[i] = min(best[i], (time.perf_counter() - started) / PROBE_IMAGES)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="ResNet-18 at 32 px only, to check the benchmark runs")
    args = parser.parse_args()
    grid = [("resnet18", 32)] if args.smoke else \
        [(arch, size) for arch in ("efficientnet_lite0", "resnet18", "resnet50") for size in (32, 64, 128, 224)]
    rows, features, targets = [], [], []
    for arch, size in grid:
        body = build_classifier(arch, 10, pretrained=False, size=size).body.eval()
        chain = S.stages_of(body)
        counts, _ = S.count_ops(chain, size)
        seconds = timed_modules(chain, size, 1 if args.smoke else 3)
        total = sum(seconds)
        features += [[c.flops / total, c.elements / total, c.ops / total] for c in counts]  # each network weighs alike
        targets += [s / total for s in seconds]
        rows.append((arch, size, chain.cuts, seconds, [c.seconds for c in counts]))
    fitted, *_ = np.linalg.lstsq(np.array(features), np.array(targets), rcond=None)
    print(f"fitted weights: {fitted[0]:.3g} s/flop, {fitted[1]:.3g} s/element, {fitted[2]:.3g} s/op; in use: "
          f"{S.SECONDS_PER_FLOP:.3g}, {S.SECONDS_PER_ELEMENT:.3g}, {S.SECONDS_PER_OP:.3g}")
    agree = 0
    for arch, size, cuts, timed, modelled in rows:
        shares = [(at, sum(timed[at:]) / sum(timed), sum(modelled[at:]) / sum(modelled)) for at in cuts]
        picked = [min((s for s in shares if s[k] <= S.MAX_LATE_SHARE), key=lambda s: abs(s[k] - S.LATE_SHARE),
                      default=(None,))[0] for k in (1, 2)]
        agree += picked[0] == picked[1]
        print(f"{arch:20} {size:3} px  cut: timed share / modelled share  " +
              "  ".join(f"{at}: {t:.2f}/{m:.2f}" for at, t, m in shares) +
              f"  -> picks {picked[0]} timed, {picked[1]} modelled")
    print(f"the modelled cut is the timed one in {agree} of {len(rows)}")


if __name__ == "__main__":
    main()
