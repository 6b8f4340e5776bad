"""The optimizer's share of a training step on the CPU: torch's AdamW as its per-tensor loop (what torch runs on the
CPU unless told otherwise) against its fused kernel (core.device.adamw), one after the other in one process.

    .venv/bin/python -m bench.optimizer            # ResNet-18 (every layer) and EfficientNet-Lite0, 64 px, batch 64
    .venv/bin/python -m bench.optimizer --smoke    # CI: a few steps at 16 px

Prints the median seconds of AdamW's step alone and of a whole step (forward, backward, update) for each, and the
ratio per-tensor / fused.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from core.device import in_layout, memory_format_for
from core.net.backbones import build_classifier


def timed(function, repeats: int) -> float:
    function()  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def measure(arch: str, size: int, batch: int, fused: bool, repeats: int) -> tuple[float, float]:
    """(median seconds of AdamW's step, of a whole training step) of `arch` trained whole."""
    torch.manual_seed(0)
    model = build_classifier(arch, 10, pretrained=False, size=size).model
    device = torch.device("cpu")
    model = model.to(memory_format=memory_format_for(model, device)).train()
    x = in_layout(torch.randn(batch, 3, size, size), memory_format_for(model, device))
    y = torch.randint(0, 10, (batch,))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, betas=(0.9, 0.99),
                                  **({"fused": True} if fused else {"foreach": False}))

    def whole():
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    whole_s = timed(whole, repeats)
    return timed(optimizer.step, repeats), whole_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a few steps at 16 px")
    args = parser.parse_args(argv)
    size, batch, repeats = (16, 8, 3) if args.smoke else (64, 64, 15)
    for arch in ("resnet18", "efficientnet_lite0"):
        loop_step, loop_whole = measure(arch, size, batch, fused=False, repeats=repeats)
        fused_step, fused_whole = measure(arch, size, batch, fused=True, repeats=repeats)
        print(f"{arch} at {size} px, batch {batch}: AdamW step {loop_step * 1e3:.1f} ms per-tensor, "
              f"{fused_step * 1e3:.1f} ms fused ({loop_step / fused_step:.2f}x); whole step {loop_whole * 1e3:.0f} ms "
              f"against {fused_whole * 1e3:.0f} ms: per-tensor / fused {loop_whole / fused_whole:.2f}x (medians of "
              f"{repeats})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
