"""The Interpret page and the HTML report: Grad-CAM that says what it read (or why it cannot), titles that fit,
a matrix that stays opaque, and a report that names the dataset as people know it."""
import html
import io
import json
import zipfile

import pytest
from streamlit.testing.v1 import AppTest

from core.data.sources import source_label
from tests.conftest import ROOT, write_image_folder

TIMEOUT = 120


@pytest.fixture(scope="module")
def small_upload_run(tmp_path_factory):
    """A real run at 16 px on a zip as the Data page unpacks an upload (data/uploads/<stem>-<hash>/)."""
    from core.data.archive import unpack
    from core.train.__main__ import main

    folder = write_image_folder(tmp_path_factory.mktemp("photos") / "pets", {"cat": 8, "dog": 8}, size=16)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*.png")):
            archive.write(path, path.relative_to(folder.parent).as_posix())
    unpacked = unpack(buffer.getvalue(), "my-pets", file_name="my pets.zip").folder
    runs_dir = tmp_path_factory.mktemp("runs16")
    assert main(["--data", str(unpacked), "--arch", "resnet18", "--no-pretrained", "--size", "16", "--bs", "8",
                 "--epochs", "1", "--seed", "0", "--runs-dir", str(runs_dir), "--name", "small"]) == 0
    return runs_dir / "small"


def open_interpret(runs_dir, monkeypatch, run_id: str) -> AppTest:
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(runs_dir))
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    app.query_params["run"] = run_id
    app.run()
    app.switch_page("pages/interpret.py").run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def figures(app) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]


def test_top_losses_name_their_grad_cam_layer_and_draw_smooth_heat_over_a_colour_scale(runs_env, monkeypatch):
    app = open_interpret(runs_env, monkeypatch, "tiny")
    assert any("Grad-CAM reads layer 0.4.1" in c.value and "8×8 cells at 32 px" in c.value for c in app.caption)
    charts = figures(app)
    top_losses = next(f for f in charts if any(t["type"] == "heatmap" for t in f["data"]))
    heats = [t for t in top_losses["data"] if t["type"] == "heatmap"]
    assert len(heats) == 12 and all(t["zsmooth"] == "best" and (t["zmin"], t["zmax"]) == (0, 1) for t in heats)
    assert [t["showscale"] for t in heats] == [True] + [False] * 11  # one colour scale, for all of them
    # none of its colours is one of the placeholders (#000001-#000020) Streamlit's theme repaints (Inferno's first)
    assert not [c for _, c in heats[0]["colorscale"] if "#000001" <= c.lower() <= "#000020"]
    titles = [a["text"] for a in top_losses["layout"]["annotations"]]
    assert len(titles) == 12 and all(t.count("<br>") == 1 and t.split("<br>")[1].startswith("loss ") for t in titles)
    assert len({round(a["x"], 3) for a in top_losses["layout"]["annotations"]}) == 4  # in four columns
    # the matrix: a click selects a cell, and neither the chosen nor the other cells fade
    matrix = charts[0]["data"][0]
    assert matrix["selected"]["marker"]["opacity"] == 1 and matrix["unselected"]["marker"]["opacity"] == 1


def test_the_matrix_cell_images_sit_beside_the_matrix(runs_env, monkeypatch):
    app = open_interpret(runs_env, monkeypatch, "tiny")
    matrix_column, cell_column = [c for c in app.columns if c.get("plotly_chart")][:2]  # side by side, in order
    assert json.loads(matrix_column.get("plotly_chart")[0].proto.spec)["layout"]["xaxis"]["title"]["text"] == \
        "Predicted"
    assert [s.label for s in cell_column.selectbox] == ["Actual class", "Predicted as"]
    assert any("validation images of" in c.value for c in cell_column.caption)
    assert len(json.loads(cell_column.get("plotly_chart")[0].proto.spec)["data"]) > 0  # its images


def test_at_16_px_the_page_says_grad_cam_cannot_help_and_draws_no_heat(small_upload_run, monkeypatch):
    app = open_interpret(small_upload_run.parent, monkeypatch, "small")
    assert any("At 16 px" in i.value and "cannot show where the model looked" in i.value for i in app.info)
    assert not any(t["type"] == "heatmap" for f in figures(app) for t in f["data"])


def test_the_report_names_the_uploaded_zip_and_explains_its_missing_heat(small_upload_run):
    import streamlit  # noqa: F401  as in the app: importing it makes its placeholder template plotly's default

    from core.data.load import load_source
    from core.inspect.interpret import load_predictions
    from core.runs.checkpoint import load_model
    from core.runs.folder import RunFolder
    from pages._report import run_report_html

    model, class_names, config = load_model(small_upload_run)
    label = source_label(config.data)
    assert "my pets.zip" in label and "my-pets-" in config.data  # the folder is hashed, the name is not
    data = load_source(config.data, config.size, edits=False)
    position = {name: i for i, name in enumerate(data.item_names)}
    images = data.images[[position[name] for name in RunFolder(small_upload_run).data_items()]]
    report = run_report_html(small_upload_run, model, images, load_predictions(small_upload_run), class_names)
    assert f"Dataset <b>{html.escape(label)}</b>" in report and f"<td>{html.escape(label)}</td>" in report
    assert "At 16 px no layer" in report and '"zsmooth":"best"' not in report  # no heat drawn
    # exported charts carry a template that makes room for their tick labels, not Streamlit's placeholder
    assert report.count('"automargin":true') >= 4 and "#000011" not in report
