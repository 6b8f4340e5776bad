"""The map of a dataset at the sizes the app takes: Fashion-MNIST's 70,000 photos (npm's package, bench.fashion).

Times each step the Map page runs for the pretrained network (features at the app's size for that many images,
core.inspect.embedding.feature_size; neighbours and outliers; the 2-D
layout), with the layout as the app makes it (UMAP on a stratified sample of LAYOUT_LIMIT images, the rest placed
beside their nearest) against UMAP on every image, in the same run; and how well each keeps the classes apart
(silhouette of the 2-D positions by label, on a fixed 5,000-image sample), and the peak memory.

    .venv/bin/python -m bench.data_map [--images 70000] [--full-umap]
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch
from sklearn.metrics import silhouette_score

from bench.fashion import CLASS_NAMES, download
from core.data.images import LabeledImages, resize_uint8
from core.fix.suspects import pretrained_features
from core.inspect.embedding import LAYOUT_LIMIT, data_map, feature_size, map_dataset


def timed(label: str, work):
    started = time.perf_counter()
    result = work()
    print(f"{label}: {time.perf_counter() - started:.1f} s", flush=True)
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=70_000)
    parser.add_argument("--full-umap", action="store_true", help="also UMAP on every image (the baseline)")
    parser.add_argument("--size", type=int, default=None, help="feature size (default: the app's, feature_size)")
    args = parser.parse_args()
    classes = download()
    pixels = np.concatenate(classes)[:, None].repeat(3, 1)  # (N, 3, 28, 28) grey as RGB
    labels = np.concatenate([np.full(len(c), k) for k, c in enumerate(classes)])
    keep = np.sort(np.random.default_rng(0).permutation(len(labels))[:args.images])
    size = args.size or feature_size(len(keep))
    images = torch.cat([resize_uint8(torch.from_numpy(pixels[keep[i:i + 4096]]), size)
                        for i in range(0, len(keep), 4096)])
    data = LabeledImages(images, torch.from_numpy(labels[keep]), tuple(CLASS_NAMES),
                         tuple(f"#{i}" for i in keep))
    print(f"{len(data)} images at {size} px", flush=True)
    features, features_s = timed("pretrained features", lambda: pretrained_features(data))
    found, layout_s = timed(f"neighbours, outliers and layout as the app makes them (map_dataset; UMAP on "
                            f"{min(LAYOUT_LIMIT, len(data))})", lambda: map_dataset(features, data.labels))
    positions = found.positions
    judge = np.sort(np.random.default_rng(1).permutation(len(data))[:5000])
    score = silhouette_score(positions[judge], data.labels.numpy()[judge])
    print(f"the app's map: {features_s + layout_s:.1f} s in all; silhouette by label {score:.3f}")
    if args.full_umap:
        full, full_s = timed("UMAP on every image", lambda: data_map(features, data.labels, limit=len(data)))
        full_score = silhouette_score(full[judge], data.labels.numpy()[judge])
        print(f"UMAP on every image: {full_s:.1f} s, {full_s / layout_s:.2f}x the app's layout; silhouette "
              f"{full_score:.3f} against the app's {score:.3f}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
