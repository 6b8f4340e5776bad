"""The one flat, frozen training configuration: its defaults, its checks, its presets, and its command line.

Every setting is a field of `TrainConfig`, written into every run folder and checkpoint. The command line
(`python -m core.train --size 128 --no-pretrained ...`) is derived from the fields, both ways: `add_arguments`
builds the flags, `from_arguments` reads them back, `cli_args` spells a config as flags. The dashboard keys its
widgets by the same field names, so a setting has one name everywhere.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shlex
from dataclasses import dataclass, field

RESIZE_METHODS = ("squish", "crop", "pad")  # fastai's ResizeMethod: stretch, centre crop, or letterbox
BALANCE_METHODS = ("none", "weights", "sampler")
UNFREEZE_CHOICES = ("late", "all")
TRACKERS = ("mlflow", "tensorboard")
# The backbones built in (core.net.backbones.ARCHS builds each), and the prefix of any model of the timm zoo
BUILTIN_ARCHS = ("efficientnet_lite0", "resnet18", "resnet34", "resnet50")
TIMM_PREFIX = "timm:"


def arch_known(arch: str) -> bool:
    """Whether `arch` names a built-in backbone or a model timm can build as `timm:NAME` (weights tag allowed)."""
    if arch in BUILTIN_ARCHS:
        return True
    if not arch.startswith(TIMM_PREFIX):
        return False
    import timm  # torch loads here, not when the dashboard imports this module

    return timm.is_model(arch[len(TIMM_PREFIX):])


def _setting(default, help: str, **argparse_options):
    """A config field; `help` is its comment, shown by `--help` and the dashboard's tooltips alike."""
    return field(default=default, metadata={"help": help, **argparse_options})


@dataclass(frozen=True)
class TrainConfig:
    data: str = _setting("builtin:digits", "dataset: builtin:NAME, a folder of images, or a .zip of one")
    label_regex: str = _setting("", "labels from file names: a regex whose first group is the label")
    edits_upto: int = _setting(-1, "read the dataset with only the first N entries of its edit log, the edits as "
                                   "they stood when a run read it (a run's reproduce command says so); -1: every "
                                   "edit in force now")
    resize: str = _setting("squish", "how images become square: squish (stretch), crop (centre) or pad (black "
                                     "borders)", choices=RESIZE_METHODS)
    arch: str = _setting("efficientnet_lite0", f"backbone: {', '.join(BUILTIN_ARCHS)}, or any model of the timm "
                                               "zoo as timm:NAME (e.g. timm:convnext_nano)")
    weights: str = _setting("", "a file of the backbone's pretrained weights (safetensors or a weights-only state "
                                "dict, with or without its classifier) in place of a download, for machines without "
                                "a network")
    pretrained: bool = _setting(True, "start from ImageNet weights (--no-pretrained: every layer from random "
                                      "weights, no frozen phase)")
    size: int = _setting(64, "square side in pixels of the images the network sees (small is fast on a CPU)")
    bs: int = _setting(64, "batch size")
    epochs: int = _setting(3, "one-cycle epochs with every layer trainable (after the frozen ones, if pretrained)")
    # fastai's fine_tune does 1. Without augmentation they train the head on body features computed once, a
    # fraction of a second each, so five are cheap.
    freeze_epochs: int = _setting(5, "epochs with the pretrained body frozen first")
    unfreeze: str = _setting("late", "what the unfrozen epochs train: late (the body's last stages and the head, "
                                     "on the early stages' output computed once; where to cut follows from the "
                                     "network's operation counts) or all (every layer, the whole network each "
                                     "step, as fastai; also what late does with augmentation, a backbone without "
                                     "stages or torchrun)",
                             choices=UNFREEZE_CHOICES)
    # fastai's fine_tune uses 2e-3; on digits 5e-3 gave 96.9% against 95.5% (1e-2: 98.1%, but ResNet-18 from
    # scratch fell to 19.5% after one epoch at it).
    lr: float = _setting(5e-3, "peak learning rate of the head")
    unfrozen_lr_min: float = _setting(0.0, "unfrozen phase: the earliest layers' peak rate (0: unfrozen_lr_max "
                                           "/ 100), as the low end of fastai's slice")
    unfrozen_lr_max: float = _setting(0.0, "unfrozen phase: the head's peak rate (0: lr / 2, as fine_tune halves it)")
    wd: float = _setting(0.01, "AdamW weight decay")
    label_smoothing: float = _setting(0.0, "spread this share of each target over the other classes (fastai "
                                           "suggests 0.1)")
    patience: int = _setting(0, "stop early after this many epochs without a better validation loss (0: never)")
    adapt_bn: bool = _setting(False, "let a pretrained body's BatchNorm statistics follow the new data, as fastai "
                                     "does (default: keep ImageNet's, which lets the frozen phase train on "
                                     "cached features)")
    keep_best: bool = _setting(False, "finish with the weights of the epoch with the best validation accuracy")
    valid_pct: float = _setting(0.2, "share of each class held out for validation (stratified, seeded)")
    seed: int = _setting(42, "seeds the split, the weights of the new head and the batch order")
    flip: bool = _setting(False, "augment: random horizontal flips (wrong for digits and text)")
    rotate: float = _setting(0.0, "augment: random rotation up to this many degrees (fastai: 10)")
    zoom: float = _setting(1.0, "augment: random zoom in up to this factor (fastai: 1.1)")
    lighting: float = _setting(0.0, "augment: random brightness and contrast change up to this fraction "
                                    "(fastai: 0.2)")
    balance: str = _setting("none", "imbalanced classes: none, weights (a class-weighted loss) or sampler (every "
                                    "class drawn equally often)", choices=BALANCE_METHODS)
    track: str = _setting("", "also log the run where people already look: mlflow (a local mlruns/ folder), "
                              "tensorboard (event files in the run folder), or mlflow,tensorboard")

    @property
    def augments(self) -> bool:
        return self.flip or self.rotate > 0 or self.zoom > 1 or self.lighting > 0

    @property
    def total_epochs(self) -> int:
        """Every epoch the recipe trains: the frozen ones (when pretrained) and the unfrozen ones."""
        return self.epochs + (self.freeze_epochs if self.pretrained else 0)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Build from a dict (a run folder's or checkpoint's), ignoring keys this version does not know (older or
        newer run folders); ValueError, a sentence, when a known setting has the wrong type."""
        if not isinstance(values, dict):
            raise ValueError(f"the settings are a {type(values).__name__}, not an object")
        checked = {}
        for f in dataclasses.fields(cls):
            if f.name in values:
                checked[f.name] = _checked_value(f.name, values[f.name], type(f.default))
        return cls(**checked)

    def problems(self) -> dict[str, str]:
        """What is wrong with this config, by field name, each a sentence; empty when it can be trained."""
        checks = {
            "arch": (arch_known(self.arch),
                     f"must be one of {', '.join(BUILTIN_ARCHS)}, or timm:NAME for a model of the timm zoo"),
            "weights": (not self.weights or os.path.isfile(self.weights), "must be a file that exists"),
            "resize": (self.resize in RESIZE_METHODS, f"must be one of {', '.join(RESIZE_METHODS)}"),
            "size": (self.size >= 16, "must be at least 16 pixels"),
            "bs": (self.bs >= 1, "must be at least 1"),
            "edits_upto": (self.edits_upto >= -1, "must be -1 (every edit) or a number of edit-log entries"),
            "epochs": (self.epochs >= 0, "must not be negative"),
            "freeze_epochs": (self.freeze_epochs >= 0, "must not be negative"),
            "lr": (self.lr > 0 and math.isfinite(self.lr), "must be a positive number"),
            "valid_pct": (0 < self.valid_pct < 1, "must be between 0 and 1"),
            "label_smoothing": (0 <= self.label_smoothing < 1, "must be between 0 and 1"),
            "patience": (self.patience >= 0, "must not be negative"),
            "zoom": (self.zoom >= 1, "must be at least 1"),
            "rotate": (self.rotate >= 0, "must not be negative"),
            "lighting": (0 <= self.lighting < 1, "must be between 0 and 1"),
            "unfreeze": (self.unfreeze in UNFREEZE_CHOICES, f"must be one of {', '.join(UNFREEZE_CHOICES)}"),
            "balance": (self.balance in BALANCE_METHODS, f"must be one of {', '.join(BALANCE_METHODS)}"),
            "track": (set(filter(None, self.track.split(","))) <= set(TRACKERS),
                      f"must be empty or a comma-separated list of {', '.join(TRACKERS)}"),
        }
        return {name: sentence for name, (ok, sentence) in checks.items() if not ok}

    def cli_args(self) -> list[str]:
        """The `python -m core.train` flags that reproduce this config: the main settings always, the rest
        where they differ from the defaults."""
        defaults = TrainConfig()
        args = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name not in ALWAYS_SPELLED and value == getattr(defaults, f.name):
                continue
            if isinstance(value, bool):
                args.append(flag(f.name) if value else f"--no-{flag(f.name)[2:]}")
            else:
                args += [flag(f.name), repr(value) if isinstance(value, float) else str(value)]
        return args

    def cli_command(self) -> str:
        return shlex.join(["python", "-m", "core.train", *self.cli_args()])


def with_edits_upto(command: str, position: int | None) -> str:
    """A run's command, reading the dataset's edit log up to `position` (when known and not said already)."""
    if not command or position is None or "--edits-upto" in command:
        return command
    return f"{command} --edits-upto {position}"


def _checked_value(name: str, value, kind: type):
    """`value` as a setting of type `kind` (an int is a fine float); ValueError naming the setting otherwise.
    bool is an int to Python, so it is told apart explicitly: `"size": true` is not a size."""
    fits = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not fits:
        names = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}
        raise ValueError(f"setting '{name}' is {value!r:.40}, not {names[kind]}")
    return value


ALWAYS_SPELLED = {"data", "arch", "size", "bs", "epochs", "freeze_epochs", "lr", "wd", "valid_pct", "seed"}

# fastai's aug_transforms set (the parts that apply to square, already-cropped images).
FASTAI_AUGMENT = dict(flip=True, rotate=10.0, zoom=1.1, lighting=0.2)

# Named starting points. Lesson 1 is fastai's course-v3 lesson 1 on the Oxford pets: resnet34 at 224 px, batch
# 64, four frozen epochs (fit_one_cycle(4)), then unfreeze and two epochs at max_lr=slice(1e-6, 1e-4).
PRESETS: dict[str, dict] = {
    "lesson1": dict(data="builtin:pets", arch="resnet34", pretrained=True, size=224, bs=64, freeze_epochs=4,
                    unfreeze="all", epochs=2, lr=1e-3, unfrozen_lr_min=1e-6, unfrozen_lr_max=1e-4, resize="crop"),
}


def flag(name: str) -> str:
    """The command-line flag of a config field: `freeze_epochs` -> `--freeze-epochs`."""
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (booleans as --x / --no-x), plus --preset and --aug.

    Nothing has a parser default: a flag is in the parsed namespace only when it was typed, so a preset can fill
    in the rest (see from_arguments)."""
    group = parser.add_argument_group("training settings (TrainConfig)")
    for f in dataclasses.fields(TrainConfig):
        options = {k: v for k, v in f.metadata.items() if k != "help"}
        help_text = f"{f.metadata['help']} (default: {f.default!r})"
        if isinstance(f.default, bool):
            group.add_argument(flag(f.name), action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                               help=help_text)
        else:
            group.add_argument(flag(f.name), type=type(f.default), default=argparse.SUPPRESS, help=help_text,
                               **options)
    group.add_argument("--preset", choices=sorted(PRESETS), default=None,
                       help="start from a named recipe (lesson1: fastai lesson 1 on the Oxford pets)")
    group.add_argument("--aug", action="store_true",
                       help="fastai's aug_transforms set: --flip --rotate 10 --zoom 1.1 --lighting 0.2")


def from_arguments(args: argparse.Namespace) -> TrainConfig:
    """The config the flags describe: defaults, then the preset, then --aug, then every flag typed."""
    typed = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    preset = PRESETS[args.preset] if getattr(args, "preset", None) else {}
    augment = FASTAI_AUGMENT if getattr(args, "aug", False) else {}
    return TrainConfig(**{**preset, **augment, **typed})
