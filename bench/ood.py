""""None of these": how often images of something else are flagged unknown, and how often the model's own are.

    python -m bench.ood [--seeds 0 1 2] [--size 64] [--smoke]

For each seed, the default recipe trains on the digits (`python -m core.train --data builtin:digits --seed S`,
EfficientNet-Lite0 at 64 px). Its validation images are split in two halves: the threshold is chosen on the
first (its 97.5th percentile of unknown scores, as core.inspect.trust does on the whole validation set) and the rate of
the model's own images flagged is measured on the second, which the threshold never saw. The other dataset:
500 seeded random crops (48-256 px squares) of the natural photographs that ship with scikit-learn and
matplotlib (a Chinese temple, a flower, Grace Hopper), made square the way the run makes its images.

Ours is core.inspect.trust's score (distance to the 10th-nearest training image in the penultimate features); the
baseline, in the same run with the same threshold rule, is the maximum softmax probability (Hendrycks & Gimpel,
2017). Neither was tuned on these photos: k = 10 comes from the method; the percentile was set from the own
images' held-out share only (seed 0), never from the photos.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

PHOTO_CROPS = 500


def photo_crops(size: int, n: int = PHOTO_CROPS, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) uint8: random square crops of the photographs that ship with scikit-learn and
    matplotlib, resized to `size`."""
    import matplotlib
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(image) for image in load_sample_images().images]
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if hopper.exists():
        photos.append(Image.open(hopper).convert("RGB"))
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(n):
        photo = photos[rng.integers(len(photos))]
        side = int(rng.integers(48, min(256, *photo.size) + 1))
        left, top = int(rng.integers(photo.width - side + 1)), int(rng.integers(photo.height - side + 1))
        crop = photo.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BILINEAR)
        crops.append(torch.from_numpy(np.asarray(crop).copy()).permute(2, 0, 1))
    return torch.stack(crops)


def rates(own_fit: np.ndarray, own_test: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """(share of held-out own images flagged, share of other images flagged), with the threshold chosen on
    `own_fit` as core.inspect.trust chooses it (higher score = more unknown)."""
    from core.inspect.trust import FLAG_RATE

    threshold = np.quantile(own_fit, 1 - FLAG_RATE, method="higher")
    return float((own_test > threshold).mean()), float((other > threshold).mean())


def measure(seed: int, size: int, runs_dir: Path, schedule: tuple[str, ...] = (),
            crops: int = PHOTO_CROPS) -> dict[str, tuple[float, float]]:
    """Both methods' rates for a run trained with `seed` (and `schedule`, extra epoch flags), against `crops`
    photo crops."""
    from core.data.load import Split, load_source
    from core.inspect.trust import load_trusted_model
    from core.train.__main__ import main as train

    assert train(["--data", "builtin:digits", "--size", str(size), "--seed", str(seed), *schedule,
                  "--runs-dir", str(runs_dir), "--name", f"seed{seed}"]) == 0
    trusted, _, config = load_trusted_model(runs_dir / f"seed{seed}")
    split = Split.from_dataset(load_source(config.data, config.size), config.valid_pct, config.seed)
    with torch.no_grad():
        own_probs, own_scores = trusted(split.valid_images)
        other_probs, other_scores = trusted(photo_crops(config.size, crops, seed))
    half = np.random.default_rng(seed).permutation(len(own_scores))
    fit, test = half[: len(half) // 2], half[len(half) // 2:]
    own_msp, other_msp = -own_probs.max(1).values.numpy(), -other_probs.max(1).values.numpy()
    return {"ours (kNN distance)": rates(own_scores.numpy()[fit], own_scores.numpy()[test], other_scores.numpy()),
            "baseline (max softmax)": rates(own_msp[fit], own_msp[test], other_msp)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--smoke", action="store_true",
                        help="one seed at 16 px, one frozen epoch, 50 photo crops: checks that it runs (CI)")
    args = parser.parse_args(argv)
    schedule, crops = (), PHOTO_CROPS
    if args.smoke:
        args.seeds, args.size, schedule, crops = [0], 16, ("--freeze-epochs", "1", "--epochs", "0"), 50
    with tempfile.TemporaryDirectory() as runs_dir:
        results = [measure(seed, args.size, Path(runs_dir), schedule, crops) for seed in args.seeds]
    print(f"\n{'method':<24} {'own flagged':>12} {'photos flagged':>15}   (median of seeds {args.seeds})")
    for method in results[0]:
        own = statistics.median(r[method][0] for r in results)
        other = statistics.median(r[method][1] for r in results)
        print(f"{method:<24} {own:>12.1%} {other:>15.1%}")
    ours, base = (statistics.median(r[m][1] for r in results) for m in results[0])
    print(f"photos flagged, ours / baseline: {ours / max(base, 1e-9):.2f}x")


if __name__ == "__main__":
    main()
