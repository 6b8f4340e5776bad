"""Starting `streamlit run app.py` on a free port and Debian's Chromium, for the browser test and bench/."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_answers(url: str, process: subprocess.Popen, failure: str, timeout: float = 60) -> None:
    """Return once `url` answers; RuntimeError(failure) if `process` exits or `timeout` seconds pass first."""
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if time.time() > deadline or process.poll() is not None:
                raise RuntimeError(failure) from None
            time.sleep(0.25)


@contextlib.contextmanager
def streamlit_server(runs_dir: Path) -> Iterator[str]:
    """Serve app.py with STUDIO_RUNS_DIR=runs_dir; yields its URL once it answers its health check."""
    port = free_port()
    env = {**os.environ, "STUDIO_RUNS_DIR": str(runs_dir)}
    process = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                                "--server.headless", "true"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://localhost:{port}"
    try:
        wait_until_answers(f"{url}/_stcore/health", process, "streamlit did not start")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def launch_chromium(playwright, camera: bool = False):
    """Debian's Chromium, headless; with `camera`, a fake camera that needs no permission prompt."""
    if not os.path.exists(CHROMIUM):
        raise RuntimeError("Debian's chromium is needed: apt-get install -y chromium")
    fake_camera = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"] if camera else []
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + fake_camera)


VIEWPORT = {"width": 1400, "height": 1000}  # the screenshots' size: a laptop's browser window


def new_page(browser, timeout_ms: int):
    """A page at VIEWPORT whose actions and `expect` assertions wait up to `timeout_ms` (a first page run imports
    torch and builds caches on two cores)."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(timeout_ms)
    expect.set_options(timeout=timeout_ms)
    return page

