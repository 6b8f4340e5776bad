"""Data bigger than memory holds comfortably: the decoded images in a memory-mapped file (core.data.mapped) against the
same images in memory, same training command, one after the other, each with a data folder of its own (so both
decode every image).

    .venv/bin/python -m bench.fashion /tmp/fashion70k --all                       # once: 70,000 PNGs
    .venv/bin/python -m bench.big_data --make /tmp/fashion100k --from /tmp/fashion70k --count 100000   # once
    .venv/bin/python -m bench.big_data /tmp/fashion100k [--size 128] [--file-only] [--smoke]

--make links every image of --from into a new folder and adds mirrored copies of its training images up to --count.
Prints each run's wall time, final accuracy and peak resident memory, then the ratios (unless --file-only).
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from bench.common import digits_folder, python, run_timed


def make(out: Path, source: Path, count: int) -> None:
    from PIL import Image, ImageOps

    if out.exists():
        raise SystemExit(f"{out} exists; choose a new folder.")
    files = sorted(source.rglob("*.png"))
    for file in files:
        target = out / file.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(file, target)
    train = [file for file in files if file.relative_to(source).parts[0] == "train"]
    extra = max(count - len(files), 0)
    for k in range(extra):
        file = train[int(k * len(train) / extra)]
        target = out / file.relative_to(source)
        with Image.open(file) as image:
            ImageOps.mirror(image).save(target.with_name(f"mirrored-{target.name}"))
    print(f"{len(files) + extra} images under {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?", type=Path)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--file-only", action="store_true", help="skip the run with the images in memory")
    parser.add_argument("--make", type=Path, help="write a folder of --count images made from --from")
    parser.add_argument("--from", dest="source", type=Path)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--smoke", action="store_true", help="200 digits at 16 px, to check the benchmark runs")
    args = parser.parse_args()
    if args.make:
        return make(args.make, args.source, args.count)
    with tempfile.TemporaryDirectory() as scratch:
        data = digits_folder(Path(scratch) / "digits") if args.smoke else args.data
        size = 16 if args.smoke else args.size
        flags = ["--data", str(data), "--size", str(size), "--freeze-epochs", "1", "--epochs", "1"]
        results = {}
        for where, limit_mb in (("file", "0"), *(() if args.file_only else (("memory", "1000000"),))):
            env = {"STUDIO_RAM_IMAGES_MB": limit_mb, "STUDIO_DATA_DIR": str(Path(scratch) / f"data-{where}")}
            results[where] = run_timed([python(), "-m", "core.train", *flags, "--runs-dir",
                                        str(Path(scratch) / f"runs-{where}")], env=env)
            print(f"STUDIO_RAM_IMAGES_MB={limit_mb} python -m core.train {' '.join(flags)}", flush=True)
            print("".join(f"  {line}\n" for line in results[where].output if line.startswith(("Unfrozen", "Decoded"))),
                  end="", flush=True)
    for where, timed in results.items():
        print(f"  images in {where:6}  wall {timed.wall_s:6.1f} s  final accuracy {timed.final_accuracy:.1%}  "
              f"peak RSS {timed.peak_rss_mb:.0f} MB")
    if "memory" in results:
        file, memory = results["file"], results["memory"]
        print(f"file / memory: peak RSS {file.peak_rss_mb / memory.peak_rss_mb:.2f}x, wall "
              f"{file.wall_s / memory.wall_s:.2f}x, final accuracy "
              f"{(file.final_accuracy - memory.final_accuracy) * 100:+.1f} points")


if __name__ == "__main__":
    main()
