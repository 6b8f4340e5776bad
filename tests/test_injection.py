"""Names from a dataset, a file or a run folder are shown as text: never as markdown, HTML or a plotly link.

Class names no folder can carry ('/' separates paths) come from a labels CSV; the dataset's own folder and its image
files have hostile names too.
"""
import csv
import html
import json
import re

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from pages._figures import confusion_figure, image_grid, overlay_grid
from pages._text import WORD_JOINER as J
from pages._text import md, plot
from tests.conftest import ROOT, write_image_folder

HOSTILE = ["![x](http://example.invalid/x.png)", "a`b", '<a href="http://example.invalid">c</a>']
FOLDER_NAME = "set :red[d] **e** `f` <i>g $h$"  # the dataset's folder: its name is the source's label
MARKDOWN_FIELDS = {"body", "label", "options", "caption"}
PLAIN_FIELDS = {"text": {"body"}, "selectbox": {"options"}, "multiselect": {"options"}}  # shown as they are


@pytest.fixture(scope="module")
def hostile_folder(tmp_path_factory):
    """Three classes of 8 small PNGs, labelled by a CSV with hostile names, and a row for a file that is not there."""
    root = tmp_path_factory.mktemp("hostile") / FOLDER_NAME
    write_image_folder(root / "images", {f"c{k}": 8 for k in range(len(HOSTILE))})
    with open(root / "labels.csv", "w", newline="", encoding="utf-8") as f:
        rows = csv.writer(f)
        rows.writerow(["file", "label"])
        for k, name in enumerate(HOSTILE):
            for image in sorted((root / "images" / f"c{k}").iterdir()):
                renamed = image.rename(image.with_name(f"{image.stem} *[f]* `g`.png"))
                rows.writerow([f"images/c{k}/{renamed.name}", name])
        rows.writerow(["images/![s](http:example.invalid).png", HOSTILE[0]])
    return root


@pytest.fixture(scope="module")
def hostile_run(hostile_folder, tmp_path_factory):
    """A one-epoch run trained on the hostile folder by the command line entry (~5 s on two cores)."""
    from core.train.__main__ import main

    runs_dir = tmp_path_factory.mktemp("hostile_runs")
    assert main(["--data", str(hostile_folder), "--arch", "resnet18", "--no-pretrained", "--size", "32", "--bs", "16",
                 "--epochs", "1", "--freeze-epochs", "0", "--seed", "0", "--runs-dir", str(runs_dir),
                 "--name", "hostile"]) == 0
    return runs_dir / "hostile"


# md and plot, exactly


@pytest.mark.parametrize("text, escaped", [
    ("![x](http://example.invalid/x.png)", f"!\\[x\\](http:{J}//example.invalid/x.png)"),
    ("[link](http://example.invalid)", f"\\[link\\](http:{J}//example.invalid)"),
    ("a`b", "a\\`b"),
    ("*a* _b_ **c**", "\\*a\\* \\_b\\_ \\*\\*c\\*\\*"),
    ("$x$", "\\$x\\$"),
    (":red[x]", f"\\:{J}red\\[x\\]"),
    (":material/home:", f"\\:{J}material/home:"),
    (":smile: and :streamlit:", f"\\:{J}smile: and :{J}streamlit:"),
    ("<script>", "\\<script\\>"),
    ('<a href="http://example.invalid">x</a>', f'\\<a href="http:{J}//example.invalid"\\>x\\</a\\>'),
    ("www.example.invalid me@example.invalid", f"w{J}ww.example.invalid me@{J}example.invalid"),
    ("a -> b -- c", f"a -{J}\\> b -{J}- c"),
    ("one\ntwo\r\n\r\n# three", "one two \\# three"),
    ("- a", "\\- a"),
    ("1. a", "1\\. a"),
    ("back\\slash &amp; ~x~ |y|", "back\\\\slash \\&amp; \\~x\\~ \\|y\\|"),
    ("Great Pyrenees", "Great Pyrenees"),
    ("Zoë café 猫 (2), 3.5: a-b", "Zoë café 猫 (2), 3.5: a-b"),
])
def test_md_escapes_markdown_and_streamlits_rewrites_and_leaves_plain_names_as_they_read(text, escaped):
    assert md(text) == escaped


def test_md_turns_anything_into_its_text():
    assert md(None) == "None" and md(ValueError("bad *file*.png")) == "bad \\*file\\*.png"


@pytest.mark.parametrize("text, escaped", [
    ('<a href="http://example.invalid">x</a>', '&lt;a href="http://example.invalid"&gt;x&lt;/a&gt;'),
    ("<b>bold</b><br>", "&lt;b&gt;bold&lt;/b&gt;&lt;br&gt;"),
    ("<script>", "&lt;script&gt;"),
    ("a&amp;b", "a&amp;amp;b"),
    ("![x](http://example.invalid/x.png)", "![x](http://example.invalid/x.png)"),  # plotly reads no markdown
    ("a`b $x$ *y*", "a`b $x$ *y*"),
    ("Zoë café 猫", "Zoë café 猫"),
])
def test_plot_escapes_plotlys_html_subset_and_unescaping_gives_the_name_back(text, escaped):
    assert plot(text) == escaped
    assert html.unescape(plot(text)) == text


def test_figures_carry_names_escaped_in_axes_titles_and_hover():
    matrix = confusion_figure(np.eye(3, dtype=int), HOSTILE)
    assert list(matrix.data[0].x[:3]) == [plot(name) for name in HOSTILE]
    assert {html.unescape(v) for v in matrix.data[0].y} == set(HOSTILE)  # what the Interpret page does with a click
    images = np.zeros((3, 4, 4, 3), dtype=np.uint8)
    for figure in (image_grid(images, HOSTILE), overlay_grid(images, None, HOSTILE)):
        assert sorted(a.text for a in figure.layout.annotations) == sorted(plot(name) for name in HOSTILE)
    assert not [s for s in figure_strings(json.loads(matrix.to_json())) if "<a " in s]


# the pages, through AppTest


def markdown_sources(app: AppTest) -> list[str]:
    """Every string the page handed Streamlit to render as markdown: bodies, labels, radio options, captions."""
    found = []

    def strings(message, plain: set[str]):
        for field, value in message.ListFields():
            values = value if field.is_repeated else [value]
            if field.type == field.TYPE_MESSAGE:
                for item in values:
                    strings(item, plain)
            elif field.name in MARKDOWN_FIELDS - plain and field.type == field.TYPE_STRING:
                found.extend(values)

    def walk(node):
        if getattr(node, "proto", None) is not None:
            strings(node.proto, PLAIN_FIELDS.get(getattr(node, "type", None), set()))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(app.main)
    walk(app.sidebar)
    return found


def figure_strings(value) -> list[str]:
    """Every string in a figure's JSON (plotly's own JSON writes "<" as "\\u003c", so look after decoding)."""
    if isinstance(value, str):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [s for item in items for s in figure_strings(item)]


def plotly_strings(app: AppTest) -> list[str]:
    """Every string in every plotly figure on the page."""
    return [s for chart in app.get("plotly_chart") for s in figure_strings(json.loads(chart.proto.spec))]


def assert_shown_as_text(app: AppTest) -> None:
    assert not app.exception, [e.value for e in app.exception]
    sources = markdown_sources(app)
    for name in [*HOSTILE, FOLDER_NAME]:
        assert not [s for s in sources if name in s], name
    assert not [s for s in plotly_strings(app) if "<a " in s or "<i>" in s]


def open_page(page: str, **state) -> AppTest:
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    app.query_params["run"] = "hostile"
    for key, value in state.items():
        app.session_state[key] = value
    app.run()
    if page != "pages/home.py":
        app.switch_page(page).run()
    return app


def test_the_data_page_shows_hostile_class_file_and_folder_names_as_text(hostile_folder, hostile_run, monkeypatch):
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(hostile_run.parent))
    app = open_page("pages/data.py", data=str(hostile_folder))
    assert_shown_as_text(app)
    assert app.success[0].value == "Ready: 24 images in 3 classes (1 file(s) skipped)."
    assert app.sidebar.caption[0].value == f"**Dataset** · {md(FOLDER_NAME)}"
    counts, _samples = app.get("plotly_chart")
    assert sorted(json.loads(counts.proto.spec)["data"][0]["x"]) == sorted(plot(name) for name in HOSTILE)
    skipped = app.dataframe[0].value.to_dict("records")  # a table shows the names themselves
    assert skipped[0]["file"] == "images/![s](http:example.invalid).png"


def test_the_interpret_page_shows_hostile_class_names_as_text_in_captions_and_charts(hostile_run, monkeypatch):
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(hostile_run.parent))
    app = open_page("pages/interpret.py")
    assert_shown_as_text(app)
    sources = "\n".join(markdown_sources(app))
    assert " validation images of **" in sources and any(md(name) in sources for name in HOSTILE)
    charts = plotly_strings(app)
    assert all(plot(name) in charts for name in HOSTILE)  # the confusion matrix's axes name every class
    # the selectboxes show the names as they are, and choosing one works
    actual = next(s for s in app.selectbox if s.label == "Actual class")
    assert set(actual.options) == set(HOSTILE)
    actual.set_value(HOSTILE[1]).run()
    assert_shown_as_text(app)
    assert any(f"of **{md(HOSTILE[1])}** predicted as" in c.value for c in app.caption)


@pytest.mark.parametrize("page", ["pages/home.py", "pages/train.py", "pages/runs.py", "pages/layers.py",
                                  "pages/predict.py", "pages/fix.py"])
def test_every_other_page_shows_the_hostile_run_and_dataset_as_text(page, hostile_folder, hostile_run, monkeypatch):
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(hostile_run.parent))
    app = open_page(page, data=str(hostile_folder))
    assert_shown_as_text(app)


def test_the_html_report_escapes_hostile_names(hostile_run):
    import torch

    from core.inspect.interpret import load_predictions
    from core.runs.checkpoint import load_model
    from pages._report import run_report_html

    model, class_names, _ = load_model(hostile_run)
    predictions = load_predictions(hostile_run)
    images = torch.zeros((int(predictions.item_ids.max()) + 1, 3, 32, 32), dtype=torch.uint8)
    report = run_report_html(hostile_run, model, images, predictions, class_names)
    # the figures' JSON writes <, > and / as \u003c, \u003e and \u002f: read it as plotly.js will
    decoded = re.sub(r"\\u([0-9a-f]{4})", lambda m: chr(int(m[1], 16)), report).replace('\\"', '"')
    assert '<a href="http://example.invalid' not in decoded and "<i>g" not in decoded
    assert html.escape(HOSTILE[2]) in report  # the per-class table
    assert plot(HOSTILE[2]) in decoded  # the confusion matrix's axes


# one browser: only it shows what the markdown and plotly actually drew


LINKED = """() => [...document.querySelectorAll('img, a, image')].map(e =>
    e.getAttribute('src') || e.getAttribute('href') || e.getAttribute('xlink:href') || '')
    .filter(u => u.includes('example.invalid'))"""  # in the page and in plotly's SVG


def assert_nothing_rendered(page) -> None:
    """No image, link, italics, strikethrough, math, icon or colour came out of a name (the literal text checks
    cover bold and code, which the pages' own captions use)."""
    assert page.evaluate(LINKED) == []
    rendered = ("[data-testid=stMarkdownContainer] :is(img, a:not([href^='#']), em, del, .katex, [role=img], "
                ".stMarkdownColoredText)")  # headings' own anchor links start with #
    assert page.locator(rendered).count() == 0


def shown_text(page, part: str = "stMain") -> str:
    """The visible text of the page's main part or sidebar, word joiners (pages._text.WORD_JOINER) left out."""
    return page.get_by_test_id(part).inner_text().replace(J, "")


@pytest.mark.slow
def test_a_browser_draws_hostile_names_as_literal_text_and_fetches_nothing(hostile_folder, hostile_run):
    from playwright.sync_api import expect, sync_playwright

    from tests.browser_support import launch_chromium, streamlit_server

    with streamlit_server(hostile_run.parent) as url, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.set_default_timeout(60_000)
        expect.set_options(timeout=60_000)
        fetched = []
        page.on("request", lambda request: fetched.append(request.url) if "example.invalid" in request.url else None)

        page.goto(f"{url}/data")
        # the built-in set first, drawn whole: a rerun that interrupts the first import of pandas leaves it broken
        expect(page.locator(".js-plotly-plot")).to_have_count(2)
        page.get_by_text("A folder on this machine").click()
        path = page.get_by_label("Folder path", exact=True).and_(page.get_by_role("textbox"))
        path.fill(str(hostile_folder))
        path.press("Enter")
        expect(page.get_by_text("Ready: 24 images in 3 classes (1 file(s) skipped).")).to_be_visible()
        ticks = page.locator(".js-plotly-plot").first.locator(".xtick text")
        expect(ticks).to_have_count(3)  # the digits' chart had 10
        assert sorted(ticks.all_text_contents()) == sorted(HOSTILE)  # plotly drew the names, not a link
        # the sidebar names the dataset at the end of the script run that drew the chart: on a busy machine, a
        # moment after the chart is there
        page.wait_for_function("([name, joiner]) => document.querySelector('[data-testid=stSidebar]').innerText"
                               ".replaceAll(joiner, '').includes(name)", arg=[f"Dataset · {FOLDER_NAME}", J])
        assert_nothing_rendered(page)

        page.goto(f"{url}/interpret?run=hostile")
        expect(page.get_by_text("Titles read actual→predicted")).to_be_visible()  # below the last chart
        page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .annotation-text').length > 0")
        ticks = page.locator(".js-plotly-plot").first.locator(".xtick text")  # the confusion matrix's
        assert sorted(ticks.all_text_contents()) == sorted(HOSTILE)
        assert any(f"validation images of {name} predicted as " in shown_text(page) for name in HOSTILE)
        assert_nothing_rendered(page)
        assert fetched == []
        expect(page.get_by_test_id("stException")).to_have_count(0)
        browser.close()


def test_the_exported_web_page_carries_hostile_class_and_run_names_as_data():
    from core.ship.web import available, build_page

    assert available(), "onnxruntime-web: scripts/setup.sh fetches it"
    classes = [*HOSTILE, "</script><script>alert(1)</script>", "__APP__"]
    page = build_page(b"not a model", classes, 32, "squish", "run __ORT__ </title><b>x")
    assert page.count("globalThis.ort={") == 1 and page.count("const CFG = JSON.parse") == 1  # nothing pasted twice
    assert "<title>run __ORT__ &lt;/title&gt;&lt;b&gt;x</title>" in page
    config = re.search(r'<script type="application/json" id="config">(.*?)</script>', page, re.S).group(1)
    assert "<" not in config and json.loads(config)["classes"] == classes  # the page reads them back exactly
