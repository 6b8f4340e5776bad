"""What only a browser shows on the Interpret page and in its HTML report: titles and toolbars that keep out of
each other's way, a matrix that stays opaque after a click with the cell's images in view, and a report whose
charts keep their axis values and row names when opened without the app; on the Map page, a thumbnail under the
pointer and a lasso that opens the images it drew around."""
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect, sync_playwright

from tests.browser_support import launch_chromium, new_page, streamlit_server

pytestmark = pytest.mark.slow  # ./test.sh -m "not slow" leaves these out

BOXES = """(selector) => [...document.querySelectorAll(selector)].map(e => e.getBoundingClientRect())
    .filter(b => b.width > 0 && b.height > 0).map(b => [b.left, b.top, b.right, b.bottom])"""


def overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def chart_boxes(page, index: int, part: str) -> list:
    """Boxes of one kind of text (e.g. '.annotation-text') in the index-th plotly chart on the page."""
    return page.evaluate(f"""(i) => {{ const chart = document.querySelectorAll('.js-plotly-plot')[i];
        return [...chart.querySelectorAll('{part}')].map(e => e.getBoundingClientRect())
            .filter(b => b.width > 0).map(b => [b.left, b.top, b.right, b.bottom]) }}""", index)


def toolbar_clear_of_text(page, index: int) -> None:
    """Hover a chart so plotly shows its toolbar; it must not cover the chart's titles or tick labels."""
    chart = page.locator(".js-plotly-plot").nth(index)
    chart.scroll_into_view_if_needed()
    chart.hover()
    toolbar = chart.locator(".modebar").bounding_box()
    assert toolbar is not None and toolbar["width"] > 0
    box = [toolbar["x"], toolbar["y"], toolbar["x"] + toolbar["width"], toolbar["y"] + toolbar["height"]]
    texts = [b for part in (".gtitle", ".g-xtitle", ".xtick text", ".annotation-text") for b in
             chart_boxes(page, index, part)]
    assert texts and not [t for t in texts if overlap(box, t)], (box, texts)


@pytest.fixture
def browser_page(runs_env):
    with streamlit_server(runs_env) as url, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = new_page(browser, 90_000)
        yield url, page
        browser.close()


def test_interpret_layout_and_the_report_read_clearly(browser_page, tmp_path):
    url, page = browser_page
    page.goto(f"{url}/interpret?run=tiny")
    expect(page.get_by_text("Titles read actual→predicted")).to_be_visible()
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .annotation-text').length >= 12")
    charts = page.locator(".js-plotly-plot")
    top_losses = next(i for i in range(charts.count()) if charts.nth(i).locator(".heatmaplayer").count())

    # top-loss titles (two lines each, 12 of them) never run into each other
    titles = chart_boxes(page, top_losses, ".annotation-text")
    assert len(titles) == 12
    assert not [(a, b) for i, a in enumerate(titles) for b in titles[i + 1:] if overlap(a, b)]
    # point 2: Grad-CAM carries information at the run's 32 px: every top loss's heat map that shows any evidence
    # for its class varies over the image (a map with none is black: which images those are depends on the machine
    # the run trained on; tests/test_gradcam.py checks the evidence itself varies for every one)
    maps = page.evaluate("""(i) => document.querySelectorAll('.js-plotly-plot')[i].data
        .filter(t => t.type === 'heatmap').map(t => t.z._inputArray || t.z)  // plotly's decoded binary array
        .map(z => Array.from(z).flatMap(r => typeof r === 'number' ? [r] : Array.from(r)))
        .filter(v => v.length > 16).map(v => { const m = v.reduce((a, b) => a + b, 0) / v.length;
            return [Math.max(...v), Math.sqrt(v.reduce((a, b) => a + (b - m) ** 2, 0) / v.length)]; })""",
                         top_losses)
    spreads = [spread for peak, spread in maps if peak > 0]
    assert len(maps) == 12 and len(spreads) >= 2 and min(spreads) > 0.05, maps
    # plotly's toolbar sits above the charts, not over the matrix's labels or the top losses' titles
    toolbar_clear_of_text(page, 0)
    toolbar_clear_of_text(page, top_losses)

    # a click on a cell keeps every cell opaque, and its images are on screen beside the matrix
    page.mouse.move(0, 0)
    cells = charts.first.locator(".scatterlayer .point")
    expect(cells).to_have_count(100)
    cells.nth(1 * 10 + 1).click(force=True)  # actual 1, predicted 1: the diagonal always has images
    expect(page.get_by_text("validation images of 1 predicted as 1")).to_be_visible()
    page.wait_for_timeout(500)  # plotly styles the selection after the click
    faded = page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')[0]
        .querySelectorAll('.scatterlayer .point')].filter(p => parseFloat(getComputedStyle(p).opacity) < 1).length""")
    assert faded == 0
    gallery = charts.nth(1)  # the cell's images: the chart after the matrix
    expect(gallery.locator(".layer-above image, .imagelayer image, image").first).to_be_in_viewport()
    expect(gallery).to_be_in_viewport()

    # the report, opened in the browser without the app: tick labels and the matrix's row names inside their charts
    with page.expect_download() as download:
        page.get_by_role("button", name="Download an HTML report").click()
    report = tmp_path / "report.html"
    download.value.save_as(report)
    map_hover_and_lasso(page, url)
    page.goto(report.as_uri())
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= 4")
    for index in range(3):  # loss, learning rate, confusion matrix
        frame = page.evaluate("(i) => { const b = document.querySelectorAll('.js-plotly-plot')[i]"
                              ".getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom] }", index)
        for axis in (".xtick text", ".ytick text"):
            ticks = chart_boxes(page, index, axis)
            assert len(ticks) >= 3, (index, axis)
            assert all(frame[0] <= t[0] and t[2] <= frame[2] and frame[1] <= t[1] and t[3] <= frame[3]
                       for t in ticks), (index, axis, frame, ticks)
    rows = page.locator(".js-plotly-plot").nth(2).locator(".ytick text").all_text_contents()
    assert sorted(rows) == [str(d) for d in range(10)]
    toolbar_clear_of_text(page, 2)


POINT_AT = """() => { const chart = document.querySelector('.st-key-map_chart .js-plotly-plot');
    const trace = chart._fullData.find(t => t.x.length > 0), xa = chart._fullLayout.xaxis;
    const ya = chart._fullLayout.yaxis, box = chart.getBoundingClientRect();
    return [box.left + xa._offset + xa.l2p(trace.x[0]), box.top + ya._offset + ya.l2p(trace.y[0]),
            box.left + xa._offset, box.top + ya._offset, xa._length, ya._length]; }"""


def map_hover_and_lasso(page, url: str) -> None:
    """The Map page: the pointer on a point shows that image's thumbnail beside it; a lasso around the middle of
    the map opens the images inside in the keep / remove / relabel review."""
    page.goto(f"{url}/map?run=tiny")
    page.get_by_text("Draw the map").click()
    page.wait_for_function("""() => { const chart = document.querySelector('.st-key-map_chart .js-plotly-plot');
        return chart && chart._fullData && chart._fullData.length > 0 }""")  # WebGL points: no SVG to wait for
    x, y, left, top, width, height = page.evaluate(POINT_AT)
    thumbnail = page.get_by_test_id("hover-thumbnail")
    for _ in range(30):  # the hover component binds to the chart within half a second when the machine is quiet,
        page.mouse.move(x - 5, y - 5)  # later under load: a pointer that came before it is not seen, so come again
        page.mouse.move(x, y)
        try:
            thumbnail.wait_for(state="visible", timeout=2000)
            break
        except PlaywrightTimeout:
            continue
    expect(thumbnail).to_be_visible()
    assert "data:image/jpeg" in thumbnail.evaluate("e => e.style.backgroundImage")
    corners = [(0.2, 0.2), (0.8, 0.2), (0.8, 0.8), (0.2, 0.8), (0.2, 0.2)]  # a lasso around the middle
    page.mouse.move(left + width * corners[0][0], top + height * corners[0][1])
    page.mouse.down()
    for fx, fy in corners[1:]:
        page.mouse.move(left + width * fx, top + height * fy, steps=8)
    page.mouse.up()
    expect(page.get_by_text("Selected: ", exact=False)).to_be_visible()
    expect(page.get_by_role("button", name="Record these decisions").first).to_be_visible()
