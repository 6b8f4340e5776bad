"""A thumbnail beside the pointer while it hovers a point of a plotly chart: Plotly's own hover labels hold text
only. One JPEG sprite of every thumbnail goes to the page once (Streamlit's message cache keeps a repeated one), and
a small component listens to the chart's `plotly_hover` events; a point's `customdata` is its image's position."""
from __future__ import annotations

import base64
import io

import numpy as np
import streamlit as st
from PIL import Image

THUMB = 40  # pixels a side in the sprite (shown at 2x)
COLUMNS = 64
LIMIT = 6000  # images with a hover thumbnail: a sprite of ~2 MB; past it, the first LIMIT of a seeded shuffle

_JS = """
export default function(component) {
  window.__tlsHover = component.data;  // what the handlers read: the latest sprite and slots
  let tip = document.getElementById("tls-hover-thumb");
  if (!tip) {
    tip = document.createElement("div");
    tip.id = "tls-hover-thumb";
    tip.setAttribute("data-testid", "hover-thumbnail");
    tip.style.cssText = "position:fixed;pointer-events:none;z-index:100000;display:none;border:1px solid #888;" +
      "box-shadow:0 2px 6px rgba(0,0,0,.3);background-repeat:no-repeat;image-rendering:pixelated";
    document.body.appendChild(tip);
  }
  const show = (event) => {
    const data = window.__tlsHover, point = event.points && event.points[0];
    const slot = data && point ? data.slots[point.customdata] : undefined;
    if (slot === undefined || slot < 0) { tip.style.display = "none"; return; }
    const size = data.thumb * 2, column = slot % data.columns, row = Math.floor(slot / data.columns);
    tip.style.width = tip.style.height = size + "px";
    tip.style.backgroundImage = "url(" + data.sprite + ")";
    tip.style.backgroundSize = (data.columns * size) + "px " + (data.rows * size) + "px";
    tip.style.backgroundPosition = (-column * size) + "px " + (-row * size) + "px";
    tip.style.left = (event.event.clientX + 18) + "px";
    tip.style.top = (event.event.clientY + 18) + "px";
    tip.style.display = "block";
  };
  const bind = () => {  // the chart's div is made again when Streamlit draws it anew
    const data = window.__tlsHover;
    const chart = data && document.querySelector(".st-key-" + data.chart + " .js-plotly-plot");
    if (!chart || !chart.on || chart.__tlsBound) return;
    chart.__tlsBound = true;
    chart.on("plotly_hover", show);
    chart.on("plotly_unhover", () => { tip.style.display = "none"; });
  };
  bind();
  if (!window.__tlsTimer) window.__tlsTimer = setInterval(bind, 500);
  return () => { clearInterval(window.__tlsTimer); window.__tlsTimer = null; tip.style.display = "none"; };
}
"""
_component = st.components.v2.component("tls_hover_thumbnails", js=_JS)


@st.cache_data(show_spinner=False, max_entries=4)
def sprite(key: str, _images) -> tuple[str, list[int], int]:
    """(a JPEG data URL of thumbnails in rows of COLUMNS, each image's slot in it or -1, rows) for uint8 images
    (N, 3, H, W); `key` names the images for the cache (the images are not hashed: 70,000 of them are 860 MB)."""
    n = len(_images)
    chosen = np.arange(n) if n <= LIMIT else np.sort(np.random.default_rng(0).permutation(n)[:LIMIT])
    rows = max(1, -(-len(chosen) // COLUMNS))
    sheet = Image.new("RGB", (COLUMNS * THUMB, rows * THUMB), "white")
    for slot, i in enumerate(chosen):
        pixels = np.ascontiguousarray(np.asarray(_images[int(i)]).transpose(1, 2, 0))
        thumb = Image.fromarray(pixels).resize((THUMB, THUMB), Image.Resampling.BILINEAR)
        sheet.paste(thumb, ((slot % COLUMNS) * THUMB, (slot // COLUMNS) * THUMB))
    buffer = io.BytesIO()
    sheet.save(buffer, format="JPEG", quality=85)
    slots = np.full(n, -1)
    slots[chosen] = np.arange(len(chosen))
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode(), slots.tolist(), rows


def hover_thumbnails(chart_key: str, images, key: str) -> int:
    """Show a thumbnail of the hovered point's image (its customdata: a position in `images`, (N, 3, H, W) uint8)
    for the chart with `chart_key`; `key` changes when the images do. Returns how many images have one."""
    url, slots, rows = sprite(key, images)
    _component(key=f"hover:{chart_key}", data={"chart": chart_key, "sprite": url, "slots": slots, "rows": rows,
                                               "columns": COLUMNS, "thumb": THUMB})
    return sum(slot >= 0 for slot in slots)
