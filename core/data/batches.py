"""From uint8 images in memory to normalized batches on the device: ImageNet normalization and batching.

Indexing one tensor is far cheaper than a DataLoader with per-item collation for data that is already decoded.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import torch

from core.data.mapped import is_mapped, note_read

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float (B, 3, H, W) standardized with ImageNet's channel mean and std."""
    mean, std = _mean_std_255(images.device)
    return (images.float() - mean) / std


@functools.cache
def _mean_std_255(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Made once per device: a tensor built from a list on a GPU is a copy that waits for the GPU."""
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255
    return mean, std


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Inverse of `normalize`, to float in 0..1 for display."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images * std + mean).clamp(0, 1)


def balanced_order(labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """An epoch's order in which every class comes up equally often: len(labels) indices (N,) drawn with
    replacement, item i with weight 1 / (the number of items of its class), exactly as
    torch.utils.data.WeightedRandomSampler draws them (torch.multinomial on float64 weights, which takes at
    most 2**24 items)."""
    labels = labels.cpu()
    weights = 1.0 / torch.bincount(labels)[labels].double()
    return torch.multinomial(weights, len(labels), replacement=True, generator=generator)


def iterate_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, *, shuffle: bool,
                    generator: torch.Generator | None = None, drop_last: bool = False,
                    device: torch.device | str = "cpu", augment: Callable | None = None,
                    balanced: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (normalized float images (B, 3, S, S), labels (B,)) from in-memory uint8 tensors.

    `augment`, when given, maps float (B, 3, S, S) in 0..255 to the same, drawing from `generator`.
    `balanced` draws the order from `generator` with `balanced_order` (as many items as there are, small
    classes repeated) in place of a permutation.

    Indexing one tensor is far cheaper than a DataLoader with per-item collation for data that is already
    decoded. On CUDA, images already in GPU memory (core.data's Split.placed) are gathered there; images in
    host memory are gathered straight into pinned memory by a thread one batch ahead, so the copy to the GPU
    runs without waiting and the gathering overlaps the GPU's work on the batch before.
    """
    if balanced:
        order = balanced_order(labels, generator)
    else:
        order = torch.randperm(len(labels), generator=generator) if shuffle else torch.arange(len(labels))
    device = torch.device(device)
    n_full = len(order) // batch_size * batch_size
    stop = n_full if drop_last and n_full > 0 else len(order)
    if images.is_cuda:  # gather on the GPU, with no copy of an index or labels per batch
        order, labels = order.to(images.device), labels.to(images.device)
    indices = [order[start:start + batch_size] for start in range(0, stop, batch_size)]
    if device.type == "cuda" and not images.is_cuda:
        gathered = gathered_ahead(images, labels, indices, pin=True)
    else:
        gathered = ((images[index], labels[index]) for index in indices)
    from_file = is_mapped(images)
    for x, y in gathered:
        if from_file:  # a memory-mapped file's pages read so far leave this process's resident memory
            note_read(x.nbytes, len(x))
        if device.type != "cpu":  # no-ops for what is there already
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
        if x.dtype != torch.uint8:  # cached features (core.train.recipe's frozen phase), not images
            yield x, y
            continue
        yield normalize(augment(x.float(), generator) if augment is not None else x), y


def gathered_ahead(images: torch.Tensor, labels: torch.Tensor, indices: list[torch.Tensor], *,
                   pin: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The rows `indices` picks, batch by batch, each gathered into fresh (pinned, with `pin`) memory while
    the one before is in use: the next batch is always in progress on a thread (index_select releases the
    GIL). Fresh buffers: PyTorch's pinned allocator reuses one only after the copy that read it finished."""
    def gather(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.empty((len(index), *images.shape[1:]), dtype=images.dtype, pin_memory=pin)
        y = torch.empty((len(index), *labels.shape[1:]), dtype=labels.dtype, pin_memory=pin)
        return torch.index_select(images, 0, index, out=x), torch.index_select(labels, 0, index, out=y)

    if not indices:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="batches-ahead") as pool:
        ahead = pool.submit(gather, indices[0])
        for following in indices[1:] + [None]:
            batch = ahead.result()
            if following is not None:
                ahead = pool.submit(gather, following)
            yield batch
