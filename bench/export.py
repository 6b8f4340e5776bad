"""Every export of the defaults' digits run: its size, its agreement with the app and accuracy (verification.json),
its images per second on this CPU, and the web page's time to its first answer in Chromium.

1. train with the defaults on the digits (`python -m core.train --data builtin:digits`), export every format;
2. each model file, one after the other, over the validation images in batches of --batch, after a warm-up: the
   median of --repeats passes, and its ratio to model.onnx measured in the same command;
3. the web page, unzipped, in a fresh offline Chromium context each time: from the navigation's start to the top
   class on the page for one chosen image; the median of --repeats.

    .venv/bin/python -m bench.export [--repeats 5] [--batch 32] [--run RUN_DIR]
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import time
import zipfile
from pathlib import Path

import torch
from PIL import Image

from bench.common import python, run_timed, scratch
from core.data.load import Split, load_source
from core.runs.folder import RunFolder
from core.ship.export import export_run, zip_export
from core.ship.verify import INT8_FILES, MODEL_FILES, runner


def images_per_second(path: Path, pixels: torch.Tensor, batch: int, repeats: int) -> float:
    predict = runner(path)
    predict(pixels[:batch])  # warm-up: sessions and interpreters allocate on the first call
    passes = []
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, len(pixels), batch):
            predict(pixels[start:start + batch])
        passes.append(len(pixels) / (time.perf_counter() - started))
    return statistics.median(passes)


def web_first_answer(page_path: Path, image: Path, repeats: int) -> list[float]:
    """Seconds from the navigation's start to the top class on the page, in fresh offline contexts."""
    from playwright.sync_api import sync_playwright

    from tests.browser_support import launch_chromium

    seconds = []
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        for _ in range(repeats):
            context = browser.new_context(offline=True)
            page = context.new_page()
            page.set_default_timeout(120_000)
            started = time.perf_counter()
            page.goto(page_path.as_uri(), wait_until="domcontentloaded")
            page.set_input_files("#file", str(image))
            page.wait_for_selector("#top1:not(:empty)")
            seconds.append(time.perf_counter() - started)
            context.close()
        browser.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--run", type=Path, help="an existing run to export (default: train the defaults' run)")
    args = parser.parse_args()
    with scratch("bench-export-") as folder:
        run_dir = args.run
        if run_dir is None:
            timed = run_timed([python(), "-m", "core.train", "--data", "builtin:digits", "--runs-dir",
                               str(folder / "runs"), "--name", "defaults"])
            if timed.returncode:
                raise SystemExit("\n".join(timed.output[-20:]))
            run_dir = folder / "runs" / "defaults"
            print(f"the defaults' digits run: {timed.wall_s:.0f} s")
        started = time.perf_counter()
        export = export_run(run_dir)
        print(f"export, every format, verified: {time.perf_counter() - started:.1f} s")
        verification = json.loads((export / "verification.json").read_text())
        config = RunFolder(run_dir).config()
        valid = Split.from_dataset(load_source(config.data, config.size), config.valid_pct, config.seed).valid_images
        pixels = valid.permute(0, 2, 3, 1).contiguous()
        rates = {}
        print(f"{'file':24} {'size':>9} {'agrees':>7} {'accuracy':>8} {'images/s':>9} {'vs ONNX':>7} "
              f"{'batch 1':>8} {'vs ONNX':>7}")
        for name, file in [*MODEL_FILES.items(), *((f"{n} int8", f) for n, f in INT8_FILES.items())]:
            if not (export / file).is_file():
                continue
            rates[file] = images_per_second(export / file, pixels, args.batch, args.repeats)
            rates[f"{file} 1"] = images_per_second(export / file, pixels[:64], 1, args.repeats)
            measured = verification["int8"][name.split()[0]] if name.endswith("int8") else {
                "top1_agreement": verification[f"{name}_top1_agreement"], "accuracy": verification["accuracy"][name]}
            print(f"{file:24} {verification['sizes'][file] / 1e6:7.1f} MB {measured['top1_agreement']:7.1%} "
                  f"{measured['accuracy']:8.1%} {rates[file]:9.0f} {rates[file] / rates['model.onnx']:6.2f}× "
                  f"{rates[f'{file} 1']:8.0f} {rates[f'{file} 1'] / rates['model.onnx 1']:6.2f}×")
        with zipfile.ZipFile(io.BytesIO(zip_export(run_dir))) as archive:
            archive.extractall(folder / "unzipped")
        image = folder / "digit.png"
        Image.fromarray(valid[0].permute(1, 2, 0).numpy()).save(image)
        seconds = web_first_answer(folder / "unzipped" / run_dir.name / "web" / "index.html", image, args.repeats)
        print(f"web/index.html ({verification['sizes']['web/index.html'] / 1e6:.1f} MB): first answer "
              f"{statistics.median(seconds):.2f} s after opening it (median of {len(seconds)}: "
              f"{' '.join(f'{s:.2f}' for s in seconds)})")
        print(f"{len(pixels)} validation images at {config.size} px, batches of {args.batch} (LiteRT's file takes "
              f"one image a call), and 64 of them one by one; torch threads "
              f"{torch.get_num_threads()}; median of {args.repeats} passes; agreement and accuracy from "
              "verification.json")


if __name__ == "__main__":
    main()
