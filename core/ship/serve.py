"""Serve a trained model over HTTP, for programs that are not this app: the answers of
`python -m core.ship.predict --json`.

    python -m core.ship.serve RUN_DIR_OR_EXPORT_ZIP [--port 8000] [--host 127.0.0.1] [--allowed-host NAME ...]

    POST /predict?top=5&tta=false   the image as the raw request body, or as a multipart form field named "file"
        -> {"file": "cat.jpg", "top": [["cat", 0.97], ["dog", 0.02], ...], "unknown": false}
           a run of label sets adds "labels" (those at or above their thresholds) and lists every label in "top"
           422 {"error": sentence} when the body is not an image, 413 when it is over MAX_BODY
    GET /health   -> {"status": "ok", "classes": [...], "size": S, "multi_label": false}
    GET /         -> how to call it

It serves a run folder (its checkpoint and calibration, core.inspect.trust) or an export zip (core.ship.export: the
TorchScript model that takes uint8 pixels), loaded once at the start; a source it cannot use stops it with one
sentence (exit 2).
Safe by default: it listens on 127.0.0.1 only, and answers only requests whose Host header names this machine (or a
name given with --host or --allowed-host): a web page elsewhere whose own name resolves to 127.0.0.1 (DNS
rebinding) is refused with 400, as the dashboard refuses it (.streamlit/config.toml's allowedHosts).
"""
from __future__ import annotations

import argparse
import io
import ipaddress
import json
import os
import sys
import threading
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.trustedhost import TrustedHostMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from core.config import RESIZE_METHODS
from core.data.augment import Augment
from core.data.images import decode_image
from core.errors import BrokenRun, DataError
from core.inspect.trust import tta_probs
from core.ship.predict import Prediction, Predictor, predictions

MAX_BODY = 20 << 20  # bytes of one request; a phone photo is 3-8 MB, and the pixel cap (MAX_PIXELS) comes later
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")
EXPORT_MODEL, EXPORT_CLASSES, EXPORT_PREPROCESSING = "model.torchscript.pt", "classes.json", "preprocessing.json"
MAX_MODEL_BYTES = 4 << 30  # an export's TorchScript file, read into memory; ResNet-50's is ~100 MB


class ZipPredictor:
    """An export zip's TorchScript model (core.ship.export): the predictions of the run's Predictor, from the zip alone.

    Its module takes uint8 pixels (B, S, S, 3) RGB 0..255 and returns (probabilities (B, C) calibrated,
    unknown score (B,), unknown (B,) bool, and for a run of label sets the labels (B, C) bool); classes.json and
    preprocessing.json (with a run of label sets' "label_thresholds") say the rest.
    """

    def __init__(self, module: torch.jit.ScriptModule, class_names: list[str], size: int, resize: str,
                 augment: Augment = Augment(), thresholds: list[float] | None = None):
        self.module, self.class_names, self.size, self.resize, self.augment = module, class_names, size, resize, augment
        self.thresholds = thresholds

    @classmethod
    def from_zip(cls, path: Path) -> ZipPredictor:
        """DataError (a sentence) when the zip is not an export this app made, or one made before exports carried
        their calibration."""
        again = "export the run again (Runs page, or python -m core.ship.export RUN_DIR)"
        try:
            with zipfile.ZipFile(path) as archive:
                members = {name: _export_member(archive, path, name)
                           for name in (EXPORT_MODEL, EXPORT_CLASSES, EXPORT_PREPROCESSING)}
                if members[EXPORT_MODEL].file_size > MAX_MODEL_BYTES:
                    raise DataError(f"{path.name}'s {EXPORT_MODEL} is over {MAX_MODEL_BYTES >> 30} GB; it is not "
                                    "one this app made.")
                class_names = json.loads(archive.read(members[EXPORT_CLASSES]))
                preprocessing = json.loads(archive.read(members[EXPORT_PREPROCESSING]))
                model_bytes = archive.read(members[EXPORT_MODEL])
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as error:
            raise DataError(f"{path.name} cannot be read as a zip ({error}).") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise DataError(f"{path.name}'s {EXPORT_CLASSES} or {EXPORT_PREPROCESSING} is not valid JSON; "
                            f"{again}.") from None
        size, resize = (preprocessing.get("size"), preprocessing.get("resize")) if isinstance(preprocessing, dict) \
            else (None, None)
        if not (isinstance(class_names, list) and class_names and all(isinstance(n, str) for n in class_names)
                and isinstance(size, int) and size > 0 and resize in RESIZE_METHODS):
            raise DataError(f"{path.name} does not say its classes, image size and resize method as this app's "
                            f"exports do; {again}.")
        try:
            with warnings.catch_warnings():  # torch.jit is deprecated for torch.export; exports still ship it
                warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
                module = torch.jit.load(io.BytesIO(model_bytes), map_location="cpu").eval()
        except (RuntimeError, ValueError) as error:
            raise DataError(f"{path.name}'s {EXPORT_MODEL} cannot be loaded ({str(error).splitlines()[0]}).") from None
        thresholds = preprocessing.get("label_thresholds")
        if thresholds is not None and not (isinstance(thresholds, list) and len(thresholds) == len(class_names) and
                                           all(isinstance(t, (int, float)) and 0 <= t <= 1 for t in thresholds)):
            raise DataError(f"{path.name}'s label thresholds do not fit its {len(class_names)} labels; {again}.")
        model = cls(module, class_names, size, resize, _augment(preprocessing.get("augment")), thresholds)
        try:  # a first call: checks the model is the kind that takes pixels, and warms TorchScript up
            model.pixels(torch.zeros(1, 3, size, size, dtype=torch.uint8))
        except (RuntimeError, ValueError, TypeError, IndexError):
            raise DataError(f"{path.name} was exported before exports took pixels and said \"none of these\"; "
                            f"{again}.") from None
        return model

    def _probs(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(probabilities (N, C), unknown scores (N,), unknown (N,) bool) of pixels (N, 3, S, S) in 0..255: uint8,
        or float for TTA's augmented copies (the module takes either, as TrustedModel does)."""
        probs, scores, unknown = self.module(pixels.permute(0, 2, 3, 1).contiguous())[:3]  # (N, S, S, 3); labels
        if probs.shape != (len(pixels), len(self.class_names)) or not scores.shape == unknown.shape == (len(pixels),):
            raise ValueError("the model's outputs do not have the shapes of an export")
        return probs, scores, unknown

    def pixels(self, images: torch.Tensor, *, top: int = 5, tta: bool = False) -> list[Prediction]:
        """Predictions for uint8 images (N, 3, S, S) already at the model's size, as Predictor.pixels makes them."""
        with torch.no_grad():
            probs, scores, unknown = self._probs(images)
        if tta:  # the same augmented copies as the run's own TTA
            probs = torch.from_numpy(tta_probs(lambda x: self._probs(x)[:1], images, self.augment))
        return predictions(self.class_names, probs, scores, unknown, top=top, thresholds=self.thresholds)


def _augment(settings) -> Augment:
    """The run's augmentation from preprocessing.json's "augment" ({"flip", "rotate", "zoom", "lighting"}), which TTA
    uses; none when the export does not say (TTA then uses core.inspect.trust's mild fallback, as for runs without
    one)."""
    if not isinstance(settings, dict):
        return Augment()
    try:
        return Augment(bool(settings.get("flip", False)), float(settings.get("rotate", 0.0)),
                       float(settings.get("zoom", 1.0)), float(settings.get("lighting", 0.0)))
    except (TypeError, ValueError):
        return Augment()


def _export_member(archive: zipfile.ZipFile, path: Path, name: str) -> zipfile.ZipInfo:
    """The one entry of the archive called `name` (core.ship.export puts them in a folder named after the run)."""
    found = [info for info in archive.infolist() if not info.is_dir() and info.filename.rsplit("/", 1)[-1] == name]
    if not found:
        raise DataError(f"{path.name} is not an export of this app: it has no {name}. Export a run from the Runs page "
                        "or with python -m core.ship.export RUN_DIR, or give a run folder.")
    if len(found) > 1:
        raise DataError(f"{path.name} holds more than one {name}; give a zip with one export.")
    return found[0]


def load_model(source: Path) -> Predictor | ZipPredictor:
    """A run folder's Predictor or an export zip's model; BrokenRun, DataError or FileNotFoundError as a sentence."""
    source = Path(source)
    if source.is_dir():
        return Predictor.from_run(source)
    if source.is_file() and zipfile.is_zipfile(source):
        return ZipPredictor.from_zip(source)
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist: give a run folder (runs/NAME) or an export zip.")
    raise DataError(f"{source} is neither a run folder nor an export zip.")


def allowed_hosts(host: str, extra: list[str]) -> list[str]:
    """The Host header names answered: this machine's, the listening address when it names one, and `extra`.
    IPv6 addresses are written in brackets, as they come in a Host header."""
    names = [*LOCAL_HOSTS]
    if host not in ("0.0.0.0", "::", ""):  # every interface: no name of its own, clients say --allowed-host
        names.append(host)
    out = []
    for name in names + list(extra):
        name = name.strip().lower()
        try:
            if isinstance(ipaddress.ip_address(name.strip("[]")), ipaddress.IPv6Address):
                name = f"[{name.strip('[]')}]"
        except ValueError:
            pass
        if "*" in name[1:] or (name.startswith("*") and name != "*" and not name.startswith("*.")):
            raise DataError(f"--allowed-host {name}: a wildcard may only begin a name, as in *.example.com (or be "
                            "* alone, which lets any web page reach the model).")
        if name not in out:
            out.append(name)
    return out


@dataclass(frozen=True)
class Upload:
    name: str  # the form's file name, or "upload" for a raw body
    data: bytes


class TooLarge(Exception):
    """A request body over the cap."""


def _answer_errors_in_sentences(app, max_body: int) -> None:
    """Every refusal as JSON {"error": a sentence}: not an image, too large, a bad parameter, an HTTP error."""
    @app.exception_handler(DataError)
    async def not_an_image(request, error):
        return JSONResponse({"error": str(error)}, status_code=422)

    @app.exception_handler(TooLarge)
    async def too_large(request, error):
        return JSONResponse({"error": f"That upload is over {max_body >> 20} MB; send a smaller copy of the image."},
                            status_code=413)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request, error):
        where = ", ".join(f"{e['loc'][-1]}: {e['msg']}" for e in error.errors())
        return JSONResponse({"error": f"A parameter is not usable ({where})."}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request, error):
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code, headers=error.headers)


def _upload_reader(max_body: int):
    """A FastAPI dependency reading the image of a request (raw body or form field "file"), capped."""

    async def upload(request: Request) -> Upload:
        """The image of a request: its raw body, or its form field "file"; never more than max_body is read."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_body:
            raise TooLarge()  # before reading anything: a client waiting for 100-continue sends nothing
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > max_body:
                raise TooLarge()
            chunks.append(chunk)
        body = b"".join(chunks)
        if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            return Upload("upload", body)

        async def replay():
            return {"type": "http.request", "body": body, "more_body": False}

        async with Request(request.scope, replay).form(max_files=1, max_fields=16) as form:
            field = form.get("file")
            if field is None:
                raise DataError("The form has no field named file; send the image as file (curl -F file=@image.jpg).")
            if isinstance(field, str):
                return Upload("upload", field.encode())
            return Upload(field.filename or "upload", await field.read())

    return upload


def create_app(model: Predictor | ZipPredictor, hosts: list[str], max_body: int = MAX_BODY):
    """The FastAPI application over a loaded model, answering only requests whose Host is one of `hosts`."""
    # One prediction at a time with all the cores (torch.set_num_threads in main), instead of one per request
    # thread each with all the cores: the same throughput without oversubscribing. Decoding runs in parallel.
    model_lock = threading.Lock()
    app = FastAPI(title="Transfer Learning Studio model", docs_url=None, redoc_url=None)  # the docs page is CDN
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)

    _answer_errors_in_sentences(app, max_body)
    upload = _upload_reader(max_body)

    @app.get("/")
    def usage() -> dict:
        kind = "labels (several per image)" if model.thresholds is not None else "classes"
        return {"model": f"{len(model.class_names)} {kind} at {model.size} px",
                "predict": "POST /predict with an image as the body, or as the form field 'file'; ?top=5&tta=false",
                "examples": ["curl -F file=@cat.jpg http://HOST:PORT/predict",
                             "curl --data-binary @cat.jpg http://HOST:PORT/predict"],
                "answer": {"file": "cat.jpg", "top": [["class", 0.97]], "unknown": False},
                "health": "GET /health"}

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "classes": list(model.class_names), "size": model.size,
                "multi_label": model.thresholds is not None}

    @app.post("/predict", openapi_extra={"requestBody": {"content": {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "file": {"type": "string", "format": "binary"}}}}}}})
    def predict(image: Upload = Depends(upload), top: int = Query(5, ge=1), tta: bool = False) -> dict:
        # a def endpoint: FastAPI runs it in its thread pool, so the event loop keeps reading other requests
        pixels = decode_image(image.data, model.size, model.resize)[None]  # (1, 3, S, S) uint8; DataError
        with model_lock:
            prediction = model.pixels(pixels, top=top, tta=tta)[0]
        return prediction.to_dict(image.name)

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.ship.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a run folder, or an export zip (core.ship.export)")
    parser.add_argument("--port", type=int, default=8000, help="default 8000")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every interface)")
    parser.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                        help="also answer requests addressed to NAME (the name or address clients use); repeatable")
    args = parser.parse_args(argv)
    try:
        hosts = allowed_hosts(args.host, args.allowed_host)
        model = load_model(args.source)
    except (BrokenRun, DataError, FileNotFoundError) as error:
        print(error, file=sys.stderr)
        return 2
    # torch's default counts the machine's cores, not the ones this process may use (taskset, containers)
    torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    import uvicorn

    print(f"Serving {args.source.name} ({len(model.class_names)} classes, {model.size} px): POST an image to "
          f"/predict; requests must name one of: {', '.join(hosts)}", flush=True)
    if args.host in ("0.0.0.0", "::") and args.allowed_host == []:
        print("Listening on every interface, but only requests addressed to this machine's own names are answered: "
              "add --allowed-host with the name or address other machines use.", flush=True)
    uvicorn.run(create_app(model, hosts), host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
