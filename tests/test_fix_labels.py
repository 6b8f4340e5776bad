"""Fixing label sets (multi-label, issue 27): each image's out-of-sample probability per label, cleanlab's multi-label
confident learning over them, the labels probably missing and extra, the command line, and the Fix page's review
recording each decision as an edit that undo takes back. Real images: 2x2 mosaics of handwritten digits labelled
with the digits they show, a known 10% of them given a label too few or too many (tests.mosaics.corrupt_labels)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from core.data.__main__ import main as data_main
from core.data.load import edit_log_for, load_source
from core.fix.labelsets import label_set_suspect, review_label_sets
from core.fix.mend import review, review_json
from core.fix.suspects import neighbour_probs, probe_probs
from tests.conftest import ROOT
from tests.mosaics import corrupt_labels, write_mosaics


@pytest.fixture(scope="module")
def noisy(tmp_path_factory) -> tuple[Path, dict, dict]:
    """(a folder of 603 mosaics, 60 of them mislabelled; {file: true set}; {file: the set it now has})."""
    folder = tmp_path_factory.mktemp("labelsets") / "mosaics"
    written = write_mosaics(folder, n=600, seed=4)  # seed 4: not one bench/label_noise_multi was tuned on
    return folder, written, corrupt_labels(folder, written, seed=4)


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))  # edit logs of this test only
    return tmp_path / "data"


def test_neighbours_give_each_label_the_share_of_the_vote_that_carries_it():
    features = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.01, 1.0]]), dim=1)
    labels = torch.tensor([[1, 0, 1], [1, 0, 0], [0, 1, 0], [0, 1, 1]], dtype=torch.bool)
    probs = neighbour_probs(features, labels, 3, k=1)  # each image's one nearest other image: its whole vote
    assert probs.tolist() == [[1, 0, 0], [1, 0, 1], [0, 1, 1], [0, 1, 0]]
    two = neighbour_probs(features, labels, 3, k=3, temperature=1e6)  # every other image, weighed alike
    assert np.allclose(two[0], [1 / 3, 2 / 3, 1 / 3])


def test_the_probe_gives_a_sigmoid_per_label_from_the_folds_an_image_is_not_in():
    generator = torch.Generator().manual_seed(0)
    truth = torch.rand(200, 3, generator=generator) < 0.5  # three labels, each shown by one feature
    features = truth.float() * 4 + torch.randn(200, 3, generator=generator) * 0.5
    labels = truth.clone()
    labels[7, 0] = ~labels[7, 0]  # one label flipped: the probe never saw this image, so it says the truth
    probs = probe_probs(features, labels, 3)
    assert probs.shape == (200, 3) and not np.allclose(probs.sum(1), 1)  # sigmoids, not a softmax
    assert ((probs >= 0.5) == truth.numpy()).mean() > 0.95 and (probs[7, 0] >= 0.5) == bool(truth[7, 0])
    assert np.array_equal(probs, probe_probs(features, labels, 3))  # seeded folds


def test_a_suspect_names_the_labels_probably_missing_and_extra():
    suspect = label_set_suspect(3, np.array([True, True, False, False]), np.array([0.9, 0.2, 0.7, 0.1]),
                                ("a", "b", "c", "d"), 0.8)
    assert (suspect.labels, suspect.suggested, suspect.missing, suspect.extra) == \
        (("a", "b"), ("a", "c"), ("c",), ("b",))


def test_the_review_finds_most_of_the_wrong_label_sets_and_says_which_label_is_wrong(noisy, data_dir):
    folder, written, changed = noisy
    data, result = review(str(folder))
    assert data.multi_label and result.probs.shape == (603, 5) and len(changed) == 60
    names = data.item_names
    top = {names[i] for i in result.ranking[:len(changed)]}
    assert len(top & set(changed)) / len(changed) >= 0.45  # chance is 0.1; bench/label_noise_multi: 0.57-0.63
    flagged = {names[s.index]: s for s in result.suspects}
    found = [flagged[name] for name in changed if name in flagged]
    assert len(found) >= 0.7 * len(changed)  # most of them
    for suspect in found:
        assert set(suspect.labels) == set(changed[names[suspect.index]])
        assert set(suspect.suggested) == (set(suspect.labels) | set(suspect.missing)) - set(suspect.extra)
    right = [s for s in found if set(written[names[s.index]]) ^ set(s.labels) <= set(s.missing) | set(s.extra)]
    assert len(right) >= 0.9 * len(found)  # the label that was dropped is named missing, the one added extra
    scores = result.scores[result.ranking]
    assert np.all(np.diff(scores) <= 0) and all(s.missing or s.extra for s in result.suspects)


@pytest.mark.slow
def test_the_same_data_gives_the_same_suspects_and_the_command_line_prints_them(noisy, data_dir, capsys):
    folder, _, _ = noisy
    data = load_source(str(folder), 64)
    first, second = review_label_sets(data, size=64), review_label_sets(data, size=64)
    assert np.array_equal(first.probs, second.probs) and np.array_equal(first.ranking, second.ranking)
    assert first.suspects == second.suspects and first.layers == second.layers

    assert data_main(["suspects", str(folder), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(review_json(data, first)))  # the same in a new run of the engine
    row = printed["suspects"][0]
    assert set(row) == {"file", "labels", "suggested", "missing", "extra", "score"} and (row["missing"] or row["extra"])
    assert sorted(set(row["labels"]) - set(row["extra"]) | set(row["missing"])) == row["suggested"]
    assert data_main(["suspects", str(folder), "--json", "--top", "5"]) == 0
    assert len(json.loads(capsys.readouterr().out)["suspects"]) == 5
    assert data_main(["suspects", str(folder)]) == 0
    text = capsys.readouterr().out
    assert "whose label set the evidence contradicts" in text and f"{row['file']}: labelled " in text


def suspects_shown(app: AppTest) -> tuple[list, list[str]]:
    """The review's decision boxes and the captions under its images."""
    decisions = [s for s in app.selectbox if s.label == "Decision" and s.form_id == "review:labelsets"]
    captions = [t.value for t in app.text if "\nlabels: " in t.value][:len(decisions)]
    return decisions, captions


@pytest.mark.slow
def test_the_fix_page_reviews_label_sets_records_each_decision_and_undo_takes_it_back(noisy, data_dir, monkeypatch,
                                                                                      tmp_path):
    folder, _, changed = noisy
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(tmp_path / "runs"))
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    app.switch_page("pages/data.py").run()
    next(r for r in app.radio if r.label == "Images from").set_value("A folder on this machine").run()
    next(t for t in app.text_input if t.label == "Folder path").set_value(str(folder)).run()
    app.switch_page("pages/fix.py").run()
    next(t for t in app.toggle if t.label == "Look for label errors").set_value(True).run()
    assert not app.exception, [e.value for e in app.exception]
    decisions, captions = suspects_shown(app)
    assert len(decisions) == 12 and len(captions) == 12
    assert sum(c.split("\n")[0] in changed for c in captions) >= 6  # chance: one or two
    assert all("probably missing" in c or "probably extra" in c for c in captions)
    assert any(c.startswith("+ ") for text in captions for c in text.split("\n"))
    found = {row["file"]: row for row in review_json(*review(str(folder)))["suspects"]}

    first = captions[0].split("\n")[0]
    decisions[0].set_value("accept the suggested labels")
    next(b for b in app.button if b.label == "Record these decisions").click().run()
    assert not app.exception and any("Recorded 1 decision(s) as batch 1" in s.value for s in app.success)
    [batch] = edit_log_for(str(folder)).batches()
    assert batch["view"] == "suspects" and batch["edits"] == [
        {"file": first, "label": ";".join(found[first]["suggested"]) or ";", "was": ";".join(found[first]["labels"])}]
    data = load_source(str(folder), 32)  # every read applies it
    assert data.label_of(data.item_names.index(first)) == ("; ".join(found[first]["suggested"]) or "no label")
    next(b for b in app.button if b.label == "Undo the last batch").click().run()
    assert not app.exception and edit_log_for(str(folder)).batches() == []

    # a set chosen by hand, a keep and a removal, in one batch; undo takes back all three
    decisions, captions = suspects_shown(app)
    names = [c.split("\n")[0] for c in captions[:3]]
    decisions[0].set_value("set the labels chosen below")
    next(m for m in app.multiselect if m.key == f"labelsets:{names[0]}:labels").set_value(["four", "zero"])
    decisions[1].set_value("keep: the label is right")
    decisions[2].set_value("remove from the dataset")
    next(b for b in app.button if b.label == "Record these decisions").click().run()
    assert not app.exception
    [batch] = edit_log_for(str(folder)).batches()
    assert [(e["file"], e.get("label", "keep")) for e in batch["edits"]] == \
        [(names[0], "four;zero"), (names[1], "keep"), (names[2], None)]
    assert names[1] not in {c.split("\n")[0] for c in suspects_shown(app)[1]}  # kept: no longer a suspect
    next(b for b in app.button if b.label == "Undo the last batch").click().run()
    assert not app.exception and edit_log_for(str(folder)).batches() == []
