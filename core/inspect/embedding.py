"""A map of a dataset: every image placed in 2-D so that images the network sees as alike lie close together.

UMAP (umap-learn) lays out the images from their features: the pretrained network's, or a trained run's. Its
slow first step, finding each image's neighbours, is done here with the chunked products of core.fix.outliers
on the first principal components, and handed to UMAP as a precomputed graph. Seeded, so the same features give
the same map: UMAP then works on one thread.

Past LAYOUT_LIMIT images (a choice from the size alone, never from a timing), UMAP lays out a stratified sample
and every other image is placed at the similarity-weighted mean of its nearest sampled images: bench/data_map.py
measures both on 70,000 images.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from core.fix.outliers import NEIGHBOURS as OUTLIER_NEIGHBOURS
from core.fix.outliers import OutlierReview, find_outliers, nearest, project

NEIGHBOURS = 15  # UMAP's default
SMALL_FEATURES_PAST = 20_000  # images past which features are read at 32 px, not 64: a quarter of the work
LAYOUT_LIMIT = 15_000  # images UMAP lays out itself; the rest are placed beside their nearest laid-out images


def feature_size(n_images: int) -> int:
    """The image size the map reads features at: 64 px, or 32 px past SMALL_FEATURES_PAST images (from the size
    alone: the same dataset always gets the same map)."""
    return 64 if n_images <= SMALL_FEATURES_PAST else 32


def data_map(features: torch.Tensor, labels: torch.Tensor | None = None, seed: int = 0,
             limit: int = LAYOUT_LIMIT) -> np.ndarray:
    """(N, 2) float32 positions for features (N, F); `labels` (N,) or label sets (N, C) make the sample stratified
    past `limit`."""
    return _layout(project(features), labels, seed, limit)


def _layout(x: torch.Tensor, labels: torch.Tensor | None, seed: int, limit: int,
            neighbours: tuple[torch.Tensor, torch.Tensor] | None = None) -> np.ndarray:
    """data_map on projected features x (N, D); `neighbours`: nearest(x, NEIGHBOURS or more), if found already."""
    n = len(x)
    if n < 4:  # UMAP needs a few neighbours; a line keeps the order
        return np.stack([np.arange(n, dtype=np.float32), np.zeros(n, dtype=np.float32)], 1)
    if n <= limit:
        return _umap(x, seed, neighbours)
    sample = _stratified_sample(labels if labels is not None else torch.zeros(n, dtype=torch.long), limit, seed)
    positions = np.zeros((n, 2), dtype=np.float32)
    positions[sample] = _umap(x[sample], seed)
    rest = np.setdiff1d(np.arange(n), sample)
    for start in range(0, len(rest), 4096):  # each placed at its 5 nearest laid-out images, weighted by likeness
        rows = rest[start:start + 4096]
        similarity, index = (x[rows] @ x[sample].T).topk(5, dim=1)
        weight = torch.softmax(similarity / 0.05, dim=1).numpy()
        positions[rows] = (weight[..., None] * positions[sample][index.numpy()]).sum(1)
    return positions


def _umap(x: torch.Tensor, seed: int, neighbours: tuple[torch.Tensor, torch.Tensor] | None = None) -> np.ndarray:
    import umap  # numba compiles on first use: imported only when a map is drawn

    k = min(NEIGHBOURS, len(x) - 1)
    similarity, index = neighbours if neighbours is not None else nearest(x, k)
    similarity, index = similarity[:, :k], index[:, :k]
    own = torch.arange(len(x))[:, None]  # UMAP wants each image as its own first neighbour, at distance 0
    indices = torch.cat([own, index], 1).numpy()
    distances = torch.cat([torch.zeros(len(x), 1), (1 - similarity).clamp_min(0)], 1).numpy()
    reducer = umap.UMAP(n_neighbors=k + 1, metric="cosine", random_state=seed, n_jobs=1,
                        precomputed_knn=(indices, distances))
    with warnings.catch_warnings():  # "transform will be unavailable": the map never places new images with it
        warnings.simplefilter("ignore", UserWarning)
        return reducer.fit_transform(x.numpy()).astype(np.float32)


def _stratified_sample(labels: torch.Tensor, limit: int, seed: int) -> np.ndarray:
    """About `limit` indices (rounding may add one a label), every label in its share and at least once, sorted;
    label sets (N, C): every set as a stratum of its own."""
    rng = np.random.default_rng(seed)
    labels_np = labels.numpy()
    if labels_np.ndim == 2:
        labels_np = np.unique(labels_np, axis=0, return_inverse=True)[1].reshape(-1)
    chosen = []
    for label in np.unique(labels_np):
        members = np.flatnonzero(labels_np == label)
        chosen.append(rng.choice(members, max(1, round(limit * len(members) / len(labels_np))), replace=False))
    return np.sort(np.concatenate(chosen))


@dataclass(frozen=True)
class DatasetMap:
    positions: np.ndarray  # (N, 2) float32
    outliers: OutlierReview  # every image, least like any other first

    def outlier_scores(self) -> np.ndarray:
        """(N,) each image's outlier score, in dataset order."""
        scores = np.zeros(len(self.positions), dtype=np.float32)
        for outlier in self.outliers.outliers:
            scores[outlier.index] = outlier.score
        return scores


def map_dataset(features: torch.Tensor, labels: torch.Tensor, seed: int = 0,
                limit: int = LAYOUT_LIMIT) -> DatasetMap:
    """The map and the outliers of images with features (N, F) and labels (N,) or label sets (N, C) bool: the
    features projected once, and each image's nearest images found once for both (UMAP's graph and the outlier
    scores)."""
    x = project(features)
    neighbours = nearest(x, max(NEIGHBOURS, OUTLIER_NEIGHBOURS)) if len(x) >= 3 else None
    positions = _layout(x, labels, seed, limit, neighbours if len(x) <= limit else None)
    return DatasetMap(positions, find_outliers(features, labels, neighbours=neighbours))
