"""The dataset as a whole (core.inspect.embedding, core.fix.outliers) and what to collect next (core.fix.plan), on
the real digits; the Map page and the Data page's plan through AppTest."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from core.fix.outliers import find_outliers, nearest
from core.fix.plan import collect_plan, plan_folds
from core.fix.suspects import pretrained_features
from core.inspect.embedding import data_map
from tests.conftest import write_image_folder
from tests.test_pages import by_label, open_page


@pytest.fixture(scope="module")
def with_odd_images():
    """(features (603, F) from the pretrained network, labels (603,)): the first 600 digits at 32 px, then three
    images that are no digit: a red square, a colour gradient, noise (labelled 0)."""
    from core.data.builtin import load_builtin
    from core.data.images import LabeledImages

    data = load_builtin("digits", 32)
    odd = torch.zeros(3, 3, 32, 32, dtype=torch.uint8)
    odd[0, 0] = 255
    odd[1] = torch.linspace(0, 255, 32).to(torch.uint8)[None, None, :].expand(3, 32, 32)
    odd[1, 2] = 90
    odd[2] = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 32, 32), dtype=np.uint8))
    labels = torch.cat([data.labels[:600], torch.zeros(3, dtype=torch.long)])
    every = LabeledImages(torch.cat([data.images[:600], odd]), labels, data.class_names,
                          (*data.item_names[:600], "red", "gradient", "noise"))
    return pretrained_features(every), labels


@pytest.fixture(scope="module")
def digits_features(with_odd_images):
    features, labels = with_odd_images
    return features[:600], labels[:600]


def test_nearest_gives_each_row_its_most_similar_other_rows_never_itself():
    features = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.6, 0.8]]), dim=1)
    similarity, index = nearest(features, 2, chunk=3)  # two chunks
    assert index.tolist() == [[1, 3], [0, 3], [3, 1], [2, 1]]
    assert similarity[:, 0].tolist() == pytest.approx([0.9939, 0.9939, 0.8, 0.8], abs=1e-4)


def test_images_unlike_any_other_come_first_with_their_reason(with_odd_images):
    features, labels = with_odd_images
    review = find_outliers(features, labels)
    assert {o.index for o in review.outliers[:3]} == {600, 601, 602}
    assert 3 <= review.flagged <= 12  # they stand out, and few digits do
    reason = review.reason(review.outliers[0], labels, tuple(map(str, range(10))))
    assert reason.startswith("its nearest image is") and "typical image's" in reason


def test_the_map_is_the_same_for_the_same_features_and_keeps_the_digits_apart(digits_features):
    from sklearn.metrics import silhouette_score

    features, labels = digits_features
    first, again = data_map(features, labels), data_map(features, labels)
    assert first.shape == (600, 2) and np.array_equal(first, again)
    assert silhouette_score(first, labels.numpy()) > 0.3  # the digits' classes lie apart on the map
    # past the limit, a sample is laid out and the others placed beside their nearest: every class still apart
    sampled = data_map(features, labels, limit=200)
    assert np.isfinite(sampled).all() and silhouette_score(sampled, labels.numpy()) > 0.2


def test_the_plan_names_a_starved_class_first_and_projects_a_gain(digits_features):
    features, labels = digits_features
    rng = np.random.default_rng(1)
    valid = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels.numpy() == c), 15, replace=False)
                                    for c in range(10)]))
    train = np.setdiff1d(np.arange(600), valid)
    eights = train[labels[train].numpy() == 8]
    train = np.setdiff1d(train, eights[6:])  # 6 training images of 8s: the others have ~45
    plan = collect_plan(features, labels, tuple(map(str, range(10))), [(train, valid)], add=40)
    row = {c.name: c for c in plan.classes}
    assert plan.collect_next[0] == "8" and row["8"].train_images == 6
    assert row["8"].projected_recall > row["8"].recall and row["8"].gain == max(c.gain for c in plan.classes)
    assert all(0 <= c.recall <= c.projected_recall <= 1 for c in plan.classes)
    assert [n for n, _ in row["8"].curve] == [1, 2, 3, 4, 6]  # 1/8 .. 3/4 of the 6 (rounded), then all
    assert plan.sentence("8").startswith("8: 6 training images, recall ")
    # too few validation images a class: cross-validation over every image instead
    assert len(plan_folds(labels, train, valid[:12])) == 5 and plan_folds(labels, train, valid) == [(train, valid)]


def test_a_small_dataset_made_in_the_app_is_planned_by_cross_validation(tmp_path):
    from core.fix.mend import plan

    folder = write_image_folder(tmp_path / "made", {"red": 10, "green": 10, "blue": 8}, size=48)
    found = plan(str(folder), add=10)
    assert found.measured_on == "5-fold cross-validation"  # 2 validation images a class in the run's split
    assert all(c.recall >= 0.8 for c in found.classes), found.classes  # plain colours: the probe sees them
    assert found.collect_next[0] in ("red", "green", "blue") and found.sentence(found.collect_next[0])


def test_the_plan_command_prints_json_for_a_folder(tmp_path, capsys):
    from core.data.__main__ import main

    digits = load_digits()
    for i in range(300):
        if digits.target[i] in (3, 5, 8) and (digits.target[i] != 8 or i < 120):
            folder = tmp_path / "digits" / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray((digits.images[i] * 15.9).astype("uint8"), mode="L").save(folder / f"{i}.png")
    assert main(["plan", str(tmp_path / "digits"), "--json", "--add", "20"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert sorted(found) == ["add", "classes", "collect_next", "measured_on", "recall_from"]
    assert sorted(found["collect_next"]) == ["3", "5", "8"] and found["recall_from"] == "the probe"
    assert {"class", "train_images", "recall", "projected_recall", "curve"} <= set(found["classes"][0])
    assert main(["plan", str(tmp_path / "digits"), "--add", "0"]) == 2
    assert capsys.readouterr().out.strip() == "--add must be 1 or more images."


@pytest.mark.slow
def test_the_map_page_draws_colours_and_lists_outliers(runs_env):
    app = open_page("pages/map.py")
    assert not app.get("plotly_chart")  # drawn only when asked
    by_label(app.toggle, "Draw the map").set_value(True).run()
    assert not app.exception, [e.value for e in app.exception]
    assert len(app.get("plotly_chart")) == 1
    assert any(t.value.startswith("digit #") and "its nearest image is" in t.value for t in app.text)
    for colouring in ("split", "outlier score"):  # the suspect score is the Fix page's review (test_pages_fix)
        by_label(app.radio, "Colour by").set_value(colouring).run()
        assert not app.exception, [e.value for e in app.exception]
    by_label(app.selectbox, "Features from").set_value("tiny").run()  # the run's own features and predictions
    assert not app.exception, [e.value for e in app.exception]
    assert by_label(app.radio, "Colour by").options == ["label", "split", "outlier score", "prediction",
                                                         "right or wrong"]
    by_label(app.radio, "Colour by").set_value("right or wrong").run()
    assert not app.exception and len(app.get("plotly_chart")) == 1


@pytest.mark.slow
def test_the_data_page_plans_what_to_collect(runs_env):
    app = open_page("pages/data.py")
    by_label(app.toggle, "Plan what to collect").set_value(True).run()
    assert not app.exception, [e.value for e in app.exception]
    sentences = [t.value for t in app.text if "more would bring it to about" in t.value]
    assert len(sentences) == 3
    assert any("now from run tiny" in c.value or "now from the probe" in c.value for c in app.caption)


def test_a_plan_with_a_run_starts_from_that_models_recall(trained_run):
    from core.fix.mend import plan, run_predictions, run_recall
    from core.runs.folder import RunFolder

    config = RunFolder(trained_run).config()
    found = plan(config.data, run_dir=trained_run, add=50, size=32)
    recall = run_recall(trained_run, tuple(c.name for c in found.classes))
    assert found.recall_from == "run tiny" and {c.name: c.recall for c in found.classes} == pytest.approx(recall)
    assert all(c.recall <= c.projected_recall <= 1 for c in found.classes) and any(c.gain > 0 for c in found.classes)
    # the run's columns follow the order the dataset's classes are asked in
    backwards = tuple(reversed(RunFolder(trained_run).class_names()))
    probs, targets = run_predictions(trained_run, backwards)
    assert run_recall(trained_run, backwards) == pytest.approx(recall)
    assert np.array_equal(probs.argmax(1) == targets, np.load(RunFolder(trained_run).predictions_path)["probs"]
                          .argmax(1) == np.load(RunFolder(trained_run).predictions_path)["targets"])
