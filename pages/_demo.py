"""The Predict page's helpers: a run's cached Predictor, one way to classify pixels with or without the run's
calibration, and the live camera demo (streamlit-webrtc) that classifies every frame it can and draws the top
classes onto the video, large enough for a room.

The demo follows streamlit-webrtc's own object-detection example: the results are drawn onto the returned frame,
so they stay in step with the picture, and the page reads the latest one from a shared object to show it as text.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st

from core.runs.folder import RunFolder
from pages._common import model_key

if TYPE_CHECKING:
    import av
    import torch

    from core.ship.predict import Prediction, Predictor

# bench/demo_fps.py names a file here; each classified frame appends its time to it (kept out of the UI)
FPS_LOG_ENV = "STUDIO_DEMO_FPS_LOG"
VIDEO_ROWS = 4  # rows drawn on the video (classes, and "Not one of..."), each a ninth of the frame's height
# One frame is classified at a time across every session: frames that arrive meanwhile are dropped, so two
# cores never queue work that is stale by the time it is done.
_ONE_AT_A_TIME = threading.Lock()
_DIM = [v * 2 // 5 for v in range(256)] * 3  # PIL point table darkening the band behind the bars

Classify = Callable[["torch.Tensor", int], "list[Prediction]"]  # (uint8 (N, 3, S, S), top) -> predictions


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def _predictor(run_dir: str, model_stamp: str, trust_stamp: int) -> Predictor:
    from core.ship.predict import Predictor

    return Predictor.from_run(Path(run_dir))


def run_predictor(run_dir: Path) -> Predictor:
    """The run's model with its calibration, shared by every session and loaded again when the model or the
    calibration changes; BrokenRun or FileNotFoundError (sentences) when either cannot be read."""
    return _predictor(str(run_dir), model_key(run_dir), trust_mtime(run_dir))


def trust_mtime(run_dir: Path) -> int:
    """When the run's calibration (trust.npz) was written, in ns; 0 when it has none."""
    try:
        return RunFolder(run_dir).trust_path.stat().st_mtime_ns
    except OSError:
        return 0


def calibrated_classifier(predictor: Predictor, tta: bool) -> Classify:
    """Predictions of a run with its calibration: calibrated probabilities, and "unknown"."""

    def classify(pixels: torch.Tensor, top: int) -> list[Prediction]:
        return predictor.pixels(pixels, top=top, tta=tta)

    return classify


def plain_classifier(model, class_names: list[str]) -> Classify:
    """Predictions of a run trained before calibration: raw softmax probabilities, never "unknown"."""
    import torch

    from core.inspect.attribution import top_predictions
    from core.ship.predict import Prediction

    def classify(pixels: torch.Tensor, top: int) -> list[Prediction]:
        with torch.inference_mode():
            return [Prediction(top_predictions(model, image, class_names, k=top), False, float("nan"))
                    for image in pixels]

    return classify


def verdict(prediction: Prediction, n_classes: int) -> str:
    """What the model says, in words (plain text): the top class (a run of label sets: the labels found), or that the
    image is none of them."""
    if prediction.unknown:
        return f"Not one of the {n_classes} {'labels' if prediction.labels is not None else 'classes'}"
    if prediction.labels is not None:
        return " · ".join(prediction.labels) if prediction.labels else f"None of the {n_classes} labels"
    name, p = prediction.top[0]
    return f"{name} · {p:.0%}"


class LiveClassifier:
    """Classifies the newest camera frame and draws its top classes onto it.

    `frames` is streamlit-webrtc's queued-frames callback, called from its worker thread; `latest` is read by the
    page's script thread (a single attribute swap, so no lock is needed)."""

    def __init__(self, classify: Classify, size: int, resize: str, n_classes: int, top: int):
        self.classify, self.size, self.resize, self.n_classes = classify, size, resize, n_classes
        self.top = min(top, VIDEO_ROWS, n_classes)
        self.latest: Prediction | None = None
        self.fps_log = os.environ.get(FPS_LOG_ENV)

    async def frames(self, frames: list[av.VideoFrame]) -> list[av.VideoFrame]:
        """The frames that arrived while the last one was classified: only the newest is used; none while another
        session's frame is being classified (the video then repeats its last picture). A coroutine, as
        streamlit-webrtc asks; it runs on that session's own worker thread and event loop."""
        if not _ONE_AT_A_TIME.acquire(blocking=False):
            return []
        try:
            return [self.frame(frames[-1])]
        finally:
            _ONE_AT_A_TIME.release()

    def frame(self, frame: av.VideoFrame) -> av.VideoFrame:
        """One frame classified, made square and sized exactly as the run's images were, returned with the bars."""
        import av
        import numpy as np
        import torch

        from core.data.images import fit_square

        # One thread: torch's OpenMP setting is per thread, so this leaves the pages' own work alone. Two threads
        # on two busy cores took 460 ms a frame against 19 ms for one (EfficientNet-Lite0 at 64 px, load 7).
        torch.set_num_threads(1)
        picture = frame.to_image()  # RGB, the camera's size
        square = np.asarray(fit_square(picture, self.size, self.resize))  # (S, S, 3)
        with torch.inference_mode():
            prediction = self.classify(torch.from_numpy(square.copy()).permute(2, 0, 1)[None], self.top)[0]
        self.latest = prediction
        draw_bars(picture, prediction, self.n_classes)
        if self.fps_log:
            with open(self.fps_log, "a") as log:
                log.write(f"{time.monotonic():.4f}\n")
        return av.VideoFrame.from_image(picture)


def draw_bars(picture, prediction: Prediction, n_classes: int) -> None:
    """Draw the top classes as bars over the lower part of a PIL picture (in place); an unknown image gets
    "Not one of the N classes" in its top row and the closest class below it. A run of label sets draws the labels
    found in green and the others in blue."""
    from PIL import ImageDraw, ImageFont

    width, height = picture.size
    row = max(height // 9, 12)
    found = {prediction.top[0][0]} if prediction.labels is None else set(prediction.labels)
    rows = [(verdict(prediction, n_classes), None, False)] if prediction.unknown else []
    rows += [(f"{name}  {p:.0%}", p, name in found) for name, p in prediction.top][:VIDEO_ROWS - len(rows)]
    top = height - row * len(rows)
    band = (0, top, width, height)
    picture.paste(picture.crop(band).point(_DIM), band[:2])
    font = ImageFont.load_default(size=int(row * 0.7))
    draw = ImageDraw.Draw(picture)
    for i, (text, p, named) in enumerate(rows):
        y = top + i * row
        if p is not None:
            colour = (120, 120, 120) if prediction.unknown else (46, 160, 67) if named else (70, 110, 200)
            draw.rectangle((0, y + 2, int(width * p), y + row - 2), fill=colour)
        draw.text((row // 4, y + row // 2), text, fill=(255, 255, 255), font=font, anchor="lm",
                  stroke_width=max(row // 24, 1), stroke_fill=(0, 0, 0))


def live_demo(classifier: LiveClassifier, key: str):
    """The camera, streamed to the server and back with the bars on it; returns streamlit-webrtc's context.

    No STUN or TURN server: the browser and this server meet on their own addresses (localhost, or the local
    network), so the demo works without internet."""
    from streamlit_webrtc import WebRtcMode, webrtc_streamer

    return webrtc_streamer(key=key, mode=WebRtcMode.SENDRECV, rtc_configuration={"iceServers": []},
                           queued_video_frames_callback=classifier.frames, async_processing=True,
                           media_stream_constraints={"video": True, "audio": False},
                           translations={"start": "Start the camera", "stop": "Stop"})


def show_latest(classifier: LiveClassifier) -> None:
    """The newest frame's verdict as text, refreshed twice a second while the camera streams."""
    from pages._text import md

    @st.fragment(run_every=0.5)
    def latest() -> None:
        prediction = classifier.latest
        if prediction is None:
            st.caption("Waiting for the first frame…")
        elif prediction.unknown:
            st.header(verdict(prediction, classifier.n_classes), anchor=False)
            st.caption(f"closest: {md(prediction.top[0][0])} ({prediction.top[0][1]:.0%})")
        else:
            st.header(md(verdict(prediction, classifier.n_classes)), anchor=False)

    latest()


def label_chart(where, prediction: Prediction, predictor: Predictor, k: int, name: str) -> None:
    """A run of label sets' verdict for one image: the labels found as a heading, then the `k` most probable labels'
    own probabilities as bars (green: found), each with its threshold marked."""
    import plotly.graph_objects as go

    from pages._text import md, plot

    where.subheader(md(verdict(prediction, len(predictor.class_names))), anchor=False)
    shown = [(c, p) for c, p in prediction.top if c in prediction.labels] or prediction.top[:1]
    shown += [(c, p) for c, p in prediction.top if (c, p) not in shown][:max(k - len(shown), 0)]
    thresholds = dict(zip(predictor.class_names, predictor.thresholds))
    names, probs = [plot(c) for c, _ in shown][::-1], [p for _, p in shown][::-1]
    colours = ["#9e9e9e" if prediction.unknown else "#2ea043" if c in prediction.labels else "#4c78a8"
               for c, _ in shown][::-1]
    figure = go.Figure([go.Bar(x=probs, y=names, orientation="h", marker_color=colours, name="probability",
                               text=[f"{p:.1%}" for p in probs], textposition="auto"),
                        go.Scatter(x=[thresholds[c] for c, _ in shown][::-1], y=names, mode="markers",
                                   marker=dict(symbol="line-ns-open", size=18, color="black"), name="threshold")])
    figure.update_layout(height=60 + 32 * len(shown), margin=dict(l=0, r=0, t=10, b=0), xaxis_range=[0, 1],
                         xaxis_tickformat=".0%", showlegend=False)
    where.plotly_chart(figure, key=f"prediction:{name}")
