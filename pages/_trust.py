"""The Interpret page's trust section: calibration before and after, "none of these", and test-time augmentation;
for a run of label sets, "none of these" and test-time augmentation (its sigmoids are not calibrated)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from core.data.labelscores import scores
from core.errors import BrokenRun
from core.inspect.interpret import Predictions
from core.inspect.labelsets import LabelSetPredictions
from core.inspect.trust import Trust, flagged_share, reliability, trust_figures, tta_probs, unknown_caveat
from core.runs.folder import RunFolder
from pages._common import model_key
from pages._figures import reliability_figure
from pages._text import md


@st.cache_resource(show_spinner="Loading the calibrated model…", max_entries=2)
def _trusted(run_dir: str, stamp: str):  # stamp: in the key, so a retrained run reloads
    from core.inspect.trust import load_trusted_model

    return load_trusted_model(Path(run_dir))[0]


@st.cache_data(show_spinner="Predicting every validation image five times…", max_entries=8)
def _tta_accuracy(run_dir: str, stamp: str, _images, targets: np.ndarray) -> float:
    from core.data.augment import Augment

    trusted = _trusted(run_dir, stamp)
    config = RunFolder(Path(run_dir)).config()
    return float((tta_probs(trusted, _images, Augment.from_config(config)).argmax(1) == targets).mean())


@st.cache_data(show_spinner="Predicting every validation image five times…", max_entries=8)
def _tta_f1(run_dir: str, stamp: str, _images, targets: np.ndarray, thresholds: np.ndarray) -> float:
    """A run of label sets' F1 per image with test-time augmentation, at its thresholds."""
    from core.data.augment import Augment

    trusted = _trusted(run_dir, stamp)
    config = RunFolder(Path(run_dir)).config()
    return scores(tta_probs(trusted, _images, Augment.from_config(config)), targets, thresholds)["f1_samples"]


def _tta_button(run_dir: Path, measure, figure: str, now: float, share: bool) -> None:
    """What test-time augmentation is, and a button that measures `figure` with it (`measure(run_dir, stamp)`)
    against `now` without: a share (shown in %, its change in points) or a score from 0 to 1 (F1)."""
    st.markdown("**Test-time augmentation** (fastai's `tta`) predicts each image and four augmented copies and "
                "mixes them; it is an option on the Predict page and in `python -m core.ship.predict --tta`.")
    if st.button("Measure what it gains on the validation set", icon=":material/speed:"):
        stamp = model_key(run_dir) + f"@{RunFolder(run_dir).trust_path.stat().st_mtime}"
        with_tta = measure(str(run_dir), stamp)
        shown = (lambda v: f"{v:.1%}") if share else (lambda v: f"{v:.3f}")
        change = f"{(with_tta - now) * 100:+.1f} points" if share else f"{with_tta - now:+.3f}"
        st.metric(f"{figure} with TTA", shown(with_tta), f"{change} against {shown(now)} without")


def _none_of_these(trust: Trust, flagged: float, n_valid: int, n_classes: int, called: str) -> None:
    """How "none of these" is decided (`called`: what such an image is called, and where), and the share of
    validation images it flags."""
    st.markdown(f"**None of these.** An image further from every training image than this run's threshold "
                f"({trust.threshold:.3f}, the distance to its {trust.k}th-nearest training image) {called}; "
                f"{flagged:.1%} of the validation images are (by design, few). Photos of other things are "
                "flagged nearly always (bench/ood).")
    caveat = unknown_caveat(n_valid, n_classes)
    if caveat:
        st.warning(caveat, icon=":material/help:")


def label_sets_trust_section(run_dir: Path, predictions: LabelSetPredictions, images, n_labels: int) -> None:
    """A run of label sets: why calibration is not measured, how "none of these" is decided, and what test-time
    augmentation gains in F1 per image at the run's thresholds."""
    st.subheader("Can you trust its probabilities?")
    st.caption("Calibration (temperature scaling, and its error before and after) is measured on one softmax answer "
               "per image; a run of label sets gives each label its own sigmoid probability and a threshold chosen "
               "on the validation images instead, so there is no calibration to show here.")
    folder = RunFolder(run_dir)
    if not folder.trust_path.exists():
        return
    try:
        trust = Trust.load(folder.trust_path)
    except BrokenRun as error:
        st.error(md(error))
        return
    flagged = flagged_share(trust, predictions.unknown_scores)
    if flagged is not None:
        _none_of_these(trust, flagged, len(predictions.targets), n_labels, "is unlike every image the run learnt "
                       "from, whatever labels it is given")
    now = scores(predictions.probs, predictions.targets, predictions.thresholds)["f1_samples"]
    _tta_button(run_dir, lambda run, stamp: _tta_f1(run, stamp, images[predictions.item_ids], predictions.targets,
                                                    predictions.thresholds),
                "F1 per image", now, share=False)


def trust_section(run_dir: Path, predictions: Predictions, images, n_classes: int) -> None:
    """How far its probabilities can be taken at their word, and how "none of these" is decided."""
    st.subheader("Can you trust its probabilities?")
    folder = RunFolder(run_dir)
    try:
        figures = trust_figures(folder.trust_path, predictions.raw_probs, predictions.probs, predictions.targets,
                                predictions.unknown_scores)
    except BrokenRun as error:
        st.error(md(error))
        return
    if figures is None:
        st.caption("This run finished before runs were calibrated; train it again to see its calibration, and to "
                   "let it say \"none of these\".")
        return
    trust, before, after = figures.trust, figures.ece_before, figures.ece_after
    left, middle, right = st.columns(3)
    left.metric("Calibration error before", f"{before:.1%}", help="Expected calibration error (ECE, 15 bins): how far, "
                "on average, the probability the model gives its answer is from how often such answers are right.")
    middle.metric("after calibration", f"{after:.1%}", f"{(after - before) * 100:+.1f} points", delta_color="inverse")
    right.metric("Temperature", f"{trust.temperature:.2f}", help="Every probability is softmax(logits / T), with T "
                 "fitted on the validation set (temperature scaling). Above 1 the raw model was overconfident; it "
                 "never changes which class wins.")
    st.plotly_chart(reliability_figure({"before": reliability(predictions.raw_probs, predictions.targets),
                                        "after calibration": reliability(predictions.probs, predictions.targets)}),
                    key="reliability")
    st.caption("Each point is the images the model answered with about that confidence: on the dotted diagonal, "
               "an answer given with 80% is right 80% of the time. Every probability the app shows is the calibrated "
               "one.")
    if figures.flagged is not None:
        _none_of_these(trust, figures.flagged, len(predictions.targets), n_classes, f"is called \"not one of the "
                       f"{n_classes} classes\" on the Predict page, in the demo and by the exports")
    _tta_button(run_dir, lambda run, stamp: _tta_accuracy(run, stamp, images[predictions.item_ids],
                                                          predictions.targets),
                "Validation accuracy", predictions.accuracy, share=True)
