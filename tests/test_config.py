"""One config surface: every TrainConfig field is a flag, a config spells itself as flags and reads back equal,
and a config built anywhere is checked by the config itself."""
import dataclasses
import shlex

import pytest

from core.config import PRESETS, TrainConfig
from core.runs import store
from core.runs.folder import RunFolder
from core.train.__main__ import config_from_args, parse_args
from core.train.run import run_training


def test_every_field_is_a_flag_and_a_config_spelled_as_flags_reads_back_equal(tmp_path):
    weights = tmp_path / "a b.safetensors"
    weights.write_bytes(b"")
    changed = TrainConfig(data="/some folder/with 'quotes'", label_regex=r"^(.+)_\d+", resize="crop", arch="resnet18",
                          pretrained=False, size=32, bs=16, epochs=7, freeze_epochs=2, lr=3e-3, unfrozen_lr_min=1e-6,
                          unfrozen_lr_max=1e-4, wd=0.05, label_smoothing=0.1, patience=3, adapt_bn=True,
                          keep_best=True, valid_pct=0.25, seed=7, flip=True, rotate=10.0, zoom=1.1, lighting=0.2,
                          balance="weights", track="mlflow,tensorboard", weights=str(weights),
                          unfreeze="all", edits_upto=3)
    assert all(getattr(changed, f.name) != f.default for f in dataclasses.fields(TrainConfig))  # every field moved
    assert config_from_args(parse_args(changed.cli_args())) == changed
    assert config_from_args(parse_args(TrainConfig().cli_args())) == TrainConfig()
    words = shlex.split(changed.cli_command())  # quoted for a shell: the path with spaces stays one word
    assert words[:3] == ["python", "-m", "core.train"] and "/some folder/with 'quotes'" in words


def test_a_preset_fills_in_what_was_not_typed_and_aug_is_fastais_set():
    config = config_from_args(parse_args(["--preset", "lesson1", "--size", "128", "--aug"]))
    assert config.size == 128 and config.arch == PRESETS["lesson1"]["arch"]
    assert (config.flip, config.rotate, config.zoom, config.lighting) == (True, 10.0, 1.1, 0.2)
    assert config_from_args(parse_args(["--aug", "--no-flip"])).flip is False  # a typed flag beats --aug


def test_the_config_checks_itself_and_the_command_line_says_what_is_wrong():
    assert TrainConfig().problems() == {}
    bad = TrainConfig(arch="alexnet", size=8, valid_pct=1.5, lr=float("nan"))
    assert set(bad.problems()) == {"arch", "size", "valid_pct", "lr"}
    with pytest.raises(SystemExit, match="--size must be at least 16 pixels"):
        config_from_args(parse_args(["--size", "8"]))


def test_a_run_with_settings_that_cannot_train_fails_with_a_sentence(tmp_path):
    run_dir = store.create_run(TrainConfig(size=8, bs=0), tmp_path, "bad")  # as a page or a script could make it
    assert run_training(run_dir) == "failed"
    message = RunFolder(run_dir).status()["message"]
    assert message.startswith("These settings cannot be trained:") and "size must be at least 16 pixels" in message
    assert "bs must be at least 1" in message


def test_the_reproduce_command_quotes_the_runs_folder(tmp_path):
    runs_dir = tmp_path / "my runs; rm -rf x"
    run_dir = store.create_run(TrainConfig(), runs_dir, "quoted")
    words = shlex.split(RunFolder(run_dir).command)
    assert words[words.index("--runs-dir") + 1] == str(runs_dir) and words[-1] == "quoted"
