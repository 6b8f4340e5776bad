"""How runs differ, in words: their settings, what their recipes chose by themselves, and their data."""
from __future__ import annotations

from pathlib import Path

from core.config import TrainConfig
from core.runs.folder import RunFolder


def edits_text(edits: dict) -> str:
    """The dataset edits a run read its data with, in words: "3 relabelled, 1 removed", "none", or "" when the run
    did not record them (an older run, or one that has not read its data yet)."""
    if not edits:
        return ""
    counts = [(edits.get(key), word) for key, word in (("relabelled", "relabelled"), ("removed", "removed"))]
    said = [f"{n} {word}" for n, word in counts if isinstance(n, int) and not isinstance(n, bool) and n > 0]
    return ", ".join(said) or "none"


def recipe_text(recipe: dict) -> str:
    """What a run's unfrozen epochs trained, in words: "every layer" (also from scratch), "the late stages from block
    12 (23% of the work)", "the head only" (no unfrozen epochs), or "" when the run did not record it (an older run,
    or one that has not started)."""
    if recipe.get("unfrozen") in ("every layer", "the head only"):
        return recipe["unfrozen"]
    if recipe.get("late_cut") is not None:
        share = recipe.get("late_share")
        return f"the late stages from block {recipe['late_cut']}" + (f" ({share:.0%} of the work)" if share else "")
    return ""


def config_differences(configs: dict[str, TrainConfig], recipes: dict[str, dict] | None = None) -> list[dict]:
    """The settings that differ between runs, and what their recipes chose by themselves (`recipes`, each run's
    RunFolder.recipe: where the unfrozen epochs cut the network) when that differs: one row per setting, one column
    per run id."""
    rows = []
    for name in TrainConfig.__dataclass_fields__:
        values = {run_id: getattr(config, name) for run_id, config in configs.items()}
        if len({repr(v) for v in values.values()}) > 1:
            rows.append({"setting": name, **{run_id: str(v) for run_id, v in values.items()}})
    trained = {run_id: recipe_text(recipe) or "not recorded" for run_id, recipe in (recipes or {}).items()}
    if len(set(trained.values())) > 1:
        rows.append({"setting": "unfrozen epochs trained (chosen by the recipe)", **trained})
    return rows


def data_differences(first: Path, second: Path) -> dict[str, list] | None:
    """How the data of two runs differed, image by image: {"relabelled": [(name, label in first, label in
    second)], "removed": [names only the first had], "added": [names only the second had]}; None when either
    run recorded no image list (older runs)."""
    before, after = RunFolder(first).data_items(), RunFolder(second).data_items()
    if not before or not after:
        return None
    return {"relabelled": sorted((name, before[name], after[name]) for name in before.keys() & after.keys()
                                 if before[name] != after[name]),
            "removed": sorted(before.keys() - after.keys()), "added": sorted(after.keys() - before.keys())}
