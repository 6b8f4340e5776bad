"""The Map for label sets (several labels per image): outliers whose reason names the labels their nearest images
carry against their own, and the Map page on real mosaics of digits (tests.mosaics, the shared multilabel_run and its
data folder): coloured by a chosen label, by labels per image, by the run's prediction and right or wrong at its own
thresholds, hover text with the label sets, and a selection reviewed as label sets, recorded as an undoable edit."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from core.data.load import edit_log_for, load_source
from core.fix.outliers import find_outliers
from core.inspect.embedding import _stratified_sample
from core.inspect.labelsets import load_label_sets
from core.runs.folder import RunFolder
from tests.conftest import ROOT


def test_an_outliers_reason_names_the_labels_its_nearest_images_carry_against_its_own():
    features = torch.nn.functional.normalize(torch.tensor(
        [[1.0, 0.0, 0.0], [1.0, 0.1, 0.0], [1.0, 0.0, 0.1], [1.0, 0.1, 0.1], [0.0, 0.0, 1.0]]), dim=1)
    labels = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 1]], dtype=torch.bool)
    review = find_outliers(features, labels, k=3)
    odd = review.outliers[0]
    assert odd.index == 4 and odd.neighbours_set == (0, 1)  # a on all three nearest, b on at least two, c on one
    assert review.reason(odd, labels, ("a", "b", "c")).endswith("; most of its nearest images carry a; b, where it "
                                                                "carries c")
    first = next(o for o in review.outliers if o.index == 0)  # carries what most of its neighbours carry
    assert first.neighbours_set == (0, 1) and "carr" not in review.reason(first, labels.numpy(), ("a", "b", "c"))
    blank = torch.zeros_like(labels)
    assert review.reason(odd, blank, ("a", "b", "c")).endswith("where it carries no label")
    # past the layout's limit, every label set is a stratum of the sample, the rarest at least once
    sets = torch.tensor([[1, 0]] * 90 + [[0, 1]] * 9 + [[1, 1]], dtype=torch.bool)
    sample = _stratified_sample(sets, 20, seed=0)
    assert [int((sample < 90).sum()), int(((sample >= 90) & (sample < 99)).sum()), int((sample == 99).sum())] == \
        [18, 2, 1]


def test_hover_text_names_the_file_and_its_label_sets_as_text():
    from pages._map_labels import set_hover

    labels, predicted = np.array([[True, True, False], [False, False, False]]), np.array([[True, False, True]] * 2)
    names, class_names = ["<b>x.png", "y.png"], ["<i>a", "b", "c&d"]
    assert set_hover(names, labels, class_names, None) == ["&lt;b&gt;x.png · labels &lt;i&gt;a; b",
                                                           "y.png · labels no label"]
    assert set_hover(names, labels, class_names, predicted)[1] == \
        "y.png · labels no label · predicted &lt;i&gt;a; c&amp;d"


def test_a_runs_label_sets_come_from_its_list_of_images_and_a_label_it_does_not_know_is_a_sentence():
    from core.errors import DataError
    from pages._map_labels import trained_label_sets

    items = {"a.png": "one; two", "b.png": "", "c.png": "two"}
    assert trained_label_sets(items, ["c.png", "a.png", "b.png"], ["one", "two"]).tolist() == \
        [[False, True], [True, True], [False, False]]
    with pytest.raises(DataError, match="gives a.png the label two, which is not one of the run's labels"):
        trained_label_sets(items, ["a.png"], ["one", "three"])


def chart(app: AppTest) -> dict:
    return json.loads(app.get("plotly_chart")[0].proto.spec)


def traces(app: AppTest) -> dict[str, int]:
    """{trace name: points} of the map."""
    return {trace.get("name", ""): len(trace["text"]) for trace in chart(app)["data"]}


def open_map(run: Path, monkeypatch, tmp_path) -> AppTest:
    """The Map page over the run's data folder (its sibling `mosaics`), edit logs in a folder of this test's."""
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(run.parent))
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    app.session_state["data"] = RunFolder(run).config().data
    app.query_params["run"] = run.name
    app.run()
    app.switch_page("pages/map.py").run()
    next(t for t in app.toggle if t.label == "Draw the map").set_value(True).run()
    assert not app.exception and not app.error, [e.value for e in [*app.exception, *app.error]]
    return app


@pytest.mark.slow
def test_the_map_of_label_sets_colours_by_a_chosen_label_lists_outliers_and_records_a_review(
        multilabel_run, monkeypatch, tmp_path):
    source = RunFolder(multilabel_run).config().data
    data = load_source(source, 32)
    sets = {name: data.label_of(i) for i, name in enumerate(data.item_names)}
    app = open_map(multilabel_run, monkeypatch, tmp_path)
    colour_by = next(r for r in app.radio if r.label == "Colour by")
    assert colour_by.options == ["label", "labels per image", "split", "outlier score",
                                 "suspect score (label errors)"]
    label = next(s for s in app.selectbox if s.label == "Label")
    label.set_value("two").run()
    carrying = int(data.class_counts()["two"])
    assert traces(app) == {"two": carrying, "no two": len(data) - carrying}
    hover = [text for trace in chart(app)["data"] for text in trace["text"]]
    assert f"images/m000.png · labels {sets['images/m000.png']}" in hover and len(hover) == len(data)
    reasons = [t.value for t in app.text if t.value.startswith("images/m") and "its nearest image is" in t.value]
    assert len(reasons) == 12
    against = [r for r in reasons if ", where it carries " in r]
    assert against and all(r.split(", where it carries ")[1] == sets[r.split(":")[0]] for r in against)
    next(r for r in app.radio if r.label == "Colour by").set_value("labels per image").run()
    per_image = traces(app)
    assert per_image["0 labels"] == 3 and sum(per_image.values()) == len(data)  # the three blank images

    # a selection opens the review of label sets; a decision is recorded as an edit that undo takes back
    app.session_state["map_chart"] = {"selection": {"points": [{"customdata": 0}, {"customdata": 5}],
                                                    "point_indices": [0, 5], "box": [], "lasso": []}}
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    decisions = [s for s in app.selectbox if s.label == "Decision" and s.form_id == "review:map"]
    assert len(decisions) == 2
    first = data.item_names[0]
    decisions[0].set_value("set the labels chosen below")
    next(m for m in app.multiselect if m.key == f"map:{first}:labels").set_value(["four", "zero"])
    next(b for b in app.button if b.label == "Record these decisions" and b.form_id == "review:map").click().run()
    assert not app.exception and any("Recorded 1 decision(s)" in s.value for s in app.success)
    log = edit_log_for(source)
    [batch] = log.batches()
    assert batch["view"] == "map" and batch["edits"] == [{"file": first, "label": "four;zero",
                                                          "was": sets[first].replace("; ", ";")}]
    log.undo()
    assert edit_log_for(source).batches() == []


@pytest.mark.slow
def test_a_run_of_label_sets_colours_its_prediction_and_right_or_wrong_at_its_own_thresholds(
        multilabel_run, monkeypatch, tmp_path):
    app = open_map(multilabel_run, monkeypatch, tmp_path)
    next(s for s in app.selectbox if s.label == "Features from").set_value(multilabel_run.name).run()
    assert not app.exception, [e.value for e in app.exception]
    colour_by = next(r for r in app.radio if r.label == "Colour by")
    assert colour_by.options == ["label", "labels per image", "split", "outlier score", "prediction",
                                 "right or wrong", "whole set right or wrong"]
    predictions, class_names = load_label_sets(multilabel_run), RunFolder(multilabel_run).class_names()
    j = class_names.index("three")
    colour_by.set_value("prediction").run()
    next(s for s in app.selectbox if s.label == "Label").set_value("three").run()
    found = traces(app)
    assert set(found) <= {"three: found", "three: not found"} and sum(found.values()) == len(
        RunFolder(multilabel_run).data_items())
    # the validation images' predictions agree with predictions.npz at the run's thresholds
    hover = {text.split(" · ")[0]: text for trace in chart(app)["data"] for text in trace["text"]}
    names = list(RunFolder(multilabel_run).data_items())
    for row, item in enumerate(predictions.item_ids[:20]):
        given = "; ".join(class_names[c] for c in np.flatnonzero(predictions.predicted[row])) or "no label"
        assert hover[names[item]].endswith(f" · predicted {given}")
    next(r for r in app.radio if r.label == "Colour by").set_value("right or wrong").run()
    assert not app.exception and set(traces(app)) <= {"right", "missed", "falsely added"}
    missed = int(predictions.missed[:, j].sum())
    assert traces(app).get("missed", 0) >= missed  # the validation images' misses, and the training images' if any
