"""Device policy: which device trains, how it is named, and the layouts, precisions and batch sizes it runs
best with."""
from __future__ import annotations

import contextlib
import os

import torch
from torch import nn

from core.distributed import World


def pick_device(world: World = World()) -> torch.device:
    """CUDA (this process's GPU under torchrun), then Apple MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", world.local_rank)
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def adamw(params, device: torch.device, **options) -> torch.optim.AdamW:
    """AdamW with its update fused into one kernel where torch has one: on CUDA, and on the CPU, where the
    per-tensor loop torch otherwise runs took 1.6x (ResNet-18) to 4x (EfficientNet-Lite0) as long (bench.optimizer):
    12-17 ms a step, lost in the noise of a 64 px batch of 64 (~0.5 s) but a third of a 16 px one."""
    return torch.optim.AdamW(params, fused=device.type in ("cuda", "cpu"), **options)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)} (bf16 mixed precision)"
    if device.type == "mps":
        return "Apple GPU (MPS)"
    return f"CPU ({torch.get_num_threads()} threads)"


def inference_batch_size(size: int, batch_size: int, device: torch.device) -> int:
    """Images per forward pass when nothing is learned. A CPU is fastest with batches that stay in its caches
    (EfficientNet-Lite0 features at 64 px: 32 images a pass ran 1.3-2.0x the speed of 128 here, measured by
    bench/engine_overhead); a GPU wants big ones."""
    if device.type != "cpu":
        return batch_size * 2
    return 32 if size <= 96 else 16


def memory_format_for(model: nn.Module, device: torch.device) -> torch.memory_format:
    """The layout a model and its input batches take on a device: channels_last where it is the faster one.

    On a CPU always (oneDNN: training EfficientNet-Lite0 1.6x faster, bench/engine_overhead). On a GPU for
    networks without depthwise (grouped) convolutions: ResNet-50 trains fastest so with bf16, while cuDNN's
    channels_last depthwise kernels cost EfficientNet-Lite0 many seconds of one-time set-up on an H100 (its
    features once: 12.1 s against 3.5 s; the first unfrozen epoch: 29 s against 12 s).
    """
    grouped = any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in model.modules())
    if device.type == "cpu" or (device.type == "cuda" and not grouped):
        return torch.channels_last
    return torch.contiguous_format


def in_layout(x: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
    """A batch of images in `layout`; anything else (pooled features) passes through."""
    return x.contiguous(memory_format=layout) if x.dim() == 4 and x.shape[-1] > 1 else x


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (no loss scaling needed, unlike fp16); full precision elsewhere."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def total_bytes(device: torch.device) -> int:
    """The device's memory: the GPU's, or the host's MemTotal (what a recipe may decide from: it does not change
    with what else runs)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        with open("/proc/meminfo") as meminfo:
            return next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemTotal:"))
    except (OSError, StopIteration):
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def available_bytes(device: torch.device) -> int:
    """Memory free for a cache on `device`: the GPU's free memory, or the host's MemAvailable."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            return next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
