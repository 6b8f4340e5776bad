"""Images whose label is probably wrong, and near-duplicates, from a pretrained body's features.

Every image gets an out-of-sample prediction from its neighbours: the labels of the k images most like it
(cosine similarity of the pretrained body's pooled features, the image itself left out). Several depths of the
body are tried in one forward pass, and the two whose neighbours predict the given labels best are averaged:
early layers suit drawings and digits, the last ones photos, and the data decides. Confident learning
(cleanlab) then ranks the images whose given label the evidence contradicts, most suspicious first, and
estimates how many there are. Features come once (seconds at 64 px); no model is trained.

    python -m core.data suspects PATH [--json] [--top N]
Measured by bench/label_noise (precision among the top N suspects, against cleanlab on a 5-fold logistic
regression of the last layer's features).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.data.batches import iterate_batches
from core.data.images import LabeledImages
from core.device import inference_batch_size
from core.net.backbones import BLOCK_TYPES, build_classifier

DEPTHS = (1 / 2, 2 / 3, 5 / 6, 1.0)  # blocks tried, as shares of the body's depth, besides its output
NEIGHBOURS = 20
TEMPERATURE = 0.05  # neighbours' votes weigh exp(similarity / T): the closest count most
DUPLICATE_SIMILARITY = 0.97  # cosine of the last features above which two images count as near-duplicates


@dataclass(frozen=True)
class Suspect:
    index: int  # position in the dataset
    label: str  # the label it has
    suggested: str  # the label its neighbours give it
    score: float  # how sure the evidence is that the label is wrong: 1 - the neighbours' vote for it


@dataclass(frozen=True)
class NearDuplicate:
    first: int
    second: int
    similarity: float
    crosses_split: bool  # one in training, one in validation: the validation score is flattered
    labels_differ: bool


@dataclass(frozen=True)
class LabelReview:
    suspects: list[Suspect]  # the images confident learning flags, most suspicious first
    ranking: np.ndarray  # every image's position, most suspicious first
    probs: np.ndarray  # (N, C) out-of-sample probabilities from the neighbours
    layers: tuple[str, ...]  # the body's layers whose features were used
    features: torch.Tensor  # (N, F) L2-normalized features of the body's output, for near-duplicates


@torch.inference_mode()
def layer_features(body: nn.Module, images: torch.Tensor, device: torch.device = torch.device("cpu"),
                   depths: tuple[float, ...] = DEPTHS) -> dict[str, torch.Tensor]:
    """L2-normalized, average-pooled features (N, F_l) of uint8 images (N, 3, S, S) at several depths of a
    body, in one pass: the blocks at `depths` of the way through, and "output"."""
    blocks = [(name, module) for name, module in body.named_modules() if type(module).__name__ in BLOCK_TYPES]
    chosen = {blocks[max(round(d * len(blocks)) - 1, 0)] for d in depths} if blocks else set()
    captured: dict[str, list[torch.Tensor]] = {name: [] for name, _ in chosen}
    hooks = [module.register_forward_hook(lambda _m, _i, out, name=name: captured[name].append(
        out.float().mean((2, 3)).cpu())) for name, module in chosen]
    outputs = []
    body.eval()
    try:
        chunk = inference_batch_size(images.shape[-1], 32, device)
        for x, _ in iterate_batches(images, torch.zeros(len(images), dtype=torch.long), chunk, shuffle=False,
                                    device=device):
            outputs.append(body(x).float().mean((2, 3)).cpu())
    finally:
        for hook in hooks:
            hook.remove()
    features = {name: torch.cat(parts) for name, parts in captured.items()} | {"output": torch.cat(outputs)}
    return {name: F.normalize(value, dim=1) for name, value in features.items()}


def neighbour_probs(features: torch.Tensor, labels: torch.Tensor, n_classes: int, k: int = NEIGHBOURS,
                    temperature: float = TEMPERATURE, chunk: int = 2048) -> np.ndarray:
    """(N, C) leave-one-out class probabilities: each image's k most similar other images vote with weight
    exp(cosine / temperature). `features` (N, F) must be L2-normalized."""
    n = len(labels)
    k = max(1, min(k, n - 1))
    probs = torch.zeros(n, n_classes)
    for start in range(0, n, chunk):
        similarity = features[start:start + chunk] @ features.T  # (chunk, N)
        rows = torch.arange(start, min(start + chunk, n))
        similarity[rows - start, rows] = -float("inf")  # an image is not its own neighbour
        values, indices = similarity.topk(k, dim=1)
        weights = torch.exp((values - 1) / temperature)  # shifted by the largest possible cosine: no overflow
        probs[rows] = torch.zeros(len(rows), n_classes).scatter_add_(1, labels[indices], weights)
    return (probs / probs.sum(1, keepdim=True).clamp_min(1e-12)).numpy()


def review_labels(data: LabeledImages, *, arch: str = "efficientnet_lite0", size: int | None = None,
                  device: torch.device = torch.device("cpu")) -> LabelReview:
    """Rank every image of `data` by how strongly its neighbours contradict its label."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    size = size or data.images.shape[-1]
    body = build_classifier(arch, 2, pretrained=True, size=size).body.to(device)
    by_layer = layer_features(body, data.images, device)
    labels, n_classes = data.labels, len(data.class_names)
    votes = {name: neighbour_probs(features, labels, n_classes) for name, features in by_layer.items()}
    agreement = {name: float((probs.argmax(1) == labels.numpy()).mean()) for name, probs in votes.items()}
    best = tuple(sorted(votes, key=lambda name: -agreement[name])[:2])
    probs = np.mean([votes[name] for name in best], axis=0)
    given = labels.numpy()
    quality = get_label_quality_scores(given, probs, method="self_confidence")
    # Many images get no vote at all for their label (quality 0): among them, the one whose neighbours agree
    # most on one other label comes first.
    other = np.where(np.arange(n_classes) == given[:, None], 0.0, probs).max(1)
    ranking = np.lexsort((-other, quality))
    # n_jobs=1: cleanlab forks a process pool otherwise, which deadlocks inside a threaded server (Streamlit).
    flagged = find_label_issues(given, np.clip(probs, 1e-6, 1.0), filter_by="prune_by_noise_rate", n_jobs=1) \
        if np.bincount(given, minlength=n_classes).min() >= 2 else np.zeros(len(given), dtype=bool)
    suspects = [Suspect(int(i), data.class_names[given[i]], data.class_names[int(probs[i].argmax())],
                        float(1 - quality[i])) for i in ranking if flagged[i] and probs[i].argmax() != given[i]]
    return LabelReview(suspects, ranking, probs, best, by_layer["output"])


def near_duplicates(features: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor | None = None,
                    threshold: float = DUPLICATE_SIMILARITY, limit: int = 500) -> list[NearDuplicate]:
    """Pairs of images whose features are nearly the same (cosine >= threshold), most similar first; each
    says whether it crosses the train/validation split and whether its labels differ."""
    pairs = []
    for start in range(0, len(features), 2048):
        similarity = features[start:start + 2048] @ features.T
        rows, cols = torch.nonzero(similarity >= threshold, as_tuple=True)
        for row, col in zip((rows + start).tolist(), cols.tolist()):
            if row < col:
                pairs.append((float(similarity[row - start, col]), row, col))
    pairs.sort(reverse=True)
    return [NearDuplicate(a, b, round(s, 4), bool(valid is not None and valid[a] != valid[b]),
                          bool(labels[a] != labels[b])) for s, a, b in pairs[:limit]]
