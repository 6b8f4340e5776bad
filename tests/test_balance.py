"""Imbalanced classes (issue 15): the class weights' exact values, the weighted loss against a hand computation,
the balanced sampler's draws and their resumability, the health report's suggestion, and real runs."""
import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import WeightedRandomSampler

from core.config import TrainConfig
from core.data.__main__ import main as data_main
from core.data.batches import balanced_order, iterate_batches
from core.data.load import Split, inspect_source
from core.net.backbones import Classifier
from core.runs.checkpoint import load_checkpoint, save_checkpoint
from core.runs.folder import RunFolder
from core.train.__main__ import main as train_main
from core.train.callbacks import Callback, StopTraining
from core.train.loop import Learner, class_weights, fit_one_cycle
from core.train.recipe import fine_tune
from tests.conftest import write_image_folder


def feature_split(labels: list[int], valid_labels: list[int] | None = None, width: int = 2) -> Split:
    """Items that are already features (float, so the batches pass them through unnormalized): item i's first
    feature is i, so a model can tell which items it was shown."""
    train = torch.tensor(labels)
    valid = torch.tensor(valid_labels if valid_labels is not None else labels)
    features = lambda n: torch.cat([torch.arange(n, dtype=torch.float32)[:, None],  # noqa: E731
                                    torch.linspace(-1, 1, n)[:, None].repeat(1, width - 1)], 1)
    return Split(features(len(train)), train, features(len(valid)), valid, np.arange(len(valid)))


class Linear(nn.Module):
    """A linear classifier on features that records the first feature (the item's index) of every training batch."""

    def __init__(self, width: int, n_classes: int):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(width, n_classes)
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.seen += x[:, 0].long().tolist()
        return self.linear(x)


def linear_classifier(width: int = 2, n_classes: int = 3) -> Classifier:
    model = nn.Sequential(nn.Identity(), Linear(width, n_classes))
    return Classifier(model, [[], list(model.parameters())])


class Recorder(Callback):
    def __init__(self, stop_at: int | None = None):
        self.losses, self.epochs, self.stop_at = [], [], stop_at

    def on_batch_end(self, step, logs):
        self.losses.append(logs["loss"])
        if step == self.stop_at:
            raise StopTraining("asked")

    def on_epoch_end(self, epoch, logs):
        self.epochs.append(logs)


# ---- the weights --------------------------------------------------------------------------------------------------

def test_class_weights_are_n_over_classes_times_count_and_average_one_over_the_training_items():
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 2])  # counts 6, 2, 1
    weights = class_weights(labels)
    assert weights.tolist() == [9 / (3 * 6), 9 / (3 * 2), 9 / (3 * 1)] == [0.5, 1.5, 3.0]
    assert weights[labels].mean().item() == pytest.approx(1.0)
    from sklearn.utils.class_weight import compute_class_weight
    assert weights.numpy() == pytest.approx(compute_class_weight("balanced", classes=np.arange(3), y=labels.numpy()))
    # a class with no training items (a dataset's own split can do that) weighs nothing and counts no class
    assert class_weights(torch.tensor([0, 0, 2])).tolist() == [3 / (2 * 2), 0.0, 3 / (2 * 1)]


def test_the_weighted_loss_equals_a_hand_computation_and_the_validation_loss_stays_unweighted():
    labels, smoothing = [0, 0, 0, 0, 1, 1, 2], 0.1
    split = feature_split(labels)
    classifier = linear_classifier()
    linear = classifier.model[1].linear
    w, b = linear.weight.detach().numpy().astype(np.float64), linear.bias.detach().numpy().astype(np.float64)
    x, y = split.train_images.numpy().astype(np.float64), np.array(labels)
    # by hand: each item's smoothed cross-entropy times n / (n_classes * count of its class), averaged over the batch
    logits = x @ w.T + b
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    item_losses = -(1 - smoothing) * log_p[np.arange(7), y] - smoothing / 3 * log_p.sum(1)
    weight = {0: 7 / (3 * 4), 1: 7 / (3 * 2), 2: 7 / (3 * 1)}
    expected = np.mean([weight[label] * loss for label, loss in zip(labels, item_losses)])
    config = TrainConfig(bs=7, pretrained=False, balance="weights", label_smoothing=smoothing)
    recorder = Recorder()
    learner = Learner(classifier, split, config, torch.device("cpu"), callbacks=[recorder])
    fit_one_cycle(learner, 1, [{"params": list(classifier.model.parameters()), "lr": 0.01}])
    assert recorder.losses == [pytest.approx(expected, rel=1e-6)]  # one batch: all seven items
    assert expected != pytest.approx(item_losses.mean(), rel=1e-3)  # the weights changed it
    with torch.no_grad():  # validation: the plain mean cross-entropy of the trained model, never weighted
        plain = nn.functional.cross_entropy(classifier.model(split.valid_images), split.valid_labels).item()
    assert recorder.epochs[0]["valid_loss"] == pytest.approx(plain, rel=1e-6)


def test_the_frozen_phase_on_cached_features_trains_with_the_same_weights():
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    classifier = Classifier(nn.Sequential(body, head), [list(body.parameters()), list(head.parameters())])
    labels = torch.tensor([0] * 12 + [1] * 4)
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    config = TrainConfig(bs=4, size=8, pretrained=True, freeze_epochs=1, epochs=1, balance="weights")
    learner = Learner(classifier, Split(images, labels, images, labels, np.arange(16)), config, torch.device("cpu"))

    class WeightsInForce(Callback):
        seen = []

        def on_batch_end(self, step, logs):
            self.seen.append((learner.phase, learner.on_features, learner.loss_weights.tolist()))

    learner.callbacks.append(WeightsInForce())
    fine_tune(learner)
    phases = {(phase, cached) for phase, cached, _ in WeightsInForce.seen}
    assert phases == {("frozen", True), ("unfrozen", False)}  # the head trained on cached features, then all
    weights = {tuple(weights) for *_, weights in WeightsInForce.seen}
    assert len(weights) == 1 and list(*weights) == pytest.approx([16 / (2 * 12), 16 / (2 * 4)])


# ---- the sampler --------------------------------------------------------------------------------------------------

def test_the_sampler_shows_every_class_about_equally_often_and_the_same_order_for_the_same_seed():
    labels = torch.tensor([0] * 2400 + [1] * 480 + [2] * 120)  # 20 : 4 : 1
    images = torch.zeros(3000, 1)  # features: only the labels matter here
    draw = lambda seed: torch.cat([y for _, y in iterate_batches(  # noqa: E731
        images, labels, 100, shuffle=True, balanced=True, generator=torch.Generator().manual_seed(seed))])
    epoch = draw(7)
    assert len(epoch) == 3000  # an epoch is as long as without the sampler
    assert torch.bincount(epoch, minlength=3).tolist() == pytest.approx([1000, 1000, 1000], abs=100)
    assert torch.equal(draw(7), epoch) and not torch.equal(draw(8), epoch)
    # the same draws as PyTorch's own WeightedRandomSampler with weights 1 / count
    sampler = WeightedRandomSampler(1.0 / torch.bincount(labels)[labels].double(), 3000,
                                    generator=torch.Generator().manual_seed(7))
    assert balanced_order(labels, torch.Generator().manual_seed(7)).tolist() == list(sampler)


def test_a_resumed_run_with_the_sampler_draws_the_same_order_as_an_uninterrupted_one(tmp_path):
    labels = [0] * 18 + [1] * 4 + [2] * 2  # 24 items, 6 batches of 4 an epoch
    config = TrainConfig(bs=4, pretrained=False, balance="sampler", seed=3)

    def learner_for(classifier, *callbacks):
        return Learner(classifier, feature_split(labels), config, torch.device("cpu"), callbacks=list(callbacks))

    def fit(learner):
        fit_one_cycle(learner, 3, [{"params": list(learner.classifier.model.parameters()), "lr": 0.01}])

    whole = linear_classifier()
    fit(learner_for(whole))
    assert len(whole.model[1].seen) == 72 and len(set(whole.model[1].seen)) < 24  # drawn with replacement

    first = linear_classifier()
    stopped = learner_for(first, Recorder(stop_at=7))  # reported a few steps late: stops in the second epoch
    with pytest.raises(StopTraining):
        fit(stopped)
    save_checkpoint(tmp_path / "last.pt", stopped, ["0", "1", "2"])
    checkpoint = load_checkpoint(tmp_path / "last.pt")
    assert checkpoint["epoch"] == 1 and 0 < checkpoint["batch_in_epoch"] < 6
    second = linear_classifier()
    second.model.load_state_dict(checkpoint["model"])
    resumed = learner_for(second)
    resumed.step, resumed.epoch, resumed.resume = checkpoint["step"], checkpoint["epoch"], checkpoint
    fit(resumed)
    assert first.model[1].seen + second.model[1].seen == whole.model[1].seen
    assert torch.equal(second.model[1].linear.weight, whole.model[1].linear.weight)


# ---- the health report's suggestion -------------------------------------------------------------------------------

@pytest.mark.parametrize("counts, suggested", [
    ({"big": 10, "small": 3}, "3.3×"),  # more than three times: suggested
    ({"big": 9, "small": 3}, None),  # exactly three times: flagged as imbalanced, but nothing suggested
    ({"a": 4, "b": 5, "c": 4}, None),
])
def test_the_health_report_suggests_balancing_exactly_when_the_largest_class_has_over_three_times_the_smallest(
        tmp_path, capsys, counts, suggested):
    root = write_image_folder(tmp_path / "set", counts)
    report = inspect_source(str(root))
    assert data_main(["inspect", str(root)]) == 0
    printed = capsys.readouterr().out
    if suggested is None:
        assert report.suggestions == [] and "balance =" not in printed
        return
    assert report.suggestions == [f"The largest class has {suggested} the images of the smallest: train with "
                                  "balance = sampler (every class drawn equally often) so the small classes count."]
    assert report.suggestions[0] in printed.splitlines()
    assert report.to_dict()["suggestions"] == report.suggestions
    assert data_main(["inspect", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["suggestions"] == report.suggestions


# ---- real runs ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def imbalanced_digits(tmp_path_factory):
    from bench.imbalance import write_imbalanced_digits

    folder = tmp_path_factory.mktemp("imbalanced") / "digits"
    counts = write_imbalanced_digits(folder, seed=0)
    assert max(counts.values()) > 3 * min(counts.values())
    return folder


@pytest.mark.parametrize("balance", ["weights", "sampler"])
def test_a_real_run_with_balance_completes_on_imbalanced_digits(tmp_path, imbalanced_digits, balance):
    report = inspect_source(str(imbalanced_digits))
    assert report.own_split and report.suggestions  # the report asks for it
    assert train_main(["--data", str(imbalanced_digits), "--arch", "resnet18", "--no-pretrained", "--size", "16",
                       "--bs", "32", "--epochs", "1", "--seed", "0", "--balance", balance,
                       "--runs-dir", str(tmp_path), "--name", balance]) == 0
    folder = RunFolder(tmp_path / balance)
    status = folder.status()
    assert status["state"] == "completed"
    assert folder.config().balance == balance and f"--balance {balance}" in folder.command
    n_train = folder.data_record()["n_train"]
    assert status["step"] == n_train // 32  # the sampler keeps the epoch's length
    assert np.isfinite(folder.read_metrics().epochs[-1]["valid_loss"])


def test_a_config_without_balance_trains_exactly_as_before():
    """balance="none" leaves the loss and the order as they were: the same losses as a plain cross-entropy."""
    labels = [0, 0, 0, 0, 1, 1, 2]
    results = []
    for balance in ("none", "weights"):
        recorder = Recorder()
        config = TrainConfig(bs=7, pretrained=False, balance=balance)
        classifier = linear_classifier()
        fit_one_cycle(Learner(classifier, feature_split(labels), config, torch.device("cpu"), callbacks=[recorder]),
                      1, [{"params": list(classifier.model.parameters()), "lr": 0.01}])
        results.append(recorder.losses[0])
    with torch.no_grad():
        split = feature_split(labels)
        plain = nn.functional.cross_entropy(linear_classifier().model(split.train_images), split.train_labels)
    assert results[0] == pytest.approx(plain.item(), rel=1e-6) and results[1] != pytest.approx(results[0])




def test_the_data_page_suggests_balancing_a_folder_whose_largest_class_is_over_three_times_the_smallest(
        runs_env, tmp_path):
    from tests.conftest import write_image_folder
    from tests.test_pages import by_label, open_page

    def suggestions_for(folder) -> list[str]:
        app = open_page("pages/data.py")
        by_label(app.radio, "Images from").set_value("A folder on this machine").run()
        by_label(app.text_input, "Folder path").set_value(str(folder)).run()
        assert not app.exception, [e.value for e in app.exception]
        return [i.value for i in app.info if "balance" in i.value]

    assert suggestions_for(write_image_folder(tmp_path / "even", {"cat": 6, "dog": 6})) == []
    [suggestion] = suggestions_for(write_image_folder(tmp_path / "skewed", {"cat": 20, "dog": 6, "eel": 5}))
    assert "4.0× the images of the smallest" in suggestion and "Imbalanced classes" in suggestion
