"""Images whose label set is probably wrong (multi-label): labels probably missing, labels probably extra.

Each image gets a probability per label that its own labels did not inform, from the same evidence as one label per
image (core.fix.suspects.out_of_sample_probs): the share of its neighbours' vote that carries the label, at the two
depths of the pretrained body where neighbours agree best with the label sets, averaged with a one-vs-rest linear
probe (a sigmoid per label) fitted on the other four fifths of the images. cleanlab's multi-label confident learning
(`cleanlab.multilabel_classification`) then flags the images where any label looks wrong and scores every image
(self-confidence per label, aggregated). A suspect's suggested set holds the labels whose probability is at least a
half: a label it lacks and the evidence gives is probably missing, one it has and the evidence denies, extra.

    python -m core.data suspects PATH [--json] [--top N]     # the same command as one label per image
Measured by bench/label_noise_multi (precision among the top N suspects, recall of those flagged).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.data.images import LabeledImages
from core.fix.suspects import out_of_sample_probs

PRESENT = 0.5  # a label is in the suggested set when its out-of-sample probability reaches this


@dataclass(frozen=True)
class LabelSetSuspect:
    index: int  # position in the dataset
    labels: tuple[str, ...]  # the label set it has, sorted
    suggested: tuple[str, ...]  # the labels the evidence gives it, sorted
    missing: tuple[str, ...]  # suggested but absent
    extra: tuple[str, ...]  # present but not suggested
    score: float  # how sure the evidence is that the set is wrong: 1 - cleanlab's label quality score


@dataclass(frozen=True)
class LabelSetReview:
    suspects: list[LabelSetSuspect]  # the images cleanlab flags, whose suggested set differs, most suspicious first
    ranking: np.ndarray  # every image's position, most suspicious first
    probs: np.ndarray  # (N, C) out-of-sample probability of each label
    scores: np.ndarray  # (N,) 1 - label quality, in dataset order: how much of the evidence is against each set
    layers: tuple[str, ...]  # the body's layers whose features were used
    features: torch.Tensor  # (N, F) L2-normalized features of the body's output, for near-duplicates


def label_set_suspect(index: int, given: np.ndarray, probs: np.ndarray, class_names: tuple[str, ...],
                      score: float) -> LabelSetSuspect:
    """What the evidence says of one image: `given` (C,) bool its labels, `probs` (C,) their probabilities."""
    suggested = probs >= PRESENT
    names = np.asarray(class_names, dtype=object)
    return LabelSetSuspect(index, tuple(names[given]), tuple(names[suggested]), tuple(names[suggested & ~given]),
                           tuple(names[given & ~suggested]), score)


def review_label_sets(data: LabeledImages, *, arch: str = "efficientnet_lite0", size: int | None = None,
                      device: torch.device = torch.device("cpu")) -> LabelSetReview:
    """Rank every image of a multi-label `data` by how strongly the evidence contradicts its label set."""
    from cleanlab.multilabel_classification.filter import find_label_issues
    from cleanlab.multilabel_classification.rank import get_label_quality_scores

    probs, best, by_layer = out_of_sample_probs(data, arch=arch, size=size, device=device)
    given = data.labels.numpy()
    as_lists = [np.flatnonzero(row).tolist() for row in given]  # cleanlab's form: the labels' indices per image
    clipped = np.clip(probs, 1e-6, 1 - 1e-6)
    scores = 1 - get_label_quality_scores(as_lists, clipped)
    ranking = np.argsort(-scores, kind="stable")
    # n_jobs=1: cleanlab forks a process pool otherwise, which deadlocks inside a threaded server (Streamlit).
    flagged = find_label_issues(as_lists, clipped, filter_by="prune_by_noise_rate", n_jobs=1)
    suspects = [label_set_suspect(int(i), given[i], probs[i], data.class_names, float(scores[i]))
                for i in ranking if flagged[i]]
    return LabelSetReview([s for s in suspects if s.missing or s.extra], ranking, probs, scores, best,
                          by_layer["output"])
