"""Images whose label is probably wrong, and near-duplicates, from a pretrained body's features.

Every image gets two out-of-sample predictions, averaged: one from its neighbours, the labels of the k images most
like it (cosine similarity of the pretrained body's pooled features, the image itself left out), and one from a
linear probe (a softmax regression on the same features, fitted on the other four fifths of the images: cleanlab's
usual model). Several depths of the body are tried in one forward pass, and the two whose neighbours predict the
given labels best are used: early layers suit drawings and digits, the last ones photos, and the data decides.
Neighbours catch an image unlike its class's others; the probe, a class boundary drawn through the whole set.
Confident learning (cleanlab) then ranks the images whose given label the evidence contradicts, most suspicious
first, and estimates how many there are. Features come once (seconds at 64 px); the probe fits in a second.
Label sets (several labels per image) get the same evidence, a probability per label (out_of_sample_probs), and
their own review: core.fix.labelsets.

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
# The linear probe: folds, L2 penalty on the standardized features' weights, L-BFGS iterations. Tuned with
# bench/label_noise on the digits (noise seeds 1, 2) and one Fashion-MNIST sample (seed 1): the neighbours alone
# found 0.939, 0.944 and 0.830 of the moved labels among the top N, both together 0.961, 0.972 and 0.875.
PROBE_FOLDS, PROBE_WEIGHT_DECAY, PROBE_ITERATIONS = 5, 0.01, 100
CHOOSE_ON = 5000  # images the depths are chosen on for pretrained_features: neighbours of all 70,000 cost minutes


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
    # in the body's order, so that layers its neighbours judge alike are chosen the same way every time
    chosen = [blocks[i] for i in sorted({max(round(d * len(blocks)) - 1, 0) for d in depths})] if blocks else []
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
    exp(cosine / temperature). `features` (N, F) must be L2-normalized. `labels` (N,) class indices, or (N, C) bool
    label sets: then each label's probability is the share of the vote from neighbours that carry it."""
    n = len(labels)
    k = max(1, min(k, n - 1))
    probs = torch.zeros(n, n_classes)
    for start in range(0, n, chunk):
        similarity = features[start:start + chunk] @ features.T  # (chunk, N)
        rows = torch.arange(start, min(start + chunk, n))
        similarity[rows - start, rows] = -float("inf")  # an image is not its own neighbour
        values, indices = similarity.topk(k, dim=1)
        weights = torch.exp((values - 1) / temperature)  # shifted by the largest possible cosine: no overflow
        if labels.dim() == 2:  # (chunk, k, C) neighbours' label sets, weighed
            probs[rows] = (weights[..., None] * labels[indices].float()).sum(1) / weights.sum(1, keepdim=True)
        else:
            probs[rows] = torch.zeros(len(rows), n_classes).scatter_add_(1, labels[indices], weights)
    if labels.dim() == 2:
        return probs.numpy()
    return (probs / probs.sum(1, keepdim=True).clamp_min(1e-12)).numpy()


def probe_probs(features: torch.Tensor, labels: torch.Tensor, n_classes: int, *, folds: int = PROBE_FOLDS,
                weight_decay: float = PROBE_WEIGHT_DECAY, seed: int = 0) -> np.ndarray:
    """(N, C) out-of-fold class probabilities of a softmax regression on `features` (N, F), standardized: each
    image's from a probe fitted (L-BFGS, L2 penalty) on the folds it is not in. For (N, C) bool label sets, a sigmoid
    per label (one-vs-rest logistic regressions, fitted together). Seeded: the same every time."""
    n = len(labels)
    folds = max(min(folds, n), 2)
    fold = torch.empty(n, dtype=torch.long)
    fold[torch.randperm(n, generator=torch.Generator().manual_seed(seed))] = torch.arange(n) % folds
    x = features.float()
    x = (x - x.mean(0)) / x.std(0, unbiased=False).clamp_min(1e-6)
    multi_label = labels.dim() == 2
    targets = labels.float() if multi_label else labels
    probs = labels.float().mean(0).repeat(n, 1) if multi_label else torch.full((n, n_classes), 1.0 / n_classes)
    for k in range(folds):
        train = fold != k
        if not train.any():  # a single image: nothing to fit on
            continue
        weight, bias = fit_probe(x[train], targets[train], n_classes, weight_decay)
        logits = x[~train] @ weight + bias
        probs[~train] = torch.sigmoid(logits) if multi_label else torch.softmax(logits, 1)
    return probs.numpy()


def fit_probe(x: torch.Tensor, y: torch.Tensor, n_classes: int,
              weight_decay: float = PROBE_WEIGHT_DECAY) -> tuple[torch.Tensor, ...]:
    """(weight (F, C), bias (C,)) of a softmax regression fitted to (x, y) with L-BFGS and an L2 penalty; for y
    (N, C) of 0/1, C logistic regressions (binary cross-entropy summed over labels, so each label's penalty weighs
    what a one-label probe's does)."""
    weight = torch.zeros(x.shape[1], n_classes, requires_grad=True)
    bias = torch.zeros(n_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=PROBE_ITERATIONS, line_search_fn="strong_wolfe")

    def fit_loss(logits):
        if y.dim() == 2:
            return F.binary_cross_entropy_with_logits(logits, y, reduction="sum") / len(y)
        return F.cross_entropy(logits, y)

    def closure():
        optimizer.zero_grad()
        loss = fit_loss(x @ weight + bias) + weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():  # review_labels may run under inference mode
        optimizer.step(closure)
    return weight.detach(), bias.detach()


def pretrained_features(data: LabeledImages, *, arch: str = "efficientnet_lite0", size: int | None = None,
                        device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """(N, F) L2-normalized features of every image from the pretrained body: the two depths whose neighbours
    agree best with the labels (review_labels' choice, judged on up to CHOOSE_ON images), side by side."""
    body = build_classifier(arch, 2, pretrained=True, size=size or data.images.shape[-1]).body.to(device)
    by_layer = layer_features(body, data.images, device)
    some = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:CHOOSE_ON].sort().values
    best, _ = telling_layers({name: f[some] for name, f in by_layer.items()}, data.labels[some],
                             len(data.class_names))
    return F.normalize(torch.cat([by_layer[name] for name in best], 1), dim=1)


def telling_layers(by_layer: dict[str, torch.Tensor], labels: torch.Tensor,
                   n_classes: int) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    """(the two layers whose neighbours' votes agree best with the labels, each layer's votes (N, C)). Label sets
    (N, C): agreement is the share of images whose every label the votes (over one half or not) get right."""
    votes = {name: neighbour_probs(features, labels, n_classes) for name, features in by_layer.items()}
    given = labels.numpy()
    agreement = {name: float(((probs >= 0.5) == given).all(1).mean() if labels.dim() == 2 else
                             (probs.argmax(1) == given).mean()) for name, probs in votes.items()}
    return tuple(sorted(votes, key=lambda name: -agreement[name])[:2]), votes


def out_of_sample_probs(data: LabeledImages, *, arch: str = "efficientnet_lite0", size: int | None = None,
                        device: torch.device = torch.device("cpu")) -> tuple[np.ndarray, tuple[str, ...], dict]:
    """(probabilities (N, C) that no image's own label informed: the mean of its neighbours' votes at the two
    telling depths and the linear probe's; those depths; every depth's features (N, F_l) by layer name). One label
    per image: a softmax's; label sets: a probability per label."""
    size = size or data.images.shape[-1]
    body = build_classifier(arch, 2, pretrained=True, size=size).body.to(device)
    by_layer = layer_features(body, data.images, device)
    labels, n_classes = data.labels, len(data.class_names)
    best, votes = telling_layers(by_layer, labels, n_classes)
    neighbours = np.mean([votes[name] for name in best], axis=0)
    probe = probe_probs(torch.cat([by_layer[name] for name in best], 1), labels, n_classes)
    return (neighbours + probe) / 2, best, by_layer


def review_labels(data: LabeledImages, *, arch: str = "efficientnet_lite0", size: int | None = None,
                  device: torch.device = torch.device("cpu")) -> LabelReview:
    """Rank every image of `data` by how strongly its neighbours contradict its label."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    probs, best, by_layer = out_of_sample_probs(data, arch=arch, size=size, device=device)
    given, n_classes = data.labels.numpy(), len(data.class_names)
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
    says whether it crosses the train/validation split and whether its labels (or label sets) differ."""
    pairs = []
    for start in range(0, len(features), 2048):
        similarity = features[start:start + 2048] @ features.T
        rows, cols = torch.nonzero(similarity >= threshold, as_tuple=True)
        for row, col in zip((rows + start).tolist(), cols.tolist()):
            if row < col:
                pairs.append((float(similarity[row - start, col]), row, col))
    pairs.sort(reverse=True)
    return [NearDuplicate(a, b, round(s, 4), bool(valid is not None and valid[a] != valid[b]),
                          bool((labels[a] != labels[b]).any())) for s, a, b in pairs[:limit]]
