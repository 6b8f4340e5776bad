"""The checkpoint format: everything needed to resume a run exactly, and to rebuild its model anywhere.

A checkpoint is a plain dict of tensors and numbers, saved with torch.save and always loaded with
weights_only=True, so nothing in a file can run code. It carries its own config and class names: a checkpoint
copied out of its run folder still rebuilds its model (core.ship.export does).
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from core.atomic import write_atomic
from core.config import TrainConfig
from core.errors import BrokenRun
from core.net.backbones import build_classifier
from core.runs.folder import RunFolder

if TYPE_CHECKING:
    from core.train.loop import Learner


CHECKPOINT_KEYS = ("model", "config", "class_names")  # what every reader needs; resuming needs the rest too


def save_checkpoint(path: Path, learner: Learner, class_names: list[str]) -> None:
    """Model, optimizer, schedule, RNG state, position and the current epoch's loss so far, written atomically."""
    state = {
        "model": learner.classifier.model.state_dict(),
        "optimizer": learner.optimizer.state_dict() if learner.optimizer else {},
        "scheduler": learner.scheduler.state_dict() if learner.scheduler else {},
        "rng": torch.get_rng_state(),
        "epoch": learner.epoch, "step": learner.step, "phase": learner.phase, "phase_epoch": learner.phase_epoch,
        "batch_in_epoch": learner.batch_in_epoch, "epoch_loss": list(learner.epoch_loss),
        "config": learner.config.to_dict(), "class_names": list(class_names),
    }
    write_atomic(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path) -> dict:
    """A checkpoint's contents on the CPU, read with weights_only=True so nothing in the file can run code;
    BrokenRun, a sentence, when it is empty, damaged, or carries anything but weights and numbers."""
    path = Path(path)
    where = f"The checkpoint {path.parent.parent.name}/{path.parent.name}/{path.name}"
    try:
        if path.stat().st_size == 0:
            raise BrokenRun(f"{where} is empty (0 bytes): the run was cut off while saving it.")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except BrokenRun:
        raise
    except pickle.UnpicklingError:
        raise BrokenRun(f"{where} holds more than weights (Python objects that could run code), so it was not "
                        "loaded; only checkpoints this app wrote can be used.") from None
    except FileNotFoundError:
        raise BrokenRun(f"{where} is missing.") from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise BrokenRun(f"{where} is damaged and cannot be read ({type(error).__name__}).") from None
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise BrokenRun(f"{where} is not a checkpoint of this app (it has no {', '.join(missing)}).")
    return state


def load_model(run_dir: Path) -> tuple[nn.Module, list[str], TrainConfig]:
    """Rebuild a run's model from the checkpoint that counts (core.runs.folder), in eval mode, with its class
    names and config; FileNotFoundError before its first epoch ended."""
    path = RunFolder(run_dir).model_checkpoint()
    if path is None:
        raise FileNotFoundError(f"The run {Path(run_dir).name} has no checkpoint yet: it has not finished an epoch.")
    state = load_checkpoint(path)
    try:
        config = TrainConfig.from_dict(state["config"])
        class_names = [str(name) for name in state["class_names"]]
        classifier = build_classifier(config.arch, len(class_names), pretrained=False, size=config.size)
        classifier.model.load_state_dict(state["model"])
    except (ValueError, KeyError, TypeError, RuntimeError) as error:  # a setting or a weight that does not fit
        raise BrokenRun(f"The checkpoint {Path(run_dir).name}/{path.name} does not fit its own model ({error})."
                        ) from None
    return classifier.model.eval(), class_names, config
