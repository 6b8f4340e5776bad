"""Predictions people can trust: calibrated probabilities, "none of these", and test-time augmentation.

- Calibration: temperature scaling (Guo et al., 2017). One number T is fitted on the validation set by minimising
  the negative log-likelihood of softmax(logits / T); it never changes which class wins, only how sure the
  model says it is. The expected calibration error (ECE) before and after says how much that helped.
- "None of these": deep k-nearest neighbours (Sun et al., 2022). An image's penultimate features, L2-normalised,
  are compared with those of (up to BANK_SIZE) training images; the cosine distance to the k-th nearest is its
  unknown score. The threshold is the validation scores' 97.5th percentile, so few images like the training data
  are flagged (at most 5% of new ones, bench/ood), and images of something else, far from every training image,
  are.
- Test-time augmentation (fastai's `tta`): the probabilities of the image and of augmented copies, mixed as
  fastai does (beta = 0.25 of the plain prediction).

Fitted at the end of every training run (core.train.run) and saved as the run's trust.npz; `TrustedModel` wraps a
model with its trust and its preprocessing, so the app, `python -m core.ship.predict`, the HTTP server and the exports
all predict the same way: RGB pixels 0..255 in, calibrated probabilities and an unknown score out.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.data.augment import Augment
from core.data.batches import IMAGENET_MEAN, IMAGENET_STD
from core.errors import BrokenRun

if TYPE_CHECKING:
    from core.config import TrainConfig

K_NEIGHBOURS = 10  # Sun et al. use 50 with 50,000 training images; our banks are 10-100× smaller
BANK_SIZE = 4096  # training images kept for the distance: ~8 MB of ResNet-18 features, ~21 MB of Lite0's
# Share of validation images flagged as unknown. Half the 5% the dashboard promises: the threshold is a quantile of
# a few hundred scores, so a new batch of images like the training data lands above or below it; on held-out
# halves of the digits' validation set (bench/ood) 2.5% kept the flagged share of new own images at or below 5%.
FLAG_RATE = 0.025
# The threshold is the validation scores' (1 - FLAG_RATE) quantile: with fewer scores than 1 / FLAG_RATE it is simply
# the largest, set by one image, and "none of these" is a guess (a camera dataset of 2 classes of 6 photos called a
# landscape "red circle 100%"). Below this many validation images the pages say so.
MIN_VALID_TO_KNOW = round(1 / FLAG_RATE)


def unknown_caveat(n_valid: int, n_classes: int) -> str | None:
    """A sentence for a run with too few validation images to tell "none of these" reliably; None otherwise."""
    if n_valid >= MIN_VALID_TO_KNOW:
        return None
    return (f"This run held out only {n_valid} validation image{'s' if n_valid != 1 else ''}, too few to learn "
            f"how far its classes reach: when a picture is none of the {n_classes} classes it may still name one, "
            f"and \"Not one of the {n_classes} classes\" is a guess. With at least {MIN_VALID_TO_KNOW} validation "
            f"images (about {MIN_VALID_TO_KNOW * 5} images in all at the default 20% held out) it can tell.")
TTA_BETA = 0.25  # fastai's tta: weight of the plain prediction against the augmented copies' mean
TTA_COPIES = 4
TTA_FALLBACK = Augment(zoom=1.1, lighting=0.1)  # for runs trained without augmentation: mild, never a flip


@dataclass(frozen=True)
class Trust:
    """What a run needs to calibrate its probabilities and say "none of these"."""

    temperature: float
    threshold: float  # unknown scores above it mean "not one of the classes"
    bank: np.ndarray  # (M, D) float32, L2-normalised penultimate features of training images
    k: int = K_NEIGHBOURS

    def save(self, path: Path) -> None:
        from core.atomic import write_atomic

        write_atomic(path, lambda f: np.savez(f, temperature=self.temperature, threshold=self.threshold,
                                              bank=self.bank, k=self.k))

    @classmethod
    def load(cls, path: Path) -> Trust:
        """BrokenRun, a sentence, when the file is damaged."""
        try:
            with np.load(path, allow_pickle=False) as npz:
                trust = cls(float(npz["temperature"]), float(npz["threshold"]), np.asarray(npz["bank"], np.float32),
                            int(npz["k"]))
        except (OSError, ValueError, KeyError, EOFError) as error:
            raise BrokenRun(f"{path.parent.name}/{path.name} is damaged ({type(error).__name__}).") from None
        if trust.bank.ndim != 2 or not 0 < trust.k <= len(trust.bank) or not trust.temperature > 0:
            raise BrokenRun(f"{path.parent.name}/{path.name} does not hold a usable calibration.")
        return trust


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The T > 0 that minimises the NLL of softmax(logits / T) on (N, C) logits and (N,) targets."""
    z, y = torch.as_tensor(logits, dtype=torch.float64), torch.as_tensor(targets, dtype=torch.long)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)  # optimise log T: T stays positive
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def calibrated(logits: np.ndarray, temperature: float) -> np.ndarray:
    """(N, C) probabilities softmax(logits / T)."""
    return torch.as_tensor(logits, dtype=torch.float64).div(temperature).softmax(1).float().numpy()


def reliability(probs: np.ndarray, targets: np.ndarray, bins: int = 10) -> dict[str, np.ndarray]:
    """A reliability diagram's data: per confidence bin (equal widths over 0..1), the mean confidence, the
    accuracy and the number of items; empty bins hold NaN."""
    confidence, correct = probs.max(1), probs.argmax(1) == targets
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(which, weights=confidence, minlength=bins) / count
        accuracy = np.bincount(which, weights=correct, minlength=bins) / count
    return {"confidence": mean_confidence, "accuracy": accuracy, "count": count,
            "edges": np.linspace(0, 1, bins + 1)}


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, bins: int = 15) -> float:
    """ECE: the item-weighted mean gap between confidence and accuracy over equal-width bins (Guo et al. use 15)."""
    table = reliability(probs, targets, bins)
    filled = table["count"] > 0
    gaps = np.abs(table["accuracy"][filled] - table["confidence"][filled])
    return float((gaps * table["count"][filled]).sum() / max(len(targets), 1))


@dataclass(frozen=True)
class TrustFigures:
    """What the Interpret page and the HTML report say of a run's trust."""
    trust: Trust
    ece_before: float  # expected calibration error of the raw probabilities
    ece_after: float  # and of the calibrated ones
    flagged: float | None  # share of validation images past the "none of these" threshold (None: no scores)


def trust_figures(path: Path, raw_probs: np.ndarray | None, probs: np.ndarray, targets: np.ndarray,
                  unknown_scores: np.ndarray | None) -> TrustFigures | None:
    """A run's trust figures from its trust.npz (`path`) and validation predictions; None for a run from before
    calibration (no raw probabilities or no trust.npz); BrokenRun when trust.npz is damaged."""
    if raw_probs is None or not path.exists():
        return None
    trust = Trust.load(path)
    flagged = flagged_share(trust, unknown_scores)
    before, after = expected_calibration_error(raw_probs, targets), expected_calibration_error(probs, targets)
    return TrustFigures(trust, before, after, flagged)


def flagged_share(trust: Trust, unknown_scores: np.ndarray | None) -> float | None:
    """The share of (N,) validation unknown scores past the "none of these" threshold; None without scores."""
    return None if unknown_scores is None else float((unknown_scores > trust.threshold).mean())


def knn_scores(features: torch.Tensor, bank: torch.Tensor, k: int, topk=None) -> torch.Tensor:
    """(N,) cosine distance of each L2-normalised feature row (N, D) to its k-th nearest row of bank (M, D).
    `topk(x, k)` -> (values, indices), descending along dim 1: torch.topk, or a converter's own op (core.ship.mobile).
    The k-th is taken at k - 1, not -1: one converter's decomposition turned -1 into an empty slice."""
    similarity = features @ bank.T  # (N, M)
    values = similarity.topk(k, dim=1).values if topk is None else topk(similarity, k)[0]
    return 1 - values[:, k - 1]


class TrustedModel(nn.Module):
    """A classifier as the app uses it and the exports ship it.

    In: RGB pixels (B, 3, S, S), uint8 or float in 0..255, already made square at the run's size.
    Out: (probabilities (B, C) calibrated, unknown score (B,)); a score above `threshold` means "none of these".
    Scaling and ImageNet normalisation happen inside, so a caller cannot get them wrong. A run of label sets
    (`multi_label`) gives each label's own sigmoid probability instead of a softmax over the classes.
    """

    def __init__(self, model: nn.Sequential, trust: Trust, multi_label: bool = False):
        super().__init__()
        self.body, head = model[0], model[1]
        self.pool = nn.Sequential(*list(head)[:-1])  # (B, F, h, w) -> (B, F): pooling, flattening (dropout: eval)
        self.classifier = head[-1]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255)
        self.register_buffer("bank", torch.from_numpy(trust.bank))
        self.register_buffer("temperature", torch.tensor(float(trust.temperature)))
        self.threshold, self.k, self.multi_label = float(trust.threshold), int(trust.k), multi_label
        self.eval()

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, C) probabilities of (B, C) logits: calibrated softmax, or each label's sigmoid."""
        return logits.sigmoid() if self.multi_label else (logits / self.temperature).softmax(1)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, F) penultimate features of RGB pixels 0..255."""
        return self.pool(self.body((pixels.float() - self.mean) / self.std))

    def forward(self, pixels: torch.Tensor, topk=None) -> tuple[torch.Tensor, torch.Tensor]:
        """`topk`: knn_scores' (a converter's own op, core.ship.mobile)."""
        features = self.features(pixels)
        probs = self.probabilities(self.classifier(features))
        return probs, knn_scores(F.normalize(features, dim=1), self.bank, self.k, topk)


def features_and_logits(model: nn.Sequential, images: torch.Tensor, batch_size: int = 256,
                        device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, F), logits (N, C)) of uint8 images (N, 3, S, S), on the CPU, in float32."""
    from core.data.batches import normalize
    from core.data.mapped import note_read

    head = model[1]
    model.eval()
    features, logits = [], []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size]
            note_read(batch.nbytes)  # pages of a memory-mapped file (core.data.mapped) leave resident memory
            x = normalize(batch.to(device))
            f = nn.Sequential(*list(head)[:-1])(model[0](x))
            features.append(f.float().cpu())
            logits.append(head[-1](f).float().cpu())
    return torch.cat(features), torch.cat(logits)


def fit_trust(model: nn.Sequential, train_images: torch.Tensor, valid_images: torch.Tensor,
              valid_labels: torch.Tensor, *, seed: int = 0, batch_size: int = 256,
              device: torch.device | str = "cpu") -> tuple[Trust, np.ndarray, np.ndarray]:
    """Fit the temperature on the validation logits and the unknown threshold on the validation scores against a
    bank of (up to BANK_SIZE, seeded) training images; returns (trust, validation logits, validation scores)."""
    generator = torch.Generator().manual_seed(seed)
    keep = torch.randperm(len(train_images), generator=generator)[:BANK_SIZE].sort().values
    bank_features, _ = features_and_logits(model, train_images[keep], batch_size, device)
    bank = F.normalize(bank_features, dim=1)
    valid_features, valid_logits = features_and_logits(model, valid_images, batch_size, device)
    k = min(K_NEIGHBOURS, len(bank))
    scores = knn_scores(F.normalize(valid_features, dim=1), bank, k).numpy()
    # label sets' sigmoids are each their own probability: no softmax temperature to fit (core.data.multilabel's
    # per-label thresholds take its place)
    temperature = fit_temperature(valid_logits.numpy(), valid_labels.numpy()) if valid_labels.dim() == 1 else 1.0
    threshold = float(np.quantile(scores, 1 - FLAG_RATE, method="higher")) if len(scores) else 1.0
    return Trust(temperature, threshold, bank.numpy(), k), valid_logits.numpy(), scores


def load_trusted_model(run_dir: Path) -> tuple[TrustedModel, list[str], TrainConfig]:
    """The run's model wrapped with its trust, in eval mode; BrokenRun when the run has none (it was trained
    before calibration existed: train it again) or its files are damaged."""
    from core.runs.checkpoint import load_model
    from core.runs.folder import RunFolder
    from core.runs.labelsets import is_multi_label

    folder = RunFolder(run_dir)
    if not folder.trust_path.exists():
        raise BrokenRun(f"Run {folder.run_id} has no calibration (trust.npz): it finished before this version "
                        "calibrated runs, or did not finish. Train it again to predict with \"none of these\".")
    model, class_names, config = load_model(run_dir)
    return TrustedModel(model, Trust.load(folder.trust_path), is_multi_label(folder)), class_names, config


def tta_probs(trusted: TrustedModel, images: torch.Tensor, augment: Augment, *, copies: int = TTA_COPIES,
              beta: float = TTA_BETA, seed: int = 0, batch_size: int = 256) -> np.ndarray:
    """(N, C) calibrated probabilities with test-time augmentation: the mean over `copies` augmented versions,
    mixed with the plain prediction as fastai's tta does: (1 - beta) * augmented + beta * plain. Runs trained
    without augmentation use TTA_FALLBACK (a mild zoom and lighting change)."""
    augment = augment if augment.active else TTA_FALLBACK
    generator = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].float()
            plain = trusted(x)[0]
            augmented = torch.stack([trusted(augment(x, generator))[0] for _ in range(copies)]).mean(0)
            out.append((1 - beta) * augmented + beta * plain)
    return torch.cat(out).numpy()
