"""What to collect next for label sets (several labels per image): for each label, its validation recall and F1 now,
and its recall with N more training images carrying it.

core.fix.plan's reasoning, one label at a time. Each label is a yes/no of its own (a sigmoid per label: the run's, or
the Fix page's one-vs-rest probe, core.fix.suspects.fit_probe, on the pretrained network's features), so its prior is
its own binary prior: of the training images, n carry it and m do not; N more that carry it move its log-odds from
log(n / m) to log((n + N) / m), by log((n + N) / n) exactly, as a class's log prior moves. What it learns from more
examples: learning curves of the probe with the training images cut to 1/8 .. 3/4 (each label's share kept, on
average), through which one line per label, logit(recall) = a_c + beta * log(n_c), shares beta among the labels
(core.fix.plan.shared_slope). So, as for classes,

    projected recall = recall of label c with its logit moved by (1 + LEARNING * beta) log((n + N) / n)

A label is given where its probability reaches its threshold: with a run of label sets on this dataset, the run's
own on its validation sigmoids (core.runs.labelsets.run_thresholds: chosen for best F1 on validation); else 0.5 on
the probe's (fastai's default; a threshold chosen on the images it is then judged by would flatter the probe). F1 is
given now, not projected: moving one label's logit is moving its threshold, and a run's thresholds are already the
F1-best on those images, so a projected F1 could only say "no better". Labels are ordered by projected gain in recall.
LEARNING is core.fix.plan's, chosen on classes; bench.collect_plan_multi (starve a label, add, retrain) checks it on
labels: the starved label named first on 3 of 3 samples, projected recall off by -0.235, +0.108 and +0.049 (docs/data).

    python -m core.data plan PATH [--json] [--add N] [--run RUN_DIR]    # the same command as for classes
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from core.fix.plan import ADD, LEARNING, MIN_VALID, REPEATS, SHARES, components, pooled, shared_slope
from core.fix.suspects import fit_probe

PRESENT = 0.5  # the probe gives a label where its probability reaches this (fastai's threshold)


@dataclass(frozen=True)
class LabelPlan:
    name: str
    train_images: int  # training images carrying the label
    recall: float  # of the validation images carrying it, the share given it, now
    f1: float  # on validation, now
    threshold: float  # the probability at which it is given
    projected_recall: float  # with `add` more training images carrying it
    curve: list[tuple[float, float]] = field(default_factory=list)  # (training images carrying it, probe's recall)

    @property
    def gain(self) -> float:
        return self.projected_recall - self.recall


@dataclass(frozen=True)
class LabelSetPlan:
    kind: ClassVar[str] = "label"  # what it plans, as CollectPlan's "class"
    add: int
    classes: list[LabelPlan]  # one per label, in the dataset's order (named as CollectPlan's, so pages read either)
    measured_on: str  # "the validation split" or "5-fold cross-validation"
    recall_from: str  # "the probe" or the run's name

    @property
    def collect_next(self) -> list[str]:
        return [c.name for c in sorted(self.classes, key=lambda c: (-c.gain, c.recall, c.name))]

    def to_json(self) -> dict:
        return {"collect_next": self.collect_next, "add": self.add, "measured_on": self.measured_on,
                "recall_from": self.recall_from, "multi_label": True,
                "labels": [{"label": c.name, "train_images": c.train_images, "recall": round(c.recall, 4),
                            "f1": round(c.f1, 4), "threshold": round(c.threshold, 4),
                            "projected_recall": round(c.projected_recall, 4),
                            "curve": [[n, round(r, 4)] for n, r in c.curve]} for c in self.classes]}

    def sentence(self, name: str) -> str:
        """"label four: 6 training images, recall 0.10 now (F1 0.18), about 0.60 with 100 more images carrying it"."""
        c = next(c for c in self.classes if c.name == name)
        return (f"label {c.name}: {c.train_images} training images, recall {c.recall:.2f} now (F1 {c.f1:.2f}), about "
                f"{c.projected_recall:.2f} with {self.add} more images carrying it")


def collect_label_plan(features: torch.Tensor, labels: torch.Tensor, label_names: tuple[str, ...],
                       folds: list[tuple[np.ndarray, np.ndarray]], *, add: int = ADD,
                       run: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                       recall_from: str = "the probe", seed: int = 0) -> LabelSetPlan:
    """The plan from features (N, F) of every image, their label sets (N, C) of 0/1, and (train, valid) index pairs:
    one for a run's split, or several for cross-validation. `run`: a trained run's (sigmoid probabilities (V, C) of
    its validation images, columns in label_names' order; their label sets (V, C); its threshold per label (C,)):
    the recall now and the projection are that model's, for each label its validation images carry."""
    x = components(features.float(), np.concatenate([train for train, _ in folds]))
    probes, cuts = _curves(x, labels, folds, np.random.default_rng(seed))
    beta = shared_slope(np.array(cuts + [row for probe in probes for row in probe.rows()]), len(label_names))
    model = None if run is None else _Scored(np.asarray(run[0], dtype=np.float32), np.asarray(run[1], dtype=bool),
                                             np.asarray(run[2], dtype=np.float64), probes[0].counts)
    plans = []
    for c, name in enumerate(label_names):
        n = float(np.mean([probe.counts[c] for probe in probes]))
        shift = np.log((n + add) / max(n, 1)) * (1 + LEARNING * beta)  # its binary prior, and what it learns
        scored = [model] if model is not None and model.truth[:, c].any() else probes  # the run's, where it can
        now, then = pooled([s.hits(c) for s in scored]), pooled([s.hits(c, shift) for s in scored])
        rows = np.array([row for row in cuts if row[0] == c]).reshape(-1, 4)
        points = [(float(k), float(rows[rows[:, 1] == k, 2].sum() / max(rows[rows[:, 1] == k, 3].sum(), 1)))
                  for k in sorted(set(rows[:, 1].tolist())) if k > 0]
        points.append((n, pooled([probe.hits(c) for probe in probes])))
        plans.append(LabelPlan(name, int(round(n)), float(now), _pooled_f1([s.f1_counts(c) for s in scored]),
                               float(scored[0].thresholds[c]), float(max(then, now)), points))
    measured_on = "the validation split" if len(folds) == 1 else f"{len(folds)}-fold cross-validation"
    return LabelSetPlan(add, plans, measured_on, recall_from)


def label_set_folds(labels: torch.Tensor, train: np.ndarray, valid: np.ndarray,
                    seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The run's split when every label some image carries has MIN_VALID validation images carrying it, else 5 folds
    of every image, each label's carriers dealt round them in turn (the rarest label's first)."""
    sets = labels.numpy().astype(bool)
    carried = sets.any(0)
    if sets[valid][:, carried].sum(0).min(initial=MIN_VALID) >= MIN_VALID:
        return [(train, valid)]
    rng = np.random.default_rng(seed)
    fold, dealt = np.full(len(sets), -1), 0
    for label in [*np.argsort(sets.sum(0), kind="stable"), None]:  # None: the images no label has dealt yet
        free = np.flatnonzero((fold < 0) & (sets[:, label] if label is not None else True))
        fold[rng.permutation(free)] = (dealt + np.arange(len(free))) % 5
        dealt += len(free)
    everything = np.arange(len(sets))
    return [(everything[fold != k], everything[fold == k]) for k in range(5)]


def _curves(x: torch.Tensor, labels: torch.Tensor, folds: list[tuple[np.ndarray, np.ndarray]],
            rng: np.random.Generator) -> tuple[list[_Scored], list[tuple[int, int, int, int]]]:
    """(the probe of each fold on all its training images; rows of (label, its training images, hits, validation
    images carrying it) of the probes fitted on random fractions of each fold's training images)."""
    probes, cuts = [], []
    for train, valid in folds:
        probes.append(_Scored.probe(x, labels, train, valid))
        for share in SHARES:  # the images cut at random: fewer of each label, the same shares on average
            for _ in range(REPEATS):
                subset = rng.choice(train, max(1, round(share * len(train))), replace=False)
                cuts += _Scored.probe(x, labels, subset, valid).rows()
    return probes, cuts


@dataclass(frozen=True)
class _Scored:
    """A model's sigmoids for some validation images, with the threshold it gives each label at."""

    probs: np.ndarray  # (V, C) float32 probability of each label
    truth: np.ndarray  # (V, C) bool, the label sets
    thresholds: np.ndarray  # (C,)
    counts: np.ndarray  # (C,) training images carrying each label, of the probe's fit

    @classmethod
    def probe(cls, x: torch.Tensor, labels: torch.Tensor, train: np.ndarray, valid: np.ndarray) -> _Scored:
        targets = labels.float()
        weight, bias = fit_probe(x[train], targets[train], targets.shape[1])
        return cls(torch.sigmoid(x[valid] @ weight + bias).numpy(), labels[valid].numpy().astype(bool),
                   np.full(targets.shape[1], PRESENT), targets[train].sum(0).numpy().astype(np.int64))

    def given(self, c: int, shift: float = 0.0) -> np.ndarray:
        """(V,) whether label c is given with its logit moved by `shift`; compared in the sigmoids' float32, as the
        run's own figures are."""
        p = self.probs[:, c]
        if shift:
            p64 = p.astype(np.float64)
            logit = np.log(np.clip(p64, 1e-12, 1)) - np.log(np.clip(1 - p64, 1e-12, 1))
            p = (1 / (1 + np.exp(-(logit + shift)))).astype(np.float32)
        return p >= np.float32(self.thresholds[c])

    def hits(self, c: int, shift: float = 0.0) -> tuple[int, int]:
        """(validation images carrying label c that are given it with its logit moved by `shift`, those carrying it)."""
        carry = self.truth[:, c]
        return int((self.given(c, shift) & carry).sum()), int(carry.sum())

    def f1_counts(self, c: int) -> tuple[int, int]:
        """(twice the images given label c rightly, images given it plus images carrying it): F1's two sides."""
        given, carry = self.given(c), self.truth[:, c]
        return 2 * int((given & carry).sum()), int(given.sum() + carry.sum())

    def rows(self) -> list[tuple[int, int, int, int]]:
        """(label, its training images, its validation carriers given it, its validation carriers) per label."""
        return [(c, int(self.counts[c]), *self.hits(c)) for c in range(len(self.counts))]


def _pooled_f1(sides: list[tuple[int, int]]) -> float:
    """F1 over the pooled folds; 0 where nothing is given and nothing carries it (core.data.labelscores')."""
    return sum(s for s, _ in sides) / max(sum(t for _, t in sides), 1)
