"""Shared fixtures: a real one-epoch run on the digits set, and tiny generated image folders."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

# test.sh runs two pytest-xdist workers, each training with both cores' threads: OpenMP's threads then spin only
# briefly before they sleep (core/__init__.py, which sets this too, but some test modules load torch first), so two
# trainings share the cores instead of taking them from each other (bench.beside). Set before numpy and torch load.
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# Property tests run the full count of examples under CI (CI=true, or HYPOTHESIS_PROFILE=ci) and a fifth of it day
# to day; neither has a deadline, since an example's time depends on how busy the machine is.
settings.register_profile("ci", max_examples=60, deadline=None, database=None)
settings.register_profile("dev", max_examples=12, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

ROOT = Path(__file__).resolve().parent.parent

# A small run that finishes in seconds on two CPU cores: ResNet-18 from scratch at 32 px, one epoch.
TINY_RUN_ARGS = ["--data", "builtin:digits", "--arch", "resnet18", "--no-pretrained", "--size", "32", "--bs", "64",
                 "--epochs", "1", "--seed", "0", "--lr", "2e-3"]


def pytest_report_header(config) -> str:
    """The suite writes run folders of ~135 MB under the temporary folder (a passed test's go at its teardown,
    pytest.ini): with too little disk every training fails at once, so say how much there was."""
    import tempfile

    free = shutil.disk_usage(tempfile.gettempdir()).free / 2**30
    warning = " (under 3 GB: trainings may fail)" if free < 3 else ""
    return f"free disk under {tempfile.gettempdir()}: {free:.1f} GB{warning}"


_SESSION_DATA: list[str] = []  # the data folder this test session made for itself


@pytest.fixture(scope="session", autouse=True)
def _private_data_folder(tmp_path_factory):
    """Downloads, uploads and edit logs of the test session go to a folder of its own, never to data/."""
    if "STUDIO_DATA_DIR" not in os.environ:
        os.environ["STUDIO_DATA_DIR"] = str(tmp_path_factory.mktemp("data"))
        _SESSION_DATA.append(os.environ["STUDIO_DATA_DIR"])


@pytest.fixture(autouse=True)
def _default_settings():
    """Every test opens the dashboard at the default settings: what one test's pages saved (core.runs.settings) is not
    the next one's starting point. Only in the folder this session made: never a person's own settings."""
    if os.environ.get("STUDIO_DATA_DIR") in _SESSION_DATA:
        from core.runs.settings import settings_path

        settings_path().unlink(missing_ok=True)


def made_once(tmp_path_factory, name: str, make) -> tuple[Path, str]:
    """(a folder, what `make` said) for a session fixture: `make(folder)` fills the folder and returns a text. Under
    pytest-xdist the first worker to need it makes it under a lock in the folder the workers share, and the others
    read it there (the pattern pytest-xdist documents), so no reference run is trained twice."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        folder = tmp_path_factory.mktemp(name)
        return folder, make(folder)
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent  # this session's, above every worker's own
    folder, said = shared / f"made-{name}", shared / f"made-{name}.txt"
    with FileLock(str(shared / f"made-{name}.lock")):
        if not said.exists():
            shutil.rmtree(folder, ignore_errors=True)  # what a worker whose making failed left
            folder.mkdir()
            said.write_text(make(folder))
    return folder, said.read_text()


def _train(args: list[str]) -> str:
    from core.train.__main__ import main

    assert main(args) == 0
    return ""


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A completed run folder made by the real command line entry."""
    runs_dir, _ = made_once(tmp_path_factory, "runs", lambda runs_dir: _train(
        [*TINY_RUN_ARGS, "--runs-dir", str(runs_dir), "--name", "tiny"]))
    return runs_dir / "tiny"


@pytest.fixture(scope="session")
def warm_run(tmp_path_factory) -> Path:
    """A completed pretrained run of the digits at 32 px: 2 frozen epochs on cached features, then 1 unfrozen."""
    runs_dir, _ = made_once(tmp_path_factory, "warm", lambda runs_dir: _train(
        ["--data", "builtin:digits", "--size", "32", "--epochs", "1", "--freeze-epochs", "2", "--seed", "0",
         "--runs-dir", str(runs_dir), "--name", "warm"]))
    return runs_dir / "warm"


@pytest.fixture(scope="session")
def sweep_run(tmp_path_factory) -> Path:
    """A completed learning-rate sweep (--lr-find) of ResNet-18 from scratch on the digits at 16 px."""
    sweep_args = [a for a in TINY_RUN_ARGS if a not in ("--epochs", "1")]
    runs_dir, _ = made_once(tmp_path_factory, "sweep", lambda runs_dir: _train(
        [*sweep_args, "--size", "16", "--lr-find", "--runs-dir", str(runs_dir), "--name", "sweep"]))
    return runs_dir / "sweep"


def _export(trained_run: Path, folder: Path) -> str:
    import contextlib
    import io

    from core.ship.export import main

    shutil.copytree(trained_run, folder / "tiny")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([str(folder / "tiny")]) == 0
    return printed.getvalue()


@pytest.fixture(scope="session")
def exported(trained_run, tmp_path_factory) -> tuple[Path, str]:
    """(a copy of the shared digits run exported once by the command line, what the command printed): an export
    writes into its run folder, so the shared run itself stays as it was trained."""
    folder, printed = made_once(tmp_path_factory, "export", lambda folder: _export(trained_run, folder))
    return folder / "tiny", printed


def linked_copy(run_dir: Path, to: Path) -> Path:
    """A copy of a reference run made of hard links: every write replaces a file, so the original stays as it was."""
    shutil.copytree(run_dir, to, copy_function=os.link)
    return to


@pytest.fixture
def server(tmp_path, monkeypatch):
    """`streamlit run app.py` on a free port with a private data and runs folder: (its URL, the runs folder)."""
    from tests.browser_support import streamlit_server

    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))
    with streamlit_server(tmp_path / "runs") as url:
        yield url, tmp_path / "runs"


@pytest.fixture
def runs_env(trained_run, monkeypatch) -> Path:
    """STUDIO_RUNS_DIR pointing at the folder that holds `trained_run`."""
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(trained_run.parent))
    return trained_run.parent


def write_image_folder(root: Path, classes: dict[str, int], size: int = 12, seed: int = 0) -> Path:
    """Class-per-folder PNGs: class k is a solid colour plus noise, so classes are learnable and distinct."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k, (name, count) in enumerate(classes.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        colour = np.array([(k * 97) % 256, (k * 57 + 80) % 256, (k * 31 + 160) % 256])
        for i in range(count):
            pixels = np.clip(colour + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return write_image_folder(tmp_path / "shapes", {"red": 6, "green": 6, "blue": 6})


os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def multilabel_run(tmp_path_factory) -> Path:
    """A completed pretrained run of label sets (tests.mosaics: 300 mosaics of the digits 0-4, labelled with the
    digits they show) at 32 px: 2 frozen epochs on cached features, then 2 more; its data folder is the run's
    sibling `mosaics`."""
    from tests.mosaics import write_mosaics

    def make(folder: Path) -> str:
        write_mosaics(folder / "mosaics", n=300, seed=1)
        return _train(["--data", str(folder / "mosaics"), "--size", "32", "--freeze-epochs", "2", "--epochs", "2",
                       "--seed", "0", "--runs-dir", str(folder), "--name", "ml"])

    folder, _ = made_once(tmp_path_factory, "multilabel", make)
    return folder / "ml"
