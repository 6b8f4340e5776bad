"""Exports that predict exactly like the app: ONNX and TorchScript of a real digits run, checked image by image."""
import io
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from core.config import RESIZE_METHODS, TrainConfig
from core.data.images import open_rgb
from core.data.load import Split, load_source
from core.inspect.trust import load_trusted_model
from core.runs.folder import RunFolder
from core.ship.export import (
    EXPORT_FILES,
    FORMATS,
    ExportError,
    describe,
    main,
    preprocessing,
    read_verification,
    verify_export,
    zip_export,
)
from tests.conftest import ROOT, linked_copy

pytestmark = pytest.mark.slow  # ./test.sh -m "not slow" leaves these out

# The README's recipe, run as it is written from inside the unzipped export folder ("photo.jpg" is swapped for a file).
RECIPE = '''
import json, numpy as np, onnxruntime
from PIL import Image, ImageOps
prep, classes = (json.load(open(f"{name}.json")) for name in ("preprocessing", "classes"))
size, image = prep["size"], Image.open("photo.jpg")
image.draft("RGB", (2 * size, 2 * size))  # JPEGs decode at the app's reduced scale
image = ImageOps.exif_transpose(image).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
session = onnxruntime.InferenceSession("model.onnx")
probabilities, score, unknown = session.run(None, {"pixels": np.asarray(image)[None]})  # (1, size, size, 3) uint8
print("none of these" if unknown[0] else classes[probabilities[0].argmax()], f"{probabilities[0].max():.1%}")
'''


def run_outputs(run_dir: Path, pixels: np.ndarray) -> dict[str, list[np.ndarray]]:
    """Each full-precision exported file's (probabilities, unknown_score, unknown) for pixels (B, S, S, 3) uint8:
    onnxruntime, torch.jit, the LiteRT interpreter."""
    import onnxruntime

    from core.ship.mobile import tflite_runner

    folder = RunFolder(run_dir).export_folder
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        scripted = [t.numpy() for t in torch.jit.load(str(folder / "model.torchscript.pt"))(torch.from_numpy(pixels))]
    return {"onnx": session.run(None, {"pixels": pixels}), "torchscript": scripted,
            "tflite": tflite_runner(folder / "model.tflite")(pixels)}


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_onnx_and_torchscript_give_the_apps_probabilities_and_unknown_scores_for_hwc_uint8_pixels(exported):
    run_dir, _ = exported
    trusted, class_names, config = load_trusted_model(run_dir)
    images = load_source(config.data, config.size).images[:48]  # real digits, (48, 3, 32, 32) uint8
    noise = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32), dtype=np.uint8))
    images = torch.cat([images, noise])
    with torch.no_grad():
        probabilities, scores = trusted(images)
    pixels = images.permute(0, 2, 3, 1).numpy().copy()  # (50, 32, 32, 3): what PIL and numpy give
    for batch in (pixels, pixels[:1]):  # any batch size (LiteRT's file takes one image a call; its runner loops)
        for name, (p, s, unknown) in run_outputs(run_dir, batch).items():
            assert p.dtype == np.float32 and p.shape == (len(batch), len(class_names)), name
            assert s.dtype == np.float32 and unknown.dtype == np.bool_ and s.shape == unknown.shape == (len(batch),)
            assert np.allclose(p, probabilities[:len(batch)].numpy(), atol=1e-4), name
            assert np.allclose(s, scores[:len(batch)].numpy(), atol=1e-4), name
            assert (unknown == (s > trusted.threshold)).all(), name
    assert np.allclose(probabilities.sum(1), 1, atol=1e-5)
    with torch.no_grad():  # TorchScript takes float pixels too (test-time augmentation's copies), as TrustedModel does
        scripted = torch.jit.load(str(RunFolder(run_dir).export_folder / "model.torchscript.pt"))
        assert torch.allclose(scripted(torch.from_numpy(pixels).float() * 0.5)[0], trusted(images.float() * 0.5)[0],
                              atol=1e-4)


def test_verification_covers_the_whole_validation_set_and_agrees_fully(exported):
    run_dir, printed = exported
    trusted, class_names, config = load_trusted_model(run_dir)
    n = len(Split.from_dataset(load_source(config.data, config.size), config.valid_pct, config.seed).valid_labels)
    folder = RunFolder(run_dir).export_folder
    verification = json.loads((folder / "verification.json").read_text())
    assert set(verification) == {"n", "multi_label", "onnx_top1_agreement", "torchscript_top1_agreement",
                                 "unknown_agreement", "unknown_ties", "max_probability_difference",
                                 "max_unknown_score_difference", "accuracy", "checkpoint", "int8", "sizes",
                                 "tflite_top1_agreement", "coreml"}
    assert verification["n"] == n == 359
    assert verification["onnx_top1_agreement"] == verification["torchscript_top1_agreement"] == 1.0
    assert verification["tflite_top1_agreement"] == 1.0
    assert verification["unknown_agreement"] == {"onnx": 1.0, "torchscript": 1.0, "tflite": 1.0}
    # Core ML runs only on Apple systems: its converted program carries the interface, the classes and threshold
    assert verification["coreml"] == {
        "inputs": [["image", "imageType"]], "class_labels": class_names, "threshold": trusted.threshold,
        "outputs": [["classLabel", "stringType"], ["classLabelProbs", "dictionaryType"],
                    ["unknown_score", "multiArrayType"], ["unknown", "multiArrayType"]]}
    assert max(verification["max_probability_difference"].values()) < 1e-4
    # the run's own accuracy: the temperature never changes which class wins
    assert len(set(verification["accuracy"].values())) == 1
    # the int8 file: a third of the bytes, its agreement and accuracy measured beside the full one
    sizes = verification["sizes"]
    for name, file in (("onnx", "model.onnx"), ("tflite", "model.tflite")):
        int8 = verification["int8"][name]
        assert sizes[file.replace("model.", "model.int8.")] < 0.35 * sizes[file] and int8["top1_agreement"] >= 0.99
        assert abs(int8["accuracy"] - verification["accuracy"]["app"]) <= 0.01
    assert set(sizes) == {*EXPORT_FILES, *(f for files in FORMATS.values() for f in files)} - {"verification.json"}
    assert verification["accuracy"]["app"] == pytest.approx(RunFolder(run_dir).status()["final_accuracy"], abs=1e-6)
    assert read_verification(run_dir) == verification
    summary = describe(verification)
    assert summary == f"Verified on 359 validation images: ONNX agrees 100.0%, TorchScript 100.0%, TFLite 100.0%; " \
                      f"accuracy {verification['accuracy']['app']:.1%}."
    zip_path = folder / "tiny.zip"
    assert printed.splitlines() == [str(zip_path), summary]
    with zipfile.ZipFile(zip_path) as archive:
        packaged = {name.split(".mlpackage/")[0] + ".mlpackage" if ".mlpackage/" in name else name
                    for name in archive.namelist()}  # Core ML's package is a folder of files
        assert packaged == {f"tiny/{name}" for name in [*sizes, "verification.json"]}
        assert json.loads(archive.read("tiny/classes.json")) == class_names
    with zipfile.ZipFile(io.BytesIO(zip_export(run_dir))) as archive:
        assert json.loads(archive.read("tiny/verification.json")) == verification
        # every file opens for whoever unzips it (safetensors writes the weights 600 here)
        assert {(info.external_attr >> 16) & 0o777 for info in archive.infolist()} == {0o644}


def test_weights_and_preprocessing_json_describe_the_model(exported):
    from safetensors.torch import load_file

    from core.runs.checkpoint import load_model

    run_dir, _ = exported
    model, class_names, config = load_model(run_dir)
    trusted, _, _ = load_trusted_model(run_dir)
    folder = RunFolder(run_dir).export_folder
    weights = load_file(str(folder / "weights.safetensors"))
    assert weights.keys() == model.state_dict().keys()
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    prep = json.loads((folder / "preprocessing.json").read_text())
    assert (prep["size"], prep["resize"], prep["arch"]) == (32, "squish", "resnet18")
    assert prep["input"] == {"name": "pixels", "dtype": "uint8", "shape": ["batch", 32, 32, 3],
                             "layout": "channels last: (batch, height, width, RGB)", "range": "0..255"}
    assert [(o["name"], o["dtype"], o["shape"]) for o in prep["outputs"]] == [
        ("probabilities", "float32", ["batch", 10]), ("unknown_score", "float32", ["batch"]),
        ("unknown", "bool", ["batch"])]
    assert prep["unknown_threshold"] == trusted.threshold and prep["temperature"] == float(trusted.temperature)
    assert prep["augment"] == {"flip": config.flip, "rotate": config.rotate, "zoom": config.zoom,
                               "lighting": config.lighting}


def test_the_readme_recipe_with_preprocessing_json_alone_agrees_with_core_predict(exported, tmp_path, capsys):
    from PIL import Image

    from core.ship.predict import main as predict_main

    run_dir, _ = exported
    digits = load_source("builtin:digits", 32).images[:6].permute(0, 2, 3, 1).numpy()
    files = []
    for i, pixels in enumerate(digits):  # not square and not at the run's size: the resize matters
        files.append(tmp_path / f"digit{i}.png")
        Image.fromarray(pixels).resize((48, 40), Image.Resampling.NEAREST).save(files[-1])
    files.append(tmp_path / "noise.png")
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (50, 50, 3), dtype=np.uint8)).save(files[-1])
    assert predict_main([str(run_dir), *map(str, files), "--json"]) == 0
    predicted = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = ["none of these" if row["unknown"] else row["top"][0][0] for row in predicted]
    recipe = [subprocess.run([sys.executable, "-c", RECIPE.replace("photo.jpg", str(path))], check=True,
                             capture_output=True, text=True, cwd=RunFolder(run_dir).export_folder).stdout
              for path in files]
    assert [out.rsplit(" ", 1)[0] for out in recipe] == expected
    assert [out.split()[-1] for out in recipe] == [f"{row['top'][0][1]:.1%}" for row in predicted]
    assert expected[-1] == "none of these" and expected[:6] != ["none of these"] * 6  # noise is no digit


def test_preprocessing_steps_decode_every_kind_of_file_exactly_as_the_app_does(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation: rotated a quarter turn
    photo.save(tmp_path / "photo.jpg", exif=exif)  # 640 × 480: draft decodes it at a quarter of the size
    Image.fromarray(rng.integers(0, 256, (30, 50, 4), dtype=np.uint8), "RGBA").save(tmp_path / "clear.png")
    Image.fromarray(rng.integers(0, 65535, (40, 20), dtype=np.uint16)).save(tmp_path / "wide.png")  # 16-bit grey
    paletted = Image.fromarray(rng.integers(0, 256, (25, 35, 3), dtype=np.uint8)).convert("P")
    paletted.save(tmp_path / "palette.gif", transparency=0)
    assert Image.open(tmp_path / "wide.png").mode.startswith("I")
    for resize in RESIZE_METHODS:
        steps = preprocessing(TrainConfig(size=24, resize=resize), 0.5, 1.0, 10)["steps"]
        for path in sorted(tmp_path.iterdir()):
            scope = {"path": path, "size": 24, "np": np}
            exec("\n".join(steps), scope)  # noqa: S102 - the recipe as preprocessing.json gives it
            app = open_rgb(path, 24, resize).permute(1, 2, 0).numpy()
            assert scope["pixels"].shape == (1, 24, 24, 3) and scope["pixels"].dtype == np.uint8
            assert np.array_equal(scope["pixels"][0], app), (resize, path.name)


def test_an_export_checked_against_a_changed_model_fails_with_a_sentence(exported, tmp_path):
    run_dir = tmp_path / "changed"
    shutil.copytree(exported[0], run_dir)
    # The old files against a model whose head now says class k+1 where it said k: a real second model.
    checkpoint = RunFolder(run_dir).model_checkpoint()
    state = torch.load(checkpoint, weights_only=True)
    head = sorted(key for key in state["model"] if key.startswith("1."))  # ["1.3.bias", "1.3.weight"]
    for key in head:
        state["model"][key] = state["model"][key].roll(1, dims=0)
    torch.save(state, checkpoint)
    with pytest.raises(ExportError) as refused:
        verify_export(run_dir)
    # The int8 files disagree with the float model on a few images anyway: one of those may land on the rolled class.
    assert re.fullmatch(
        r"The export does not predict like the app: model\.onnx chose another class than the app for 359 of 359 and "
        r"model\.torchscript\.pt chose another class than the app for 359 of 359 and model\.tflite chose another "
        r"class than the app for 359 of 359 and model\.int8\.onnx chose another class than the app for 3[45]\d of 359 "
        r"and model\.int8\.tflite chose another class than the app for 3[45]\d of 359 validation images\. Do not use "
        r"these files; export again, and if it fails again, train the run again\.", str(refused.value)), refused.value
    assert not (RunFolder(run_dir).export_folder / "verification.json").exists() and read_verification(run_dir) is None


def test_the_command_line_refuses_a_run_without_calibration_in_one_sentence(exported, tmp_path, capsys):
    run_dir = tmp_path / "old"
    shutil.copytree(exported[0], run_dir)
    (run_dir / "trust.npz").unlink()
    assert main([str(run_dir)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("Run old has no calibration (trust.npz)") and "\n" not in error


def test_the_runs_page_shows_the_verification_beside_the_download(exported, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from pages._export import USES
    from pages._text import md

    runs_dir = tmp_path / "runs"
    shutil.copytree(exported[0], runs_dir / "tiny")
    shutil.copytree(exported[0], runs_dir / "old", ignore=shutil.ignore_patterns("export", "trust.npz"))
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(runs_dir))

    def runs_page(run_id: str) -> AppTest:
        app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        app.query_params["run"] = run_id
        app.run()
        app.switch_page("pages/runs.py").run()
        assert not app.exception, [e.value for e in app.exception]
        return app

    app = runs_page("tiny")
    assert md(describe(read_verification(runs_dir / "tiny"))) in [c.value for c in app.caption]
    assert app.get("download_button")
    [formats] = [frame.value for frame in app.dataframe if "file" in frame.value.columns]  # each file, its size
    assert list(formats["file"]) == ["model.onnx", "model.torchscript.pt", "model.tflite", "model.int8.onnx",
                                     "model.int8.tflite", "model.mlpackage", "web/index.html"]
    assert all(size.endswith(" MB") for size in formats["size"]) and formats["precision"][3] == "int8"
    assert [e.label for e in app.expander][-len(USES):] == [title for _, title, _, _ in USES]  # how each is used
    app = runs_page("old")  # never exported, and too old to export: a click says why in a sentence
    assert not app.get("download_button")
    next(b for b in app.button if b.label == "Export and verify").click().run()
    assert not app.exception and "has no calibration (trust.npz)" in app.error[0].value
    assert not app.get("download_button")


def test_a_verification_whose_files_have_gone_is_not_shown_and_an_unknown_format_is_refused(exported, tmp_path,
                                                                                            capsys):
    run_dir = linked_copy(exported[0], tmp_path / "copy")
    assert read_verification(run_dir) is not None
    written = RunFolder(run_dir).export_folder / "verification.json"
    verification = written.read_text()
    written.unlink()  # a hard link: replaced, not written through
    written.write_text(json.dumps({k: v for k, v in json.loads(verification).items() if k != "sizes"}))
    assert read_verification(run_dir) is None  # as the app wrote it before it measured sizes: export again
    written.write_text(verification)
    assert read_verification(run_dir) is not None
    (RunFolder(run_dir).export_folder / "web" / "index.html").unlink()  # measured, then removed by hand
    assert read_verification(run_dir) is None
    assert main([str(run_dir), "--formats", "web,gif"]) == 2
    assert capsys.readouterr().err.strip() == ("There is no export format 'gif'; the formats are "
                                               f"{', '.join(FORMATS)}.")
