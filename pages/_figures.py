"""Plotly figures the pages (and the HTML report) draw from what core/ returns. No streamlit here."""
from __future__ import annotations

import numpy as np
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.runs.metrics import MetricsTail
from pages._text import plot

# Inferno, but starting at #000000: its own first colour, #000004, is one of the placeholders (#000001-#000020) that
# Streamlit's front end swaps for its theme's colours wherever they appear, which drew "no heat" in pink.
HEAT_SCALE = ["#000000", *px.colors.sequential.Inferno[1:]]


def to_hwc(images) -> np.ndarray:
    """(N, 3, H, W) -> (N, H, W, 3)."""
    return np.ascontiguousarray(np.asarray(images).transpose(0, 2, 3, 1))


def _scale_each(images: np.ndarray) -> np.ndarray:
    flat = images.reshape(len(images), -1)
    low, high = flat.min(1)[:, None, None], flat.max(1)[:, None, None]
    return (images - low) / np.maximum(high - low, 1e-12)


def image_grid(images: np.ndarray, titles: list[str], columns: int = 8, height_per_row: int = 120) -> go.Figure:
    """A grid of images (N, H, W, 3) uint8, or maps (N, H, W) each scaled to its own range, with titles (text)."""
    rgb = images.ndim == 4
    if not rgb:  # each map scaled to its own range, so a weak channel's pattern still shows
        images = _scale_each(images.astype(float))
    columns = max(1, min(columns, len(images)))
    figure = px.imshow(images, facet_col=0, facet_col_wrap=columns, binary_string=rgb,
                       color_continuous_scale=None if rgb else "Viridis", facet_col_spacing=0.01,
                       facet_row_spacing=0.08)
    # px names facets "facet_col=0", "facet_col=1", ...: replace each by its title
    for annotation in figure.layout.annotations:
        annotation.text = _title(titles[int(annotation.text.split("=")[1])], max(8, 170 // columns))
    rows = -(-len(images) // columns)
    figure.update_xaxes(visible=False).update_yaxes(visible=False)
    figure.update_layout(height=60 + rows * height_per_row, margin=dict(l=0, r=0, t=30, b=0),
                         coloraxis_showscale=False)
    return figure


def _title(text: str, max_chars: int) -> str:
    """A title for plotly: each line (split at \\n) cut to max_chars with an ellipsis, escaped, joined by <br>."""
    lines = [line if len(line) <= max_chars else line[:max_chars - 1] + "…" for line in str(text).split("\n")]
    return "<br>".join(plot(line) for line in lines)


def overlay_grid(images: np.ndarray, heats, titles: list[str], columns: int = 6, opacity: float = 0.5,
                 height_per_row: int = 200) -> go.Figure:
    """Images (N, H, W, 3) uint8 with heat maps (N, H, W) in 0..1 laid over them at `opacity`, titled (text; a
    newline starts a second line) above a colour scale.

    `heats` may be None (no heat at all) or hold None for an image drawn without one. Titles are cut to what fits
    their column, and rows keep room for two lines of title, so neighbours never run into each other.
    """
    columns = max(1, min(columns, len(images)))
    rows = -(-len(images) // columns)
    title_px, top = 36, 40  # two lines of 11 px text, and the first row's titles
    height = top + rows * height_per_row
    figure = make_subplots(rows=rows, cols=columns, horizontal_spacing=0.04 if columns > 1 else 0,
                           subplot_titles=[_title(title, max(8, 170 // columns)) for title in titles],
                           vertical_spacing=title_px / height if rows > 1 else 0)
    scale = dict(title=dict(text="heat", side="right"), thickness=12, len=min(1.0, 320 / height), y=1,
                 yanchor="top", tickvals=[0, 0.5, 1], ticktext=["none", "half", "strongest"])
    shown = False  # one colour scale for all: every map spans 0..1
    for i, image in enumerate(images):
        row, col = i // columns + 1, i % columns + 1
        figure.add_trace(go.Image(z=image, hoverinfo="skip"), row=row, col=col)
        if heats is not None and heats[i] is not None:
            # smoothed between pixels: the map is smooth already, and square pixels at 32 px read as a grid
            figure.add_trace(go.Heatmap(z=heats[i], opacity=opacity, colorscale=HEAT_SCALE, zmin=0, zmax=1,
                                        zsmooth="best", showscale=not shown, colorbar=scale,
                                        hovertemplate="heat %{z:.2f}<extra></extra>"), row=row, col=col)
            shown = True
    figure.update_xaxes(visible=False).update_yaxes(visible=False, autorange="reversed")
    figure.update_layout(height=height, margin=dict(l=0, r=0, t=top, b=0))
    figure.update_annotations(font_size=11)
    return figure


MAX_CURVE_POINTS = 600  # a chart is drawn from at most this many step rows: a long run stays cheap to redraw


def thinned(rows: list[dict]) -> list[dict]:
    """Every k-th row (and the last) so that at most MAX_CURVE_POINTS remain."""
    stride = -(-len(rows) // MAX_CURVE_POINTS)
    return rows if stride <= 1 else rows[::stride] + ([rows[-1]] if (len(rows) - 1) % stride else [])


def loss_figure(tail: MetricsTail) -> go.Figure:
    figure = go.Figure()
    steps = thinned(tail.steps)
    figure.add_scatter(x=[r["step"] for r in steps], y=[r["loss"] for r in steps], name="train loss (step)",
                       mode="lines", line=dict(width=1.5))
    figure.add_scatter(x=[r["step"] for r in tail.epochs], y=[r["valid_loss"] for r in tail.epochs],
                       name="valid loss (epoch)", mode="lines+markers", marker=dict(size=8))
    figure.update_layout(title="Loss", xaxis_title="step", height=320, margin=dict(l=0, r=0, t=40, b=0),
                         legend=dict(orientation="h", y=-0.25), uirevision="keep")
    return figure


def lr_figure(tail: MetricsTail) -> go.Figure:
    steps = thinned(tail.steps)
    figure = go.Figure(go.Scatter(x=[r["step"] for r in steps], y=[r["lr"] for r in steps], mode="lines",
                                  name="learning rate"))
    figure.update_layout(title="Learning rate (one-cycle, per phase)", xaxis_title="step", height=320,
                         margin=dict(l=0, r=0, t=40, b=0), yaxis_exponentformat="e", uirevision="keep")
    return figure


def lr_find_figure(lrs: list[float], losses: list[float], suggestions: dict[str, float]) -> go.Figure:
    """Loss against learning rate on a log axis, each suggestion marked where it falls on the curve."""
    figure = go.Figure(go.Scatter(x=lrs, y=losses, mode="lines", name="loss"))
    for (name, lr), colour in zip(suggestions.items(), ["#d62728", "#2ca02c"]):
        loss = float(np.interp(np.log10(lr), np.log10(lrs), losses))
        figure.add_scatter(x=[lr], y=[loss], mode="markers+text", marker=dict(size=12, color=colour),
                           text=[f"{plot(name)} {lr:.1e}"], textposition="top right", name=plot(name))
    low = min(losses)
    top = max(losses[0] * 1.25, low + (losses[0] - low) * 1.5)  # the explosion at the end would flatten the rest
    figure.update_layout(title="Loss while the learning rate grows", xaxis_type="log", xaxis_title="learning rate",
                         yaxis_title="loss (smoothed)", yaxis_range=[low - 0.05 * (top - low), top], height=340,
                         margin=dict(l=0, r=0, t=40, b=0))
    return figure


def compare_figure(series: dict[str, tuple[list, list]], title: str, x_title: str, y_title: str,
                   markers: bool = False) -> go.Figure:
    """One line per run: {run id: (x values, y values)}."""
    figure = go.Figure()
    for name, (x, y) in series.items():
        figure.add_scatter(x=x, y=y, name=plot(name), mode="lines+markers" if markers else "lines")
    figure.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, height=320,
                         margin=dict(l=0, r=0, t=40, b=0), legend=dict(orientation="h", y=-0.3))
    return figure


def confusion_figure(matrix: np.ndarray, class_names: list[str], normalized: bool = False,
                     axes: tuple[str, str] = ("Actual", "Predicted")) -> go.Figure:
    """A confusion matrix, rows actual and columns predicted (or as `axes` name them), each cell labelled and
    clickable.

    Drawn as square markers rather than a heatmap: Streamlit reports clicks on scatter points, not on heatmap
    cells (streamlit/streamlit#8760), and a click here opens the cell's images. Its axes carry the names escaped
    for plotly (pages._text.plot): a click reports them so, and html.unescape gives the class name back.
    """
    class_names = [plot(name) for name in class_names]
    n = len(class_names)
    cell = max(10, min(36, 440 // max(n, 1)))  # pixels per cell: at most ~560 px wide, so its images fit beside it
    actual, predicted = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    values = matrix.ravel()
    labels = [f"{v:.2f}" if normalized else str(int(v)) for v in values]
    bright = values > (values.max() if len(values) else 0) * 0.5
    opaque = dict(marker=dict(opacity=1))  # a click selects one cell; plotly would fade every other to 0.2
    figure = go.Figure(go.Scatter(
        x=[class_names[j] for j in predicted.ravel()], y=[class_names[i] for i in actual.ravel()],
        mode="markers+text" if cell >= 20 else "markers", text=labels,  # numbers in cells under 20 px overlap
        textfont=dict(color=["white" if b else "#333" for b in bright], size=11 if cell >= 28 else 9),
        marker=dict(symbol="square", size=cell - 2, color=values, colorscale="Blues", line=dict(width=0),
                    colorbar=dict(title="share" if normalized else "images", thickness=12)),
        selected=opaque, unselected=opaque,
        hovertemplate=f"{axes[0].lower()} %{{y}}<br>{axes[1].lower()} %{{x}}<br>%{{text}}<extra></extra>"))
    figure.update_xaxes(type="category", side="top", title=axes[1], categoryorder="array",
                        categoryarray=class_names, showgrid=False, automargin=True)
    figure.update_yaxes(type="category", title=axes[0], categoryorder="array", categoryarray=class_names[::-1],
                        showgrid=False, automargin=True)
    # Room for the names, set rather than left to automargin: a margin that grows shrinks the plot, not the
    # markers (their size is in pixels), and the cells would overlap. ~7 px a character at 11 px.
    name_px = 7 * max((len(name) for name in class_names), default=1)
    top = 50 + (name_px if name_px > cell else 14)  # names wider than a cell are turned upright
    left = 40 + name_px
    figure.update_layout(width=left + cell * n + 90, height=top + cell * n + 10,
                         margin=dict(l=left, r=90, t=top, b=10), plot_bgcolor="white", clickmode="event+select")
    return figure


def pixel_figure(values: np.ndarray, title: str, colorscale: str = "gray",
                 value_format: str | None = ".0f") -> go.Figure:
    """A matrix (H, W) drawn cell by cell; each cell labelled with its number unless value_format is None."""
    figure = px.imshow(values, color_continuous_scale=colorscale, text_auto=value_format or False,
                       aspect="equal", title=title)
    figure.update_xaxes(visible=False).update_yaxes(visible=False)
    figure.update_layout(height=360, margin=dict(l=0, r=0, t=40, b=0), coloraxis_showscale=False)
    return figure


def reliability_figure(tables: dict[str, dict[str, np.ndarray]]) -> go.Figure:
    """A reliability diagram: per confidence bin, the accuracy against the mean confidence, for each named set of
    probabilities (core.inspect.trust.reliability); a calibrated model lies on the diagonal."""
    figure = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated",
                                  line=dict(color="#999", dash="dot")))
    for name, table in tables.items():
        filled = table["count"] > 0
        figure.add_scatter(x=table["confidence"][filled], y=table["accuracy"][filled], name=name, mode="lines+markers",
                           marker=dict(size=np.clip(np.sqrt(table["count"][filled]) * 2, 6, 24)),
                           customdata=table["count"][filled],
                           hovertemplate="confidence %{x:.2f} · accuracy %{y:.2f} · %{customdata} images")
    figure.update_layout(xaxis_title="confidence (the probability the model gave its answer)",
                         yaxis_title="accuracy (share right)", xaxis_range=[0, 1.02], yaxis_range=[0, 1.02],
                         height=340, margin=dict(l=0, r=0, t=10, b=0), legend=dict(orientation="h", y=-0.25))
    return figure
