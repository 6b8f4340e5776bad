"""Interpreting a run of label sets (issue 27): each label's precision, recall and F1 at the run's own thresholds,
its missed and falsely added images, which label is missed while which is added, the top losses with what they
missed and added, and the Interpret page that shows them with Grad-CAM of a chosen label. The engine is checked by
hand on small arrays and against scikit-learn on a real run (tests.mosaics, the shared multilabel_run)."""
import json

import numpy as np
import pytest
from sklearn.metrics import precision_recall_fscore_support
from streamlit.testing.v1 import AppTest

from core.data.labelscores import scores
from core.errors import BrokenRun
from core.inspect.interpret import load_predictions
from core.inspect.labelsets import (
    LabelSetPredictions,
    added_positions,
    image_mistakes,
    missed_positions,
    missed_while_added,
    most_confused_labels,
    pair_positions,
    per_label_metrics,
    top_losses,
)
from core.runs.folder import RunFolder
from core.runs.labelsets import thresholds
from pages._text import md, plot
from tests.conftest import ROOT, linked_copy
from tests.test_injection import markdown_sources, plotly_strings
from tests.test_interpret_view import open_interpret

NAMES = ["cat", "dog", "sky"]


def small() -> LabelSetPredictions:
    """Four images, three labels, thresholds 0.5, 0.5 and 0.3; each row's predicted set written beside it."""
    targets = np.array([[1, 0, 1], [1, 1, 0], [0, 1, 0], [0, 0, 1]], dtype=bool)
    probs = np.array([[0.9, 0.6, 0.2],  # cat dog: sky missed, dog added
                      [0.4, 0.7, 0.1],  # dog: cat missed
                      [0.2, 0.8, 0.35],  # dog sky: sky added
                      [0.6, 0.1, 0.05]])  # cat: sky missed, cat added
    return LabelSetPredictions(targets, probs, np.array([0.5, 0.2, 0.1, 0.9]), np.arange(4),
                               np.array([0.5, 0.5, 0.3]), True)


def test_missed_and_added_labels_and_their_counts_by_hand():
    predictions = small()
    assert predictions.missed.tolist() == [[0, 0, 1], [1, 0, 0], [0, 0, 0], [0, 0, 1]]
    assert predictions.added.tolist() == [[0, 1, 0], [0, 0, 0], [0, 0, 1], [1, 0, 0]]
    rows = {m.label: m for m in per_label_metrics(predictions, NAMES)}
    # cat: given to images 0 and 3, carried by 0 and 1: precision 1/2, recall 1/2
    assert (rows["cat"].precision, rows["cat"].recall, rows["cat"].f1, rows["cat"].support) == (0.5, 0.5, 0.5, 2)
    assert (rows["dog"].precision, rows["dog"].recall, rows["dog"].support) == (2 / 3, 1.0, 2)
    assert (rows["sky"].precision, rows["sky"].recall, rows["sky"].f1) == (0.0, 0.0, 0.0)
    assert [(m.missed, m.added, m.threshold) for m in (rows[n] for n in NAMES)] == [(1, 1, 0.5), (0, 1, 0.5),
                                                                                    (2, 1, 0.3)]
    assert [m.label for m in per_label_metrics(predictions, NAMES)] == ["sky", "cat", "dog"]  # worst F1 first
    assert missed_positions(predictions, 2).tolist() == [3, 0]  # sky at 0.05, then at 0.2: surest first
    assert added_positions(predictions, 0).tolist() == [3] and added_positions(predictions, 1).tolist() == [0]
    assert predictions.label_texts(NAMES) == ["cat; sky", "cat; dog", "dog", "sky"]


def test_missed_while_added_counts_images_and_lists_the_most_frequent_pairs_first():
    predictions = small()
    matrix = missed_while_added(predictions)
    # image 0 missed sky while adding dog; image 3 missed sky while adding cat; images 1 and 2 only one of the two
    assert matrix.tolist() == [[0, 0, 0], [0, 0, 0], [1, 1, 0]]
    assert most_confused_labels(matrix, NAMES) == [("sky", "cat", 1), ("sky", "dog", 1)]
    assert most_confused_labels(matrix, NAMES, min_val=2) == []
    assert pair_positions(predictions, 2, 0).tolist() == [3] and pair_positions(predictions, 0, 2).tolist() == []
    worst = top_losses(predictions, NAMES, k=2)
    assert [(w.position, w.labels, w.missed, w.added) for w in worst] == [(3, "sky", ("sky",), ("cat",)),
                                                                         (0, "cat; sky", ("sky",), ("dog",))]
    assert image_mistakes(predictions, NAMES, np.array([1]))[0].missed == ("cat",)


def test_a_real_run_loads_at_its_own_thresholds_and_agrees_with_scikit_learn(multilabel_run):
    predictions = load_predictions(multilabel_run)
    class_names = RunFolder(multilabel_run).class_names()
    assert isinstance(predictions, LabelSetPredictions) and predictions.thresholds_saved
    assert predictions.thresholds.tolist() == thresholds(RunFolder(multilabel_run))
    predicted = predictions.probs >= predictions.thresholds
    precision, recall, f1, support = precision_recall_fscore_support(predictions.targets, predicted, average=None,
                                                                     zero_division=0)
    rows = {m.label: m for m in per_label_metrics(predictions, class_names)}
    for j, name in enumerate(class_names):
        assert (rows[name].precision, rows[name].recall, rows[name].f1, rows[name].support) == pytest.approx(
            (precision[j], recall[j], f1[j], support[j]))
        truth, given = predictions.targets[:, j], predicted[:, j]
        assert set(missed_positions(predictions, j)) == set(np.flatnonzero(truth & ~given))
        assert set(added_positions(predictions, j)) == set(np.flatnonzero(given & ~truth))
    f1s = [m.f1 for m in per_label_metrics(predictions, class_names)]
    assert f1s == sorted(f1s)
    # the macro F1 the page shows is the mean of the table's F1s (core.data.labelscores, as the epoch rows)
    assert scores(predictions.probs, predictions.targets, predictions.thresholds)["f1_macro"] == pytest.approx(
        np.mean(f1s))
    matrix = missed_while_added(predictions)
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            both = (predictions.targets[:, i] & ~predicted[:, i]) & (predicted[:, j] & ~predictions.targets[:, j])
            assert matrix[i, j] == both.sum()
    losses = [w.loss for w in top_losses(predictions, class_names, 12)]
    assert losses == sorted(predictions.losses.tolist(), reverse=True)[:12]


def replaced(run, name: str, write) -> None:
    """Replace a file of a hard-linked copy (never write into it: the shared run would change too)."""
    (run / name).unlink(missing_ok=True)
    write(run / name)


def test_without_thresholds_every_label_is_predicted_at_one_half(multilabel_run, tmp_path):
    run = linked_copy(multilabel_run, tmp_path / "ml")
    (run / "thresholds.json").unlink()
    predictions = load_predictions(run)
    assert not predictions.thresholds_saved and predictions.thresholds.tolist() == [0.5] * 5
    replaced(run, "thresholds.json", lambda path: path.write_text(json.dumps({"thresholds": [0.2, 0.3]})))
    assert load_predictions(run).thresholds.tolist() == [0.5] * 5  # two thresholds for five labels: not used


def test_damaged_predictions_of_label_sets_are_a_sentence(multilabel_run, tmp_path):
    run = linked_copy(multilabel_run, tmp_path / "ml")
    with np.load(run / "predictions.npz") as npz:
        arrays = dict(npz)
    damages = [{"targets": arrays["targets"].astype(np.int64)}, {"probs": arrays["probs"][:, :3]},
               {"probs": arrays["probs"] * 2}, {"losses": arrays["losses"][:-1]}, {"item_ids": -arrays["item_ids"] - 1}]
    for damage in damages:
        damaged = {**arrays, **damage}
        replaced(run, "predictions.npz", lambda path, damaged=damaged: np.savez(path, **damaged))
        with pytest.raises(BrokenRun, match="does not fit its 5 labels"):
            load_predictions(run)
    replaced(run, "predictions.npz", lambda path: path.write_bytes(b"PK\x03\x04 cut off"))
    with pytest.raises(BrokenRun, match="predictions.npz is damaged"):
        load_predictions(run)


def chart(app: AppTest, key: str) -> dict:
    return next(json.loads(c.proto.spec) for c in app.get("plotly_chart") if c.proto.id.endswith(key) or
                key in c.proto.id)


def heat_count(figure: dict) -> int:
    return sum(trace["type"] == "heatmap" for trace in figure["data"])


def test_the_page_shows_scores_per_label_table_each_labels_mistakes_and_grad_cam_of_a_chosen_label(
        multilabel_run, tmp_path, monkeypatch):
    run = linked_copy(multilabel_run, tmp_path / "runs" / "ml")
    predictions, class_names = load_predictions(run), RunFolder(run).class_names()
    metrics = per_label_metrics(predictions, class_names)
    app = open_interpret(run.parent, monkeypatch, "ml")
    assert {m.label for m in app.metric} == {"Accuracy (each yes or no)", "F1 per image", "F1 per label",
                                             "Mean average precision"}
    assert any("this run's own threshold for it" in c.value for c in app.caption)
    table = app.dataframe[0].value
    assert table["label"].tolist() == [m.label for m in metrics]  # worst F1 first
    assert table["missed"].tolist() == [m.missed for m in metrics] and table["support"].tolist() == \
        [m.support for m in metrics]
    picker = next(s for s in app.selectbox if s.label == "Label")
    assert picker.options == [m.label for m in metrics] and picker.value == metrics[0].label
    best = metrics[-1].label
    picker.set_value(best).run()
    assert not app.exception, [e.value for e in app.exception]
    j = class_names.index(best)
    missed, added = missed_positions(predictions, j), added_positions(predictions, j)
    assert any(c.value == f"{best}, missed: {len(missed)} validation images" for c in app.caption)
    assert any(c.value == f"{best}, falsely added: {len(added)} validation images" for c in app.caption)
    shown = [chart(app, key) for key in ("label_missed", "label_falsely added") if
             len(missed if key == "label_missed" else added)]
    assert [heat_count(f) for f in shown] == [min(12, len(p)) for p in (missed, added) if len(p)]  # Grad-CAM on each
    next(t for t in app.toggle if t.label == "Grad-CAM of this label").set_value(False).run()
    assert all(heat_count(chart(app, key)) == 0 for key in ("label_missed", "label_falsely added") if
               len(missed if key == "label_missed" else added))

    # top losses: titled with the true set, then what was missed (−) and added (+); Grad-CAM of the chosen label
    cam = next(s for s in app.selectbox if s.label == "of the label")
    assert cam.value == metrics[0].label  # the worst label's heat by default
    cam.set_value(best).run()
    losses = chart(app, "labels_top_losses")
    assert heat_count(losses) == 12
    worst = top_losses(predictions, class_names, 12)
    titles = [a["text"] for a in losses["layout"]["annotations"]]
    assert titles[0] == plot(worst[0].labels) + "<br>" + plot(
        " ".join(["\u2212" + m for m in worst[0].missed] + ["+" + a for a in worst[0].added]) or "all right") + \
        plot(f" · loss {worst[0].loss:.2f}")
    next(t for t in app.toggle if t.label == "Grad-CAM heat map").set_value(False).run()
    assert heat_count(chart(app, "labels_top_losses")) == 0

    # which label is missed while which is added; the trust section says why it shows no calibration
    pairs = most_confused_labels(missed_while_added(predictions), class_names)
    assert app.dataframe[1].value.to_dict("records")[0] == {"missed": pairs[0][0], "added": pairs[0][1],
                                                           "images": pairs[0][2]}
    assert any("there is no calibration to show here" in c.value for c in app.caption)
    assert any(m.value.startswith("**None of these.**") for m in app.markdown)
    assert not [m for m in app.metric if "Calibration" in m.label]
    assert app.get("download_button")  # the HTML report (test_the_report_of_a_run_of_label_sets_...)

    # test-time augmentation, measured as F1 per image at the run's thresholds
    from core.data.augment import Augment
    from core.inspect.trust import load_trusted_model, tta_probs
    from pages._common import run_images

    next(b for b in app.button if b.label == "Measure what it gains on the validation set").click().run()
    assert not app.exception, [e.value for e in app.exception]
    trusted, _, config = load_trusted_model(run)
    probs = tta_probs(trusted, run_images(run)[predictions.item_ids], Augment.from_config(config))
    expected = scores(probs, predictions.targets, predictions.thresholds)["f1_samples"]
    assert next(m for m in app.metric if m.label == "F1 per image with TTA").value == f"{expected:.3f}"


HOSTILE = ["![x](http://example.invalid/x.png)", "a`b", '<a href="http://example.invalid">c</a>', "**d**",
           ":red[e]"]


def test_label_names_from_the_run_folder_are_shown_as_text(multilabel_run, tmp_path, monkeypatch):
    run = linked_copy(multilabel_run, tmp_path / "runs" / "ml")
    record = json.loads((run / "data.json").read_text())
    replaced(run, "data.json", lambda path: path.write_text(json.dumps({**record, "class_names": HOSTILE})))
    app = open_interpret(run.parent, monkeypatch, "ml")
    sources = markdown_sources(app)
    for name in HOSTILE:
        assert not [s for s in sources if name in s], name
    assert any(md(HOSTILE[0]) in s for s in sources)  # the thresholds' sentence, escaped
    assert not [s for s in plotly_strings(app) if "<a " in s]
    assert set(app.dataframe[0].value["label"]) == set(HOSTILE)  # the table shows them as they are


def test_a_damaged_predictions_file_is_a_sentence_on_the_page(multilabel_run, tmp_path, monkeypatch):
    run = linked_copy(multilabel_run, tmp_path / "runs" / "ml")
    replaced(run, "predictions.npz", lambda path: path.write_bytes(b"not an npz"))
    app = open_interpret(run.parent, monkeypatch, "ml")
    assert any("predictions.npz is damaged" in e.value for e in app.error)


def test_layers_captions_a_run_of_label_sets_with_its_sets_and_ranks_each_labels_sigmoid(multilabel_run, monkeypatch):
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(multilabel_run.parent))
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    app.query_params["run"] = "ml"
    app.run()
    app.switch_page("pages/layers.py").run()
    next(r for r in app.radio if r.label == "View").set_value("Attributions").run()
    assert not app.exception and not app.error, [e.value for e in app.exception]
    predictions = load_predictions(multilabel_run)
    image_title = json.loads(app.get("plotly_chart")[0].proto.spec)["layout"]["annotations"][0]["text"]
    assert image_title == plot(predictions.label_texts(RunFolder(multilabel_run).class_names())[0])
    ranked = [float(p.rstrip("%")) / 100 for p in app.dataframe[0].value["probability"]]
    assert len(ranked) == 5 and sum(ranked) > 1.05  # five sigmoids, not a softmax that sums to one


def test_the_report_of_a_run_of_label_sets_holds_its_scores_labels_pairs_and_top_losses_as_text(
        multilabel_run, tmp_path):
    """The HTML report of a run of label sets: the epoch table with its label-set scores, the scores at the run's
    thresholds, each label's metrics, the missed-while-added pairs, "none of these" and the top losses titled with
    what they missed and added and a heat map each; label names from the run folder are escaped."""
    import html
    import re

    import torch

    from core.runs.checkpoint import load_model
    from pages._report_labels import label_sets_report_html

    run = linked_copy(multilabel_run, tmp_path / "runs" / "ml")
    record = json.loads((run / "data.json").read_text())
    names = [*HOSTILE, *record["class_names"]][:len(record["class_names"])]
    replaced(run, "data.json", lambda path: path.write_text(json.dumps({**record, "class_names": names})))
    model, _, config = load_model(run)
    class_names = RunFolder(run).class_names()  # as the page reads them
    assert class_names == names
    predictions = load_predictions(run)
    images = torch.randint(0, 256, (int(predictions.item_ids.max()) + 1, 3, config.size, config.size),
                           dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    report = label_sets_report_html(run, model, images, predictions, class_names, n_top_losses=4)
    found = scores(predictions.probs, predictions.targets, predictions.thresholds)
    assert f"F1 per image <b>{found['f1_samples']:.3f}</b> on {len(predictions.targets)} validation" in report
    assert f"<td>{found['accuracy_multi']:.1%}</td>" in report and f"<td>{found['map']:.3f}</td>" in report
    for title in ("accuracy_multi", "f1_samples", "f1_macro", "map"):
        assert f"<th>{title}</th>" in report
    rows = RunFolder(run).read_metrics().epochs
    assert f"<td>{rows[-1]['f1_samples']:.4f}</td>" in report
    for m in per_label_metrics(predictions, class_names):  # each label's row, in the order of worst F1 first
        assert (f"<td>{html.escape(m.label)}</td><td>{m.threshold:.2f}</td><td>{m.precision:.3f}</td>"
                f"<td>{m.recall:.3f}</td><td>{m.f1:.3f}</td>") in report
    assert "own threshold for it" in report and "of the validation images are past it" in report
    pairs = most_confused_labels(missed_while_added(predictions), class_names)
    if pairs:
        a, b, n = pairs[0]
        assert f"<td>{html.escape(a)}</td><td>{html.escape(b)}</td><td>{n}</td>" in report
    decoded = re.sub(r"\\u([0-9a-f]{4})", lambda m: chr(int(m[1], 16)), report).replace('\\"', '"')
    worst = top_losses(predictions, class_names, 4)
    assert plot(worst[0].labels[:20]) in decoded  # titled with the true set (cut to fit), escaped
    assert decoded.count('"zsmooth":"best"') == 4  # a heat map over each top loss
    assert '<a href="http://example.invalid' not in decoded and "<b>d</b>" not in decoded  # names stay text
