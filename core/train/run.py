"""Running a run: the process that owns a run folder from "queued" to its final state.

`run_training` and `run_lr_find` share one frame (`in_run_process`): take the device lock, say "running",
do the work, and turn every failure into a sentence in status.json with the traceback in the log. Training is
core.train.recipe's fine_tune on core.train.loop, with the callbacks that write the folder; the finder is
core.train.lr_find's sweep. Under torchrun every process calls `run_training`; only rank 0 holds the lock and
writes the folder.
"""
from __future__ import annotations

import os
import signal
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from core.atomic import write_atomic
from core.config import TrainConfig
from core.data.images import LabeledImages
from core.data.labelscores import best_thresholds
from core.data.load import Split, edit_log_for, load_source
from core.data.mapped import where_held
from core.device import describe_device, inference_batch_size, memory_format_for, pick_device
from core.distributed import World
from core.errors import BrokenRun, DataError
from core.inspect.trust import BANK_SIZE, calibrated, fit_trust
from core.net.arch import WeightsUnavailable
from core.net.backbones import Classifier, build_classifier
from core.net.stages import LateCut
from core.runs.checkpoint import load_checkpoint, save_checkpoint
from core.runs.folder import RunFolder
from core.runs.labelsets import write_thresholds
from core.runs.process import process_start
from core.runs.store import DeviceBusy, TrainingLock
from core.train.callbacks import (
    EarlyStop,
    EarlyStopping,
    NonFiniteLoss,
    RunFolderWriter,
    StopOnNonFiniteLoss,
    StopOnRequest,
    StopTraining,
    TerminalProgress,
)
from core.train.loop import Evaluation, Learner, OutOfMemory, keeps_bn_stats
from core.train.lr_find import suggest_steep, suggest_valley, sweep
from core.train.progress import ActiveTime, TimeLeft
from core.train.recipe import fine_tune, late_cut, plan
from core.train.tracking import trackers_for


def run_training(run_dir: Path, resume: bool = False, world: World = World()) -> str:
    """Train the run whose folder (with config.json) exists; returns the final state.

    With resume, continue from checkpoints/last.pt exactly where it was saved (mid-epoch too): model,
    optimizer, schedule, RNG and position; metric rows written after that checkpoint are dropped and redone.
    """
    folder = RunFolder(run_dir, writes=world.is_main)
    return in_run_process(folder, world, lambda config, device, active: _train(folder, config, device, world, resume,
                                                                               active),
                          message="Loading data and weights", resume=resume)


def run_lr_find(run_dir: Path) -> str:
    """The learning-rate finder as a run: its own process, holding the device lock, writing lr_find.json."""
    folder = RunFolder(run_dir)
    return in_run_process(folder, World(), lambda config, device, active: _sweep(folder, config, device, active),
                          message="Sweeping the learning rate")


def in_run_process(folder: RunFolder, world: World, work: Callable[[TrainConfig, torch.device, ActiveTime], str], *,
                   message: str, resume: bool = False) -> str:
    """Hold the device lock while `work(config, device, active)` runs; any failure ends the run with a sentence.
    `active` counts the seconds the run has spent running, over this start and every one before it."""
    lock = TrainingLock(folder.path.parent)
    busy = None
    if world.is_main:
        try:
            lock.acquire(folder.run_id)
        except DeviceBusy as error:
            busy = error
    if world.any(busy is not None):
        folder.update_status(state="failed", pid=os.getpid(), pid_start=process_start(os.getpid()), message=str(busy))
        print(busy or "Rank 0 could not take the training lock.", flush=True)
        return "failed"
    device = pick_device(world)
    before = folder.raw_status() if resume else {}
    active = ActiveTime(_active_before(before))
    folder.update_status(state="running", pid=os.getpid(), pid_start=process_start(os.getpid()),
                         device=describe_device(device), finished=None, started=before.get("started", time.time()),
                         message=message, active_s=active(), eta_s=None, fraction=None, imgs_per_s=None)
    try:
        config = folder.config()
        problems = config.problems()
        if problems:
            raise DataError("These settings cannot be trained: " +
                            "; ".join(f"{name} {sentence}" for name, sentence in problems.items()) + ".")
        return work(config, device, active)
    except (DataError, WeightsUnavailable, BrokenRun) as error:
        folder.finish("failed", str(error), active_s=active())
        print(f"Failed: {error}", flush=True)
        return "failed"
    except Exception as error:  # anything else: a plain sentence for the page, the traceback for the log
        traceback.print_exc()
        folder.finish("failed", f"The run failed unexpectedly ({type(error).__name__}: {error}). The details are "
                                "in the run's log.", active_s=active())
        return "failed"
    finally:
        if world.is_main:
            lock.release()


def _active_before(status: dict) -> float:
    """Seconds an earlier start of the run spent running: its active_s, or for a run from before active_s was
    kept, its last heartbeat (or end) less its start."""
    if "active_s" in status:
        return status["active_s"]
    started = status.get("started")
    return max((status.get("finished") or status.get("heartbeat", 0.0)) - started, 0.0) if started else 0.0


def prepare(folder: RunFolder, config: TrainConfig, device: torch.device,
            world: World = World()) -> tuple[LabeledImages, Split, Classifier]:
    """Load the data, split it, build the model on the device, and record what the data turned out to be."""
    torch.manual_seed(config.seed)  # the same new head on every process
    upto = folder.edits_upto(config)  # a resume reads the edits its first start read, not those made since
    data = load_source(config.data, config.size, label_regex=config.label_regex or None, resize=config.resize,
                       edits_upto=upto)
    if data.multi_label and (config.balance != "none" or config.label_smoothing):
        raise DataError("Balancing classes and label smoothing are for one label per image; this dataset has label "
                        "sets (multi-label): set balance to none and label smoothing to 0.")
    split = Split.from_dataset(data, config.valid_pct, config.seed).placed(device)
    print(where_held(data.images), flush=True)
    folder.record_data(list(data.class_names), data.fingerprint(), len(split.train_labels), len(split.valid_labels),
                       edit_log_for(config.data, upto).summary().to_dict(),
                       list(zip(data.item_names, data.label_texts())), data.multi_label)
    classifier = build_classifier(config.arch, len(data.class_names), pretrained=config.pretrained, size=config.size,
                                  weights=config.weights)
    classifier.model.to(device, memory_format=memory_format_for(classifier.model, device))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return data, split, classifier


def _train(folder: RunFolder, config: TrainConfig, device: torch.device, world: World, resume: bool,
           active: ActiveTime) -> str:
    # SIGTERM (a `kill`, a logout) is a stop request: finish the batch, keep what was learned.
    signal.signal(signal.SIGTERM, lambda *_: folder.request_stop())
    checkpoint = _checkpoint_to_resume(folder, world) if resume else None
    data, split, classifier = prepare(folder, config, device, world)
    class_names = list(data.class_names)
    learner = Learner(classifier, split, config, device, world=world,
                      announce=lambda message: folder.update_status(message=message),
                      stop_requested=folder.stop_requested)
    cut = _late_cut(folder, learner, checkpoint)
    writer = _writer(folder, learner, cut, class_names, active, checkpoint) if world.is_main else None
    trackers = trackers_for(config, folder) if world.is_main else []
    # The NaN check comes first: a NaN step is never written as a metrics row. The trackers come before early
    # stopping, which ends the epoch's callbacks by raising.
    table = TerminalProgress(data.multi_label)
    learner.callbacks = [StopOnNonFiniteLoss(world), *([writer, table] if writer else []), *trackers,
                         StopOnRequest(folder, world), *([EarlyStopping(config.patience)] if config.patience > 0
                                                         else [])]
    learner.total_epochs = config.total_epochs
    learner.total_steps = learner.total_epochs * learner.batches_per_epoch()
    if checkpoint is not None:
        classifier.model.load_state_dict(checkpoint["model"])
        learner.step, learner.epoch, learner.resume = checkpoint["step"], checkpoint["epoch"], checkpoint
        folder.update_status(best_accuracy=writer.best_accuracy if writer and writer.best_accuracy >= 0 else None)
        print(f"Resuming at epoch {learner.epoch + 1}, step {learner.step}.", flush=True)
    folder.update_status(state="running", message="", total_steps=learner.total_steps,
                         total_epochs=learner.total_epochs, step=learner.step, epoch=learner.epoch)
    try:
        learner.call("on_fit_start", learner)
        state, note = _fine_tune_until_it_ends(learner, cut, folder, class_names, writer)
        return _finish(learner, folder, state, note, active)
    finally:
        if writer is not None:
            writer.metrics.close()
        for tracker in trackers:  # a run that ended without on_fit_end (a failure) ends its trackers' records too
            tracker.close()


def _late_cut(folder: RunFolder, learner: Learner, checkpoint: dict | None) -> LateCut | None:
    """Where the body is cut for unfreeze="late": chosen at the run's first start (from operation counts, so the
    same settings and data cut alike on any machine and load), written to recipe.json and kept for its resumes
    (the optimizer's groups depend on it)."""
    if checkpoint is not None:
        recipe = folder.recipe()
        at = recipe.get("late_cut")
        return None if at is None else LateCut(at, recipe.get("late_share", 0.0), tuple(recipe.get("cached_shape", [])))
    cut = late_cut(learner)
    config = learner.config
    trained = "late stages" if cut else "every layer" if config.epochs or not config.pretrained else "the head only"
    folder.record_recipe({"unfrozen": trained, **(cut.to_dict() if cut else {})})
    if cut is not None:
        print(f"Unfrozen epochs: the late stages (from block {cut.at} on, {cut.share:.0%} of a forward pass's work) "
              f"train on the early stages' output ({'x'.join(map(str, cut.shape))} an image), computed once.",
              flush=True)
    return cut


def _writer(folder: RunFolder, learner: Learner, cut: LateCut | None, class_names: list[str], active: ActiveTime,
            checkpoint: dict | None) -> RunFolderWriter:
    """The callback that writes the run folder, timing what is left of the run from this start on."""
    config, split = learner.config, learner.split
    n_train, n_valid = len(split.train_labels), len(split.valid_labels)
    time_left = TimeLeft(plan(config, learner.world, cut), steps_per_epoch=learner.batches_per_epoch(),
                         batch_size=min(config.bs, n_train), n_train=n_train, n_valid=n_valid,
                         finish_images=min(BANK_SIZE, n_train) + n_valid,  # save_predictions' pass
                         forward_before=folder.raw_status().get("forward_s") if checkpoint is not None else None)
    best, epoch_s_before = -1.0, 0.0
    if checkpoint is not None:
        best = max((row["accuracy"] for row in folder.read_metrics().epochs), default=-1.0)
        if checkpoint["batch_in_epoch"] > 0:  # stopped mid-epoch: the epoch's time goes on from where it stopped
            epoch_s_before = folder.raw_status().get("epoch_s_at_stop", 0.0)
    return RunFolderWriter(folder, class_names, best_accuracy=best, active=active, time_left=time_left,
                           epoch_s_before=epoch_s_before)


def _checkpoint_to_resume(folder: RunFolder, world: World) -> dict:
    if not folder.last_checkpoint.exists():
        raise DataError("This run saved no checkpoint before it ended, so there is nothing to resume; start it "
                        "again instead.")
    checkpoint = load_checkpoint(folder.last_checkpoint)
    folder.clear_stop()
    folder.truncate_metrics(checkpoint["step"], checkpoint["epoch"])
    world.any(False)  # every rank waits until the stale stop request is gone
    return checkpoint


def _fine_tune_until_it_ends(learner: Learner, cut: LateCut | None, folder: RunFolder, class_names: list[str],
                             writer: RunFolderWriter | None) -> tuple[str, str]:
    """(final state, a note for the message): whatever ended the recipe, as a state."""
    try:
        fine_tune(learner, cut)
    except StopTraining:
        if learner.optimizer is not None and learner.world.is_main:
            save_checkpoint(folder.last_checkpoint, learner, class_names)
            # what the epoch it stopped in had taken: its time goes on from there after a resume
            folder.update_status(epoch_s_at_stop=writer.epoch_seconds() if writer else 0.0)
        return "stopped", ""
    except EarlyStop as early:
        return "completed", f"{early} "
    except NonFiniteLoss as bad:  # the weights that produced it are already broken: go back to an epoch's end
        return "failed", f"{bad} The learning rate is probably too high: try one about 10 times lower. "
    except OutOfMemory as full:
        if learner.device.type == "cuda":
            torch.cuda.empty_cache()
        return "failed", f"{full} "
    return "completed", ""


def _finish(learner: Learner, folder: RunFolder, state: str, note: str, active: ActiveTime) -> str:
    """Settle on the run's final weights, write its predictions, and say how it ended."""
    config = learner.config
    restore = (folder.best_checkpoint if config.keep_best and state == "completed" else
               folder.last_checkpoint if state == "failed" else None)
    if restore is not None and restore.exists():
        learner.classifier.model.load_state_dict(load_checkpoint(restore)["model"])
        note += "Kept the weights of the best epoch. " if restore == folder.best_checkpoint else \
            "The model of the last checkpoint is kept. "
    elif state == "failed":
        note += "No epoch had finished, so there is no model to keep."
        folder.finish(state, note.strip(), active_s=active())
        print(note, flush=True)
        return state
    elif state == "stopped" and not folder.last_checkpoint.exists():  # before the first step: nothing to predict with
        note += ending(state, learner, [], 0.0, resumable=False)
        folder.finish(state, note.strip(), step=learner.step, epoch=learner.epoch, active_s=active())
        print(note, flush=True)
        return state
    if not learner.world.is_main:
        return state
    evaluation = save_predictions(folder, learner)
    folder.update_status(model_checkpoint=(restore or folder.last_checkpoint).name)  # what on_fit_end exports
    learner.call("on_fit_end", {"accuracy": evaluation.accuracy, "state": state})
    message = note + ending(state, learner, folder.read_metrics().epochs, evaluation.accuracy,
                          kept_best=restore == folder.best_checkpoint, resumable=folder.last_checkpoint.exists())
    folder.finish(state, message, step=learner.step, epoch=learner.epoch, final_accuracy=evaluation.accuracy,
                  model_checkpoint=(restore or folder.last_checkpoint).name, eta_s=0.0, active_s=active(),
                  fraction=1.0 if state == "completed" else None)
    print(message, flush=True)
    return state


def ending(state: str, learner: Learner, epochs: list[dict], accuracy: float, kept_best: bool = False,
           resumable: bool = True) -> str:
    """How the run ended, numbered as the progress bar and the epoch table are: the epoch it stopped in (epochs
    finished + 1), and the validation accuracy of the table's row it names (`accuracy`, the final model's, only
    when there is no row)."""
    row = max(epochs, key=lambda r: r["accuracy"]) if kept_best and epochs else epochs[-1] if epochs else None
    said = "accuracy_multi" if row and "accuracy_multi" in row else "validation accuracy"  # label sets: fastai's name
    if state == "stopped":
        last = f"Last finished: epoch {row['epoch']}, {said} {row['accuracy']:.1%}." if row else \
            "No epoch had finished yet."
        if not resumable:  # stopped while the frozen layers' output was computed, before any step
            return "Stopped before the first training step, so there is nothing to resume: start it again."
        return (f"Stopped at epoch {learner.epoch + 1} of {learner.total_epochs}, step {learner.step} of "
                f"{learner.total_steps}; Resume goes on from there. {last}")
    if row is None:
        return f"Validation accuracy {accuracy:.1%}."
    return f"Epoch {row['epoch']}{' (the best)' if kept_best else ''}: {said} {row['accuracy']:.1%}."


def save_predictions(folder: RunFolder, learner: Learner) -> Evaluation:
    """Validation targets, calibrated and raw probabilities, losses, unknown scores and item ids (the input of
    every interpretation view), and the run's trust.npz (core.inspect.trust: temperature, "none of these" threshold)."""
    split = learner.split
    chunk = inference_batch_size(split.valid_images.shape[-1], learner.config.bs, learner.device)
    trust, logits, scores = fit_trust(learner.classifier.model, split.train_images, split.valid_images,
                                      split.valid_labels, seed=learner.config.seed, batch_size=chunk,
                                      device=learner.device)
    evaluation = Evaluation.from_logits(torch.from_numpy(logits), split.valid_labels)  # one pass over validation
    trust.save(folder.trust_path)
    multi = split.valid_labels.dim() == 2
    if multi:  # each label's threshold of best F1 on validation, kept for what will predict labels with the run
        write_thresholds(folder, best_thresholds(evaluation.probs, split.valid_labels.numpy()).tolist())
    probs = evaluation.probs if multi else calibrated(logits, trust.temperature)
    write_atomic(folder.predictions_path, lambda f: np.savez(
        f, targets=split.valid_labels.numpy(), probs=probs, raw_probs=evaluation.probs, losses=evaluation.losses,
        unknown_scores=scores, item_ids=split.valid_ids))
    return evaluation


def _sweep(folder: RunFolder, config: TrainConfig, device: torch.device, active: ActiveTime) -> str:
    _, split, classifier = prepare(folder, config, device)
    progress = lambda step, total: folder.update_status(  # noqa: E731
        state="running", step=step, total_steps=total) if step % 5 == 0 else None
    lrs, losses = sweep(classifier, split, batch_size=config.bs, device=device, pretrained=config.pretrained,
                        keep_bn_stats=keeps_bn_stats(config), seed=config.seed, on_step=progress)
    if len(lrs) < 5:
        raise DataError("The learning-rate finder failed: the loss exploded at once, even at the smallest rates.")
    suggestions = {"valley": suggest_valley(lrs, losses), "steep": suggest_steep(lrs, losses)}
    folder.write_lr_find(lrs.tolist(), losses.tolist(), suggestions)
    message = f"Suggested learning rate {suggestions['valley']:.1e} (valley); steepest {suggestions['steep']:.1e}."
    folder.finish("completed", message, step=len(lrs), total_steps=len(lrs), active_s=active())
    print(message, flush=True)
    return "completed"
