"""A run's command trains on the data the run had: the dataset's edits as they stood when it read them, whatever was
fixed since; its report says which edits those were and how far its probabilities can be trusted."""
import shlex

from core.data.load import edit_log_for
from core.inspect.interpret import load_predictions
from core.runs.folder import RunFolder
from core.train.__main__ import main
from tests.conftest import write_image_folder


def train(args: list[str], runs_dir, name: str) -> RunFolder:
    assert main([*args, "--runs-dir", str(runs_dir), "--name", name]) == 0
    return RunFolder(runs_dir / name)


def test_a_runs_command_trains_on_the_data_it_had_whatever_was_fixed_since(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))  # this test's own edit logs
    data = write_image_folder(tmp_path / "shapes", {"red": 10, "green": 10, "blue": 10})
    log = edit_log_for(str(data))
    log.append([{"file": "red/0.png", "label": "green", "was": "red"}], "test")
    runs = tmp_path / "runs"
    first = train(["--data", str(data), "--arch", "resnet18", "--no-pretrained", "--size", "16", "--epochs", "1",
                   "--bs", "8", "--seed", "0"], runs, "first")
    assert first.data_items()["red/0.png"] == "green"

    log.append([{"file": "red/1.png", "label": None, "was": "red"}], "test")  # fixed after the run
    log.append([{"file": "green/0.png", "label": "blue", "was": "green"}], "test")
    log.undo()  # and one taken back: four entries in the log now
    command = first.reproduce_command()
    assert command.endswith("--edits-upto 1")
    again = train(shlex.split(command)[3:], runs, "again")  # what follows `python -m core.train`
    assert again.data_items() == first.data_items()
    assert again.data_record()["edits"] == first.data_record()["edits"]

    today = train(shlex.split(first.command)[3:], runs, "today")  # the command as asked: today's data
    assert "red/1.png" not in today.data_items() and len(today.data_items()) == len(first.data_items()) - 1
    assert today.reproduce_command().endswith("--edits-upto 4")
    assert first.edits_upto(first.config()) == 1  # a resume or an export of the first run reads its own edits


def test_the_report_names_the_edits_the_run_read_and_its_calibration(tmp_path, monkeypatch):
    from pages._report import _data_section, _trust_section

    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))
    data = write_image_folder(tmp_path / "shapes", {"red": 10, "green": 10})
    edit_log_for(str(data)).append([{"file": "red/0.png", "label": None, "was": "red"},
                                    {"file": "green/3.png", "keep": True}], "test")
    run = train(["--data", str(data), "--arch", "resnet18", "--no-pretrained", "--size", "16", "--epochs", "1",
                 "--bs", "8", "--seed", "0"], tmp_path / "runs", "edited")
    section = _data_section(run)
    assert "1 batch of edits in force: 0 relabelled, 1 removed, 1 marked right" in section
    assert "edit log as it stood at 1 entry; later fixes are not in this run" in section
    trust = _trust_section(run, load_predictions(run.path), 2)
    assert "calibration error (ECE, 15 bins)" in trust and "temperature" in trust
    assert "not one of the 2 classes" in trust
