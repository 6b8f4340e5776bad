"""The Runs page in a real browser (Debian's Chromium through Playwright): two runs picked in the table are lined
up by fine-tuning epoch, and after one is deleted the table shows no row selected, never another run."""

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.browser_support import launch_chromium, new_page, streamlit_server
from tests.conftest import linked_copy

pytestmark = pytest.mark.slow  # ./test.sh -m "not slow" leaves these out

ROW_PX = 35  # Streamlit's dataframe: the header and each row are 35 px high; the row markers are the first column


@pytest.fixture
def server(trained_run, warm_run, tmp_path):
    """Two real runs of the digits: "tiny" (from scratch, 1 epoch) and "warm" (pretrained, 2 frozen epochs then 1)."""
    runs_dir = tmp_path / "runs"
    linked_copy(trained_run, runs_dir / "tiny")
    linked_copy(warm_run, runs_dir / "warm")
    with streamlit_server(runs_dir) as url:
        yield url, runs_dir


SOLID_ENDS = """(title) => { const p = [...document.querySelectorAll('.js-plotly-plot')]
    .find(p => p.layout && p.layout.title && p.layout.title.text.includes(title));
    if (!p) return null;
    return Object.fromEntries(p.data.map(t => [t.name + (t.line.dash === 'dot' ? ' frozen' : ''),
                                              [t.x[0], t.x[t.x.length - 1]]])); }"""


def test_runs_line_up_by_fine_tuning_epoch_and_a_delete_leaves_no_row_selected(server):
    url, runs_dir = server
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = new_page(browser, 60_000)
        page.goto(f"{url}/runs?run=warm")
        expect(page.get_by_role("heading", name="Run warm")).to_be_visible()
        table = page.get_by_test_id("stDataFrame").first
        selected = table.locator("tr[aria-selected=true]")
        expect(selected).to_have_count(1)  # the run in the address is the one picked, and the table shows it
        expect(selected).to_contain_text("warm")
        box = table.bounding_box()
        page.mouse.click(box["x"] + 16, box["y"] + ROW_PX + ROW_PX * 1 + ROW_PX / 2)  # tick "tiny" too (row 2)
        expect(selected).to_have_count(2)
        expect(page.get_by_role("heading", name="Run tiny")).to_be_visible()

        page.get_by_test_id("stRadio").filter(has_text="Line up the curves by").get_by_text("Fine-tuning epoch").click()
        page.wait_for_function("() => [...document.querySelectorAll('.js-plotly-plot')].some(p => p.layout && "
                               "p.layout.xaxis.title.text.startsWith('fine-tuning epoch'))")
        ends = page.evaluate(SOLID_ENDS, "Validation accuracy")
        # warm's frozen epochs at -1 and 0 (dotted), its first fine-tuning epoch at 1, where tiny's only epoch is
        assert ends == {"warm frozen": [-1, 0], "warm": [0, 1], "tiny": [1, 1]}
        expect(page.locator(".js-plotly-plot").first.locator(".annotation-text", has_text="unfrozen")).to_be_visible()

        page.locator('.st-key-popover-tiny').get_by_role("button", name="Delete this run").click()
        page.get_by_role("button", name="Yes, delete it").click()
        expect(page.get_by_text("Deleted run tiny and its folder.")).to_be_visible()
        assert not (runs_dir / "tiny").exists() and (runs_dir / "warm").exists()
        expect(table.locator("tr[aria-rowindex]")).to_have_count(2)  # the header and warm
        expect(selected).to_have_count(0)  # the selection did not move to warm
        page.wait_for_timeout(1500)  # and does not come back a moment later
        expect(selected).to_have_count(0)
        expect(page.get_by_role("heading", name="Run warm")).to_have_count(0)
        expect(page.get_by_test_id("stException")).to_have_count(0)
        browser.close()
