"""What a sweep may search: each setting's range or choices, read from the command line, and a trial's settings.

The first trial of a study is the settings the sweep started from (the Train page's, or the command's flags), so
the study always holds the run a person would have made without it, and every later trial is compared with it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from core.config import BUILTIN_ARCHS, FASTAI_AUGMENT, TrainConfig

AUGMENT = "augment"  # not a TrainConfig field: fastai's augmentation set (flip, rotate, zoom, lighting) on or off
NO_AUGMENT = {name: getattr(TrainConfig(), name) for name in FASTAI_AUGMENT}


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    log: bool = False  # searched on a log scale: rates and decays, where 1e-4 to 1e-3 matters as 1e-3 to 1e-2 does
    integer: bool = False

    def describe(self) -> str:
        low, high = (int(self.low), int(self.high)) if self.integer else (self.low, self.high)
        return f"{low:g} to {high:g}" + (" (log scale)" if self.log else "")


@dataclass(frozen=True)
class Choices:
    options: tuple

    def describe(self) -> str:
        return ", ".join(map(str, self.options))


SEARCHABLE: dict[str, Range | Choices] = {
    "lr": Range(1e-4, 3e-2, log=True),
    "epochs": Range(1, 10, integer=True),
    "size": Choices((32, 48, 64, 96, 128)),
    "arch": Choices(BUILTIN_ARCHS),
    AUGMENT: Choices((False, True)),
    "label_smoothing": Range(0.0, 0.2),
    "wd": Range(1e-4, 1e-1, log=True),
}
DEFAULT_SEARCH = ("lr", "wd", "label_smoothing")  # each trial costs what the first does


def parse_range(name: str, text: str) -> Range | Choices:
    """`--range NAME=LOW:HIGH` (a range, on the setting's own scale) or `NAME=A,B,C` (choices); ValueError, a
    sentence, when it does not fit the setting."""
    known = SEARCHABLE.get(name)
    if known is None:
        raise ValueError(f"'{name}' cannot be searched; choose among {', '.join(SEARCHABLE)}")
    kind = bool if name == AUGMENT else type(getattr(TrainConfig(), name))
    try:
        if ":" in text:
            low, high = (float(part) for part in text.split(":"))
            if kind not in (int, float) or not low < high or (isinstance(known, Range) and known.log and low <= 0):
                raise ValueError
            return dataclasses.replace(known, low=low, high=high) if isinstance(known, Range) else \
                Range(low, high, integer=kind is int)
        options = tuple(_value(kind, part.strip()) for part in text.split(",") if part.strip())
        if not options:
            raise ValueError
        return Choices(options)
    except ValueError:
        raise ValueError(f"'{name}={text}' is neither LOW:HIGH with LOW < HIGH nor a list of {kind.__name__} values "
                         "separated by commas") from None


def search_space(search: str, ranges: list[str]) -> dict:
    """The searched settings (names separated by commas) with their ranges (`NAME=LOW:HIGH` or `NAME=A,B,C`);
    ValueError, a sentence, for a name or range that does not fit."""
    space = {}
    for name in filter(None, (n.strip() for n in search.split(","))):
        if name not in SEARCHABLE:
            raise ValueError(f"'{name}' cannot be searched; choose among {', '.join(SEARCHABLE)}")
        space[name] = SEARCHABLE[name]
    for text in ranges:
        name, _, value = text.partition("=")
        space[name.strip()] = parse_range(name.strip(), value.strip())
    if not space:
        raise ValueError("no setting to vary was named")
    return space


def _value(kind: type, text: str):
    if kind is bool:
        if text.lower() not in ("true", "false", "on", "off", "1", "0"):
            raise ValueError
        return text.lower() in ("true", "on", "1")
    return kind(text)


def first_params(base: TrainConfig, space: dict[str, Range | Choices]) -> dict:
    """The searched settings as `base` has them: the study's first trial."""
    return {name: base.augments if name == AUGMENT else getattr(base, name) for name in space}


def including(base: TrainConfig, space: dict[str, Range | Choices]) -> dict[str, Range | Choices]:
    """`space` widened where it leaves out `base`'s own value, so the first trial is exactly the starting settings."""
    widened = {}
    for name, value in first_params(base, space).items():
        rule = space[name]
        if isinstance(rule, Choices):
            widened[name] = rule if value in rule.options else Choices((value, *rule.options))
        else:  # a log scale cannot reach 0 (no weight decay): the range becomes linear to include it
            widened[name] = dataclasses.replace(rule, low=min(rule.low, value), high=max(rule.high, value),
                                                log=rule.log and value > 0)
    return widened


def suggest(trial, space: dict[str, Range | Choices], base: TrainConfig) -> TrainConfig:
    """The settings of an Optuna trial: `base` with each searched setting as the study's sampler chose it."""
    params = {}
    for name, rule in space.items():
        if isinstance(rule, Choices):
            params[name] = trial.suggest_categorical(name, list(rule.options))
        elif rule.integer:
            params[name] = trial.suggest_int(name, int(rule.low), int(rule.high), log=rule.log)
        else:
            params[name] = trial.suggest_float(name, rule.low, rule.high, log=rule.log)
    return with_params(base, params)


def with_params(base: TrainConfig, params: dict) -> TrainConfig:
    """`base` with a trial's settings (a study's best trial's, for "Train with these settings")."""
    changes = {}
    for name, value in params.items():
        if name == AUGMENT:
            changes.update(FASTAI_AUGMENT if value else NO_AUGMENT)
        else:
            changes[name] = value
    return dataclasses.replace(base, **changes)
