"""The dashboard's current dataset and settings, kept beside the data so that a reload, a second tab and a
server restart all open where the person left off (TensorBoard and W&B keep their state on disk the same way).

    <data folder>/settings.json    {"settings": {TrainConfig field: value, ...}}

Written atomically, and only with what changed (`save_settings` merges the changed fields into what is there,
so two tabs that each change one setting keep both). Read tolerantly: a missing file is the defaults; a
damaged one, a value of the wrong kind or outside its choices, or a dataset that is no longer there is the
defaults plus a sentence saying why, never an exception.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Mapping
from pathlib import Path

from core.atomic import write_json_atomic
from core.config import BALANCE_METHODS, RESIZE_METHODS, TRACKERS, TrainConfig
from core.data.archive import data_root
from core.data.sources import BUILTIN_LABELS, source_label

SETTINGS_FILE = "settings.json"
CHOICES: dict[str, Collection] = {"resize": RESIZE_METHODS, "balance": BALANCE_METHODS}


def settings_path() -> Path:
    """The settings file: follows $STUDIO_DATA_DIR, so tests and a second installation keep their own."""
    return data_root() / SETTINGS_FILE


def load_settings(allowed: Mapping[str, Collection] | None = None) -> tuple[dict, str | None]:
    """(the saved settings by TrainConfig field, None), or ({}, why they were not used: a sentence) when the file
    is damaged or names a dataset that is gone; ({}, None) when nothing was saved yet. `allowed` adds the values
    a caller's widgets can show (e.g. the image sizes of a slider)."""
    path = settings_path()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, None
    except (OSError, ValueError):
        return {}, f"The settings saved last time ({path}) could not be read, so the defaults are used."
    values = raw.get("settings") if isinstance(raw, dict) else None
    try:
        config = TrainConfig.from_dict(values)
    except ValueError as error:
        return {}, f"The settings saved last time could not be used ({error}), so the defaults are used."
    problem = _value_problem(config, {**CHOICES, **(allowed or {})})
    if problem:
        return {}, f"The settings saved last time could not be used ({problem}), so the defaults are used."
    if not source_exists(config.data):
        return {}, (f"The dataset chosen last time, {source_label(config.data)} ({config.data}), is no longer "
                    "there, so the built-in digits and the default settings are used.")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return {name: getattr(config, name) for name in values if name in known}, None


def save_settings(changed: Mapping) -> None:
    """Merge the changed settings into the file (atomically); the other fields keep what another tab saved."""
    if not changed:
        return
    path = settings_path()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        saved = raw["settings"] if isinstance(raw, dict) and isinstance(raw.get("settings"), dict) else {}
    except (OSError, ValueError):
        saved = {}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {"settings": {**saved, **changed}})
    except OSError:  # a read-only data folder: the settings still hold for this session
        pass


def source_exists(source: str) -> bool:
    """Whether a dataset source can still be found: a known built-in name, or a folder or file that is there."""
    if source.startswith("builtin:"):
        return source[8:] in BUILTIN_LABELS
    try:
        return Path(source).exists()
    except (OSError, ValueError):
        return False


def _value_problem(config: TrainConfig, allowed: Mapping[str, Collection]) -> str | None:
    for name, choices in allowed.items():
        if getattr(config, name) not in choices:
            return f"'{name}' is {getattr(config, name)!r:.40}"
    if not set(filter(None, config.track.split(","))) <= set(TRACKERS):
        return f"'track' is {config.track!r:.40}"
    return None
