"""What to collect next: for each class, its validation recall now and with N more training images of it.

Measured where it is cheap, on a softmax regression (the Fix page's probe) on the pretrained network's features,
each fit a fraction of a second. N more images of a class change two things:
- its share: the class's log prior moves by log((n + N) / n), and so does a calibrated model's score for it (logit
  adjustment); the validation images are scored again with it. On a starved class this is most of the gain
  (shirt, 30 images: recall 0.02 -> 0.37 of the 0.37 that 100 more gave on one sample, 0.35 of 0.54 on another);
- what it learns from more examples: learning curves with every class cut to 1/8 .. 3/4 at once (the shares
  kept), through which one line per class, logit(recall) = a_c + beta * log(n_c), shares beta among the classes
  (a starved class's own points are too few and too low to say how fast it learns). Its score moves by
  LEARNING * beta * log((n + N) / n) as well: with every class cut, both sides of each confusion learn; adding
  images of one class teaches one side.
Both shifts go onto the calibrated validation probabilities of the newest run on the dataset when there is one
(what the person's model does), else onto the probe's scores:

    projected recall = recall of class c with its log-probability moved by (1 + LEARNING * beta) log((n + N) / n)

`collect_next` orders the classes by projected gain in recall. Label sets (several labels per image): the same reasoning
one label at a time, in core.fix.plan_labels. Measured by bench/collect_plan.py: starve two
classes of a real set, plan, then really add the images and retrain with the defaults.

    python -m core.data plan PATH [--json] [--add N] [--run RUN_DIR]
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from core.fix.outliers import principal_axes
from core.fix.suspects import fit_probe

ADD = 100  # images a class would get, by default
SHARES = (1 / 8, 1 / 4, 1 / 2, 3 / 4)  # of a class's training images, besides all of them
REPEATS = 2  # random subsets per share: a small class's recall moves by whole images
DIMENSIONS = 128  # the probe fits on this many principal components of the features: 10x faster, same curves
WHITEN_PAST = 4 * DIMENSIONS  # training images past which the features are reduced to DIMENSIONS components
MIN_VALID = 5  # below this many validation images in some class, recall is measured by 5-fold cross-validation
# The share of the curves' slope that adding images of one class gives it. Chosen on 4 samples of bench/collect_plan
# (0.25, 0.5, 0.75, 1 tried: shirt's mean miss -0.055, -0.012, +0.045, +0.100) and reported on 4 others.
LEARNING = 0.5


@dataclass(frozen=True)
class ClassPlan:
    name: str
    train_images: int
    recall: float  # on validation, now
    projected_recall: float  # with `add` more training images of this class
    curve: list[tuple[float, float]] = field(default_factory=list)  # (training images, probe's recall), measured

    @property
    def gain(self) -> float:
        return self.projected_recall - self.recall


@dataclass(frozen=True)
class CollectPlan:
    kind: ClassVar[str] = "class"  # what it plans: "label" in core.fix.plan_labels' LabelSetPlan
    add: int
    classes: list[ClassPlan]  # in the dataset's class order
    measured_on: str  # "the validation split" or "5-fold cross-validation"
    recall_from: str  # "the probe" or the run's name

    @property
    def collect_next(self) -> list[str]:
        return [c.name for c in sorted(self.classes, key=lambda c: (-c.gain, c.recall, c.name))]

    def to_json(self) -> dict:
        return {"collect_next": self.collect_next, "add": self.add, "measured_on": self.measured_on,
                "recall_from": self.recall_from,
                "classes": [{"class": c.name, "train_images": c.train_images, "recall": round(c.recall, 4),
                             "projected_recall": round(c.projected_recall, 4),
                             "curve": [[n, round(r, 4)] for n, r in c.curve]} for c in self.classes]}

    def sentence(self, name: str) -> str:
        """"shirt: 30 training images, recall 0.07; 100 more would bring it to about 0.53"."""
        c = next(c for c in self.classes if c.name == name)
        return (f"{c.name}: {c.train_images} training images, recall {c.recall:.2f}; {self.add} more would bring it "
                f"to about {c.projected_recall:.2f}")


def collect_plan(features: torch.Tensor, labels: torch.Tensor, class_names: tuple[str, ...],
                 folds: list[tuple[np.ndarray, np.ndarray]], *, add: int = ADD,
                 run: tuple[np.ndarray, np.ndarray] | None = None, recall_from: str = "the probe",
                 seed: int = 0) -> CollectPlan:
    """The plan from features (N, F) of every image, their labels (N,), and (train, valid) index pairs: one pair
    for a run's split, or several for cross-validation. `run`: a trained run's (calibrated probabilities (V, C) of
    its validation images, columns in class_names' order; their labels (V,)): the recall now and the projection
    are that model's."""
    x = components(features.float(), np.concatenate([train for train, _ in folds]))
    n_classes, rng = len(class_names), np.random.default_rng(seed)
    probes, cuts = [], []  # the probe of each fold on all its training images; rows of the cut ones' recall
    for train, valid in folds:
        probes.append(_Probe.fit(x, labels, train, valid, n_classes))
        by_class = [train[labels[train].numpy() == c] for c in range(n_classes)]
        for share in SHARES:  # every class cut at once: fewer images, the same shares
            for _ in range(REPEATS):
                subset = np.concatenate([rng.choice(m, max(1, round(share * len(m))), replace=False)
                                         for m in by_class if len(m)])
                cuts += _Probe.fit(x, labels, subset, valid, n_classes).rows()
    beta = shared_slope(np.array(cuts + [row for probe in probes for row in probe.rows()]), n_classes)
    model = None if run is None else _Probe(torch.as_tensor(np.log(np.clip(run[0], 1e-12, 1))),
                                            np.asarray(run[1]), probes[0].counts)
    plans = []
    for c, name in enumerate(class_names):
        n = float(np.mean([probe.counts[c] for probe in probes]))
        measured = pooled([probe.hits(c) for probe in probes])
        shift = np.log((n + add) / max(n, 1)) * (1 + LEARNING * beta)  # its log prior, and what it learns
        scored = [model] if model is not None and (model.truth == c).any() else probes  # the run's, where it can
        now, then = pooled([s.hits(c) for s in scored]), pooled([s.hits(c, shift) for s in scored])
        rows = np.array([row for row in cuts if row[0] == c]).reshape(-1, 4)
        points = [(float(k), float(rows[rows[:, 1] == k, 2].sum() / max(rows[rows[:, 1] == k, 3].sum(), 1)))
                  for k in sorted(set(rows[:, 1].tolist()))] + [(n, measured)]
        plans.append(ClassPlan(name, int(round(n)), float(now), float(max(then, now)), points))
    measured_on = "the validation split" if len(folds) == 1 else f"{len(folds)}-fold cross-validation"
    return CollectPlan(add, plans, measured_on, recall_from)


def plan_folds(labels: torch.Tensor, train: np.ndarray, valid: np.ndarray,
               seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The run's split when every class has MIN_VALID validation images, else 5 stratified folds of every image."""
    n_classes = int(labels.max()) + 1
    if np.bincount(labels[valid].numpy(), minlength=n_classes).min() >= MIN_VALID:
        return [(train, valid)]
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(labels), dtype=np.int64)
    for c in range(n_classes):
        members = rng.permutation(np.flatnonzero(labels.numpy() == c))
        fold[members] = np.arange(len(members)) % 5
    everything = np.arange(len(labels))
    return [(everything[fold != k], everything[fold == k]) for k in range(5)]


def components(x: torch.Tensor, fit_on: np.ndarray) -> torch.Tensor:
    """x (N, F) standardized; with more than WHITEN_PAST training images, projected on its first DIMENSIONS
    principal components, each scaled to unit variance (10x faster fits, the same curves). Fewer, and the scaled
    components are mostly noise the probe fits (28 camera photos of plain colours: no image of one class right),
    so the standardized features go as they are."""
    fit_on = np.unique(fit_on)
    x = (x - x[fit_on].mean(0)) / x[fit_on].std(0, unbiased=False).clamp_min(1e-6)
    if len(fit_on) <= WHITEN_PAST:
        return x
    z = x @ principal_axes(x[fit_on], min(DIMENSIONS, x.shape[1]))
    return z / z[fit_on].std(0, unbiased=False).clamp_min(1e-6)


@dataclass(frozen=True)
class _Probe:
    """The probe fitted on some training images, with its scores for the validation images."""

    scores: torch.Tensor  # (V, C) logits of the validation images
    truth: np.ndarray  # (V,) their labels
    counts: np.ndarray  # (C,) training images of each class it was fitted on

    @classmethod
    def fit(cls, x: torch.Tensor, labels: torch.Tensor, train: np.ndarray, valid: np.ndarray,
            n_classes: int) -> _Probe:
        weight, bias = fit_probe(x[train], labels[train], n_classes)
        return cls(x[valid] @ weight + bias, labels[valid].numpy(),
                   np.bincount(labels[train].numpy(), minlength=n_classes))

    def hits(self, c: int, shift: float = 0.0) -> tuple[int, int]:
        """(validation images of class c it calls c with its score for c moved by `shift`, images of class c)."""
        scores = self.scores.clone()
        scores[:, c] += shift
        guess = scores.argmax(1).numpy()
        return int(((guess == c) & (self.truth == c)).sum()), int((self.truth == c).sum())

    def rows(self) -> list[tuple[int, int, int, int]]:
        """(class, its training images, its validation images called right, its validation images) per class."""
        return [(c, int(self.counts[c]), *self.hits(c)) for c in range(len(self.counts))]


def pooled(hits: list[tuple[int, int]]) -> float:
    return sum(h for h, _ in hits) / max(sum(n for _, n in hits), 1)


def shared_slope(rows: np.ndarray, n_classes: int) -> float:
    """beta of logit(recall) = a_c + beta * log(n_c), fitted by weighted least squares over rows of (class, training
    images, hits, validation images); smoothed recall (0 and 1 have no logit); kept >= 0."""
    rows = rows[(rows[:, 1] > 0) & (rows[:, 3] > 0)]
    c = rows[:, 0].astype(int)
    recall = (rows[:, 2] + 0.5) / (rows[:, 3] + 1)
    logit, weight = np.log(recall / (1 - recall)), np.sqrt(rows[:, 3])
    design = np.concatenate([np.eye(n_classes)[c], np.log(rows[:, 1:2])], 1)
    solution = np.linalg.lstsq(design * weight[:, None], logit * weight, rcond=None)[0]
    return max(float(solution[-1]), 0.0)
