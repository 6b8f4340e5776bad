"""A web page that runs an exported model in the browser: one index.html, opened by double-click (file://), with no
network and no server. It classifies a chosen or dropped image and the camera, and shows the top classes with their
probabilities and "Not one of the N classes"; the top class's name is in the element with id `top1` (a run of label
sets: the labels found, with every label's probability listed).

What loads from file:// in Chromium decides the shape: module scripts from files, import() of the .mjs glue and
fetch() of the .wasm are all refused (origin 'null'); inline scripts are not. So everything is inside the page:
onnxruntime-web's bundle (ort.wasm.bundle.min.mjs: the API with the wasm glue, its closing `export{...}` made a
global), its .wasm (gzipped, base64; handed over as `ort.env.wasm.wasmBinary`, one thread, no workers), model.onnx
(base64, gzipped when that saves a tenth), the classes and the run's size and resize. A Content-Security-Policy
forbids every request. The page's own script and layout are assets/web/app.js and page.html.

onnxruntime-web comes from its npm package at ORT_WEB_VERSION, checked against the registry's sha512, into
assets/vendor/ (not in git): `python -m core.ship.web vendor`, which scripts/setup.sh runs.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import html
import io
import json
import re
import shutil
import sys
import tarfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ORT_WEB_VERSION = "1.31.1"
ORT_WEB_INTEGRITY = ("sha512-5GeH+bWQ+HxM10z7erGlsWqryrwMbSvm/1tkIsKTT48g0fI19VXVVC435t4t7VsPdSQeS7NmuZPXrQ73k82URw==")
ORT_WEB_URL = f"https://registry.npmjs.org/onnxruntime-web/-/onnxruntime-web-{ORT_WEB_VERSION}.tgz"
VENDOR = ROOT / "assets" / "vendor" / f"onnxruntime-web-{ORT_WEB_VERSION}"
BUNDLE, WASM = "ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.wasm"
PAGE_FILE = "web/index.html"


class WebPageError(ValueError):
    """The page cannot be made, in a sentence."""


def vendor(target: Path = VENDOR) -> Path:
    """onnxruntime-web's bundle, .wasm and package.json (its licence: MIT) from the npm registry into `target`, once;
    checked against the pinned sha512."""
    if all((target / name).is_file() for name in (BUNDLE, WASM, "package.json")):
        return target
    with urllib.request.urlopen(ORT_WEB_URL, timeout=120) as response:
        packed = response.read()
    digest = "sha512-" + base64.b64encode(hashlib.sha512(packed).digest()).decode()
    if digest != ORT_WEB_INTEGRITY:
        raise WebPageError(f"onnxruntime-web {ORT_WEB_VERSION} from the registry is not the pinned package "
                           f"({digest[:20]}…): not used.")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(packed)) as archive:
        for name, inside in ((BUNDLE, f"package/dist/{BUNDLE}"), (WASM, f"package/dist/{WASM}"),
                             ("package.json", "package/package.json")):  # its licence (MIT) and version
            (partial / name).write_bytes(archive.extractfile(inside).read())
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def available(folder: Path = VENDOR) -> bool:
    """Whether onnxruntime-web is here to make a page with."""
    return all((folder / name).is_file() for name in (BUNDLE, WASM))


def _ort_script(folder: Path) -> str:
    """The bundle as an inline module script that sets globalThis.ort instead of exporting."""
    bundle = (folder / BUNDLE).read_text(encoding="utf-8")
    start = bundle.rfind("export{")
    end = bundle.find("}", start)
    if bundle.count("export{") != 1 or not re.fullmatch(r";?\s*(//# sourceMappingURL=\S+\s*)?", bundle[end + 1:]):
        raise WebPageError(f"onnxruntime-web's {BUNDLE} is not laid out as expected; the page cannot inline it.")
    pairs = [item.strip().partition(" as ") for item in bundle[start + 7:end].split(",")]
    script = bundle[:start] + "globalThis.ort={" + ",".join(f"{b or a}:{a}" for a, _, b in pairs) + "};\n"
    _inline_safe(script, BUNDLE)
    return script


def _inline_safe(text: str, what: str) -> None:
    lowered = text.lower()
    if any(bad in lowered for bad in ("</script", "<!--", "<script")):
        raise WebPageError(f"{what} holds text that would end its script block; the page cannot inline it.")


def _data_block(name: str, data: bytes) -> str:
    return f'<script type="text/plain" id="{name}">{base64.b64encode(data).decode("ascii")}</script>\n'


def build_page(onnx_model: bytes, class_names: list[str], size: int, resize: str, title: str,
               ort_folder: Path = VENDOR, multi_label: bool = False) -> str:
    """The page's text, with everything inside it."""
    if not available(ort_folder):
        raise WebPageError(f"onnxruntime-web {ORT_WEB_VERSION} is not in {ort_folder}: run "
                           "`.venv/bin/python -m core.ship.web vendor` (or scripts/setup.sh) once with a network, "
                           "then export again.")
    packed = gzip.compress(onnx_model, 9, mtime=0)
    zipped = len(packed) < 0.9 * len(onnx_model)
    config = {"classes": class_names, "size": size, "resize": resize, "modelGzip": zipped,
              "ortVersion": ORT_WEB_VERSION, "multiLabel": multi_label}
    # No '<' in the JSON, so no class name can end its script block.
    config_json = json.dumps(config, ensure_ascii=False).replace("<", "\\u003c")
    blocks = (_data_block("ort-wasm", gzip.compress((ort_folder / WASM).read_bytes(), 9, mtime=0))
              + _data_block("model", packed if zipped else onnx_model))
    app = (ROOT / "assets" / "web" / "app.js").read_text(encoding="utf-8")
    page = (ROOT / "assets" / "web" / "page.html").read_text(encoding="utf-8")
    parts = {"TITLE": html.escape(title), "CONFIG": config_json, "BLOBS": blocks, "APP": app,
             "ORT": _ort_script(ort_folder)}
    # one pass: what goes in (a run named __APP__, the bundle's own text) is never read for markers again
    return re.sub(r"__(TITLE|CONFIG|BLOBS|APP|ORT)__", lambda found: parts[found.group(1)], page)


def write_page(export_folder: Path, class_names: list[str], size: int, resize: str, title: str,
               multi_label: bool = False) -> Path:
    """export_folder/web/index.html from export_folder/model.onnx."""
    text = build_page((export_folder / "model.onnx").read_bytes(), class_names, size, resize, title,
                      multi_label=multi_label)
    target = export_folder / PAGE_FILE
    target.parent.mkdir(exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return target


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["vendor"]:
        print("usage: python -m core.ship.web vendor   # onnxruntime-web into assets/vendor/, once", file=sys.stderr)
        return 2
    try:
        print(vendor())
    except (OSError, WebPageError) as error:
        print(f"onnxruntime-web was not fetched ({error}); exports will leave the web page out.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
