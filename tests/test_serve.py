"""python -m core.ship.serve: the real server on a free port, asked by urllib as another program would ask it."""
from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

from core.errors import DataError
from core.ship.serve import MAX_BODY, allowed_hosts, main
from tests.browser_support import free_port, wait_until_answers

pytestmark = pytest.mark.slow  # ./test.sh -m "not slow" leaves these out

ROOT = Path(__file__).resolve().parent.parent
NOT_AN_IMAGE = "That file is not an image this app can read (JPEG, PNG, WebP, BMP, GIF or TIFF)."


@contextlib.contextmanager
def serving(source: Path, log: Path, *options: str) -> Iterator[str]:
    """`python -m core.ship.serve source` on a free port; yields its URL once /health answers."""
    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "core.ship.serve", str(source), "--port", str(port),
                                    *options],
                                   cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_answers(f"{url}/health", process, "core.ship.serve did not start")
        except RuntimeError as error:
            raise RuntimeError(f"{error}:\n{log.read_text()}") from None
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def ask(url: str, body: bytes | None = None, content_type: str = "application/octet-stream",
        host: str | None = None) -> tuple[int, dict | str]:
    """(status, JSON answer, or the text of one that is not JSON) of a GET, or of a POST of `body`."""
    headers = {"Content-Type": content_type} if body is not None else {}
    if host:
        headers["Host"] = host
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=60) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode()
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def form(data: bytes, filename: str, field: str = "file") -> tuple[bytes, str]:
    """A multipart/form-data body with one file field, as a browser or `curl -F` sends it, and its content type."""
    boundary = "studio-test-7d1f0c"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            "Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def predict_json(run_dir: Path, images: list[Path], *options: str) -> list[dict]:
    """What `python -m core.ship.predict RUN_DIR IMAGES --json` prints, one dict per image."""
    done = subprocess.run([sys.executable, "-m", "core.ship.predict", str(run_dir), *map(str, images), "--json",
                           *options],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    return [json.loads(line) for line in done.stdout.splitlines()]


def assert_same_answer(served: dict, printed: dict) -> None:
    """The same classes in the same order, the same verdict, probabilities equal to their printed 6 decimals."""
    assert [name for name, _ in served["top"]] == [name for name, _ in printed["top"]]
    assert [p for _, p in served["top"]] == pytest.approx([p for _, p in printed["top"]], abs=2e-6)
    assert served["unknown"] == printed["unknown"]


def raw_exchange(url: str, head: str, body_chunks: Iterable[bytes] = ()) -> str:
    """Send a request head and body through a socket as given (no client rules applied); the answer's text, read
    as far as its Content-Length (the server need not close the connection)."""
    with socket.create_connection(("127.0.0.1", urlparse(url).port), timeout=30) as connection:
        connection.sendall(head.encode())
        for chunk in body_chunks:
            connection.sendall(chunk)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < int(
                re.search(rb"(?i)content-length: *(\d+)", answer).group(1)):
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer.decode("latin-1")


@pytest.fixture(scope="module")
def digit_pngs(trained_run, tmp_path_factory) -> list[Path]:
    """Four digits images (a 0, 1, 2 and 3) as PNG files, as someone would have them on disk: of each digit, the
    validation image the run named most surely and rightly, so that what its one epoch learned is what they show
    (which images those are depends on the machine the run trained on)."""
    from PIL import Image

    from core.data.builtin import load_builtin
    from core.inspect.interpret import load_predictions
    from core.runs.folder import RunFolder

    digits, predictions = load_builtin("digits", 64), load_predictions(trained_run)
    position = {name: i for i, name in enumerate(digits.item_names)}
    rows = [position[name] for name in RunFolder(trained_run).data_items()]
    folder = tmp_path_factory.mktemp("pngs")
    paths = []
    for digit in range(4):
        right = np.flatnonzero((predictions.targets == digit) & (predictions.predicted == digit))
        surest = right[predictions.probs[right, digit].argmax()]
        paths.append(folder / f"digit_{digit}.png")
        image = digits.images[rows[predictions.item_ids[surest]]]
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def server(trained_run, tmp_path_factory) -> Iterator[str]:
    with serving(trained_run, tmp_path_factory.mktemp("serve") / "log.txt", "--allowed-host", "studio.lan") as url:
        yield url


def test_an_image_as_the_raw_body_or_a_form_field_gets_what_predict_json_prints(server, trained_run, digit_pngs):
    printed = predict_json(trained_run, digit_pngs)
    assert [answer["top"][0][0] for answer in printed] == ["0", "1", "2", "3"]  # the run named these rightly
    for path, expected in zip(digit_pngs, printed):
        status, raw = ask(f"{server}/predict", path.read_bytes())
        assert status == 200 and raw["file"] == "upload" and set(raw) == {"file", "top", "unknown"}
        assert_same_answer(raw, expected)
        status, uploaded = ask(f"{server}/predict", *form(path.read_bytes(), path.name))
        assert status == 200 and uploaded["file"] == path.name
        assert_same_answer(uploaded, expected)


def test_top_and_tta_ask_what_predicts_options_ask(server, trained_run, digit_pngs):
    printed = predict_json(trained_run, digit_pngs[:2], "--top", "3", "--tta")
    for path, expected in zip(digit_pngs, printed):
        status, served = ask(f"{server}/predict?top=3&tta=true", path.read_bytes())
        assert status == 200 and len(served["top"]) == 3
        assert_same_answer(served, expected)


def test_health_names_the_classes_and_the_image_size_and_the_root_says_how_to_ask(server):
    assert ask(f"{server}/health") == (200, {"status": "ok", "classes": [str(d) for d in range(10)], "size": 32,
                                                  "multi_label": False})
    status, usage = ask(f"{server}/")
    assert status == 200 and "curl -F file=@cat.jpg http://HOST:PORT/predict" in usage["examples"]


def test_a_body_that_is_not_an_image_gets_422_with_a_sentence(server):
    assert ask(f"{server}/predict", b"%PDF-1.7 not a picture") == (422, {"error": NOT_AN_IMAGE})
    assert ask(f"{server}/predict", *form(b"GIF89a broken", "broken.gif")) == (422, {"error": NOT_AN_IMAGE})
    assert ask(f"{server}/predict", b"") == (422, {"error": NOT_AN_IMAGE})
    status, answer = ask(f"{server}/predict", *form(b"\x89PNG", "x.png", field="image"))
    assert status == 422 and answer["error"].startswith("The form has no field named file;")
    status, answer = ask(f"{server}/predict?top=0", b"\x89PNG")
    assert status == 422 and answer["error"].startswith("A parameter is not usable (top:")


def test_a_body_over_the_cap_gets_413_without_being_read(server):
    # declared too long: answered from the head alone, though the body never comes
    answer = raw_exchange(server, f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {MAX_BODY + 1}\r\n"
                                  "Content-Type: image/jpeg\r\n\r\n")
    assert answer.startswith("HTTP/1.1 413 ") and '"error":"That upload is over 20 MB;' in answer
    # no length said (chunked): refused once the bytes read pass the cap
    chunk = b"\xff" * (1 << 20)
    body = (b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(MAX_BODY // len(chunk) + 1))
    answer = raw_exchange(server, "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                          body)
    assert answer.startswith("HTTP/1.1 413 ")


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:80", "localhost.attacker.example",
                                  "127.0.0.1.nip.io"])
def test_a_page_on_another_site_cannot_reach_the_model_by_dns_rebinding(server, digit_pngs, host):
    assert ask(f"{server}/predict", digit_pngs[0].read_bytes(), host=host)[0] == 400
    assert ask(f"{server}/health", host=host)[0] == 400


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "studio.lan"])
def test_names_of_this_machine_and_allowed_hosts_are_answered(server, host):
    assert ask(f"{server}/health", host=f"{host}:{urlparse(server).port}")[0] == 200


def test_allowed_hosts_are_this_machines_names_the_address_listened_on_and_those_given():
    assert allowed_hosts("127.0.0.1", []) == ["localhost", "127.0.0.1", "[::1]"]
    assert allowed_hosts("0.0.0.0", ["Studio.LAN", "FE80::1"]) == ["localhost", "127.0.0.1", "[::1]", "studio.lan",
                                                                   "[fe80::1]"]
    assert allowed_hosts("192.168.1.20", ["*.example.com"])[3:] == ["192.168.1.20", "*.example.com"]
    with pytest.raises(DataError, match="a wildcard may only begin a name"):
        allowed_hosts("127.0.0.1", ["studio.*"])


@pytest.fixture(scope="module")
def export_zip(exported, tmp_path_factory) -> Path:
    """The run's export zip, as the Runs page's button and python -m core.ship.export make it (verified)."""
    from core.ship.export import zip_export

    path = tmp_path_factory.mktemp("export") / "tiny.zip"
    path.write_bytes(zip_export(exported[0]))
    return path


def test_an_export_zip_alone_answers_as_its_run_does(server, export_zip, digit_pngs, tmp_path):
    with serving(export_zip, tmp_path / "log.txt") as zip_server:
        assert ask(f"{zip_server}/health") == ask(f"{server}/health")
        for path in digit_pngs:
            body, content_type = form(path.read_bytes(), path.name)
            for query in ("", "?top=3&tta=true"):
                status, from_zip = ask(f"{zip_server}/predict{query}", body, content_type)
                assert status == 200 and from_zip["file"] == path.name
                assert_same_answer(from_zip, ask(f"{server}/predict{query}", body, content_type)[1])
        assert ask(f"{zip_server}/predict", b"not a picture") == (422, {"error": NOT_AN_IMAGE})


def old_export(path: Path) -> Path:
    """A zip as exports were before they carried calibration: a TorchScript model of normalised floats
    (B, 3, S, S) -> logits (B, C)."""
    import io

    import torch
    from torch import nn

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)).eval()
    buffer = io.BytesIO()
    with torch.no_grad(), pytest.warns(FutureWarning):  # torch.jit is deprecated; old exports are TorchScript
        torch.jit.save(torch.jit.trace(model, torch.zeros(1, 3, 32, 32)), buffer)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("old/model.torchscript.pt", buffer.getvalue())
        archive.writestr("old/classes.json", json.dumps([str(d) for d in range(10)]))
        archive.writestr("old/preprocessing.json", json.dumps({"size": 32, "resize": "squish", "output": "logits"}))
    return path


def test_a_source_it_cannot_use_stops_it_at_the_start_with_one_sentence(tmp_path, capsys):
    empty = tmp_path / "empty_run"
    empty.mkdir()
    not_an_export = tmp_path / "photos.zip"
    with zipfile.ZipFile(not_an_export, "w") as archive:
        archive.writestr("photos/cat.jpg", b"\xff\xd8")
    (tmp_path / "notes.txt").write_text("hello")
    for source, sentence in [(empty, "Run empty_run has no calibration (trust.npz)"),
                             (not_an_export, "photos.zip is not an export of this app: it has no model.torchscript.pt"),
                             (old_export(tmp_path / "old.zip"), "old.zip was exported before exports took pixels"),
                             (tmp_path / "notes.txt", "notes.txt is neither a run folder nor an export zip."),
                             (tmp_path / "missing", "missing does not exist")]:
        assert main([str(source), "--port", "1"]) == 2
        error = capsys.readouterr().err
        assert sentence in error and len(error.strip().splitlines()) == 1
