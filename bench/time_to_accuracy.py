"""Wall time to a validation accuracy: this engine's default recipe against fastai's vision_learner + fine_tune.

    bench/setup_fastai.sh                                   # once: fastai in .venv-fastai, for this only
    .venv/bin/python -m bench.time_to_accuracy              # target: >= 5x faster at equal or better accuracy
    .venv/bin/python -m bench.time_to_accuracy --smoke      # CI: our side only, tiny

Both sides read the same folder of digits PNGs (8x8, written once; the split is the engine's seeded stratified
one, as train/ and valid/ folders), use the same pretrained EfficientNet-Lite0 at 64 px and batch size 64, and
are timed from launching their process to the end of each epoch. The accuracy to reach is fastai's final one:
the ratio is fastai's time to it over ours.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from PIL import Image

from bench.common import ROOT, python, run_timed


def write_digits(folder: Path, train: int | None = None, valid: int | None = None) -> None:
    """The digits as 8x8 PNGs in train/ and valid/ class folders, split as a run would split them (only the first
    `train` and `valid` of each part when given)."""
    from core.data.load import Split, load_source

    data = load_source("builtin:digits", 8)
    split = Split.from_dataset(data, 0.2, 42)
    for part, images, labels in (("train", split.train_images[:train], split.train_labels[:train]),
                                 ("valid", split.valid_images[:valid], split.valid_labels[:valid])):
        for i, (image, label) in enumerate(zip(images, labels)):
            target = folder / part / data.class_names[int(label)]
            target.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(target / f"{part}_{i}.png")


def report(name: str, timed) -> None:
    print(f"{name}: final accuracy {timed.final_accuracy:.1%}, finished after {timed.wall_s:.1f} s, "
          f"peak RSS {timed.peak_rss_mb:.0f} MB")
    for seconds, phase, accuracy in timed.epochs:
        print(f"  {seconds:5.1f} s  {phase:8}  accuracy {accuracy:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true",
                        help="our side only, 200 digits at 16 px, one frozen epoch: checks the benchmark runs")
    args = parser.parse_args()
    fastai_python = ROOT / ".venv-fastai" / "bin" / "python"
    if not args.smoke and not fastai_python.exists():
        raise SystemExit("fastai is needed for this benchmark: run bench/setup_fastai.sh first")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "digits"
        write_digits(folder, *((160, 40) if args.smoke else (None, None)))  # smoke: a few PNGs to write and decode
        ours_args = ["--data", str(folder), "--size", "64", "--bs", "64", "--runs-dir", str(Path(tmp) / "runs")]
        if args.smoke:
            ours = run_timed([python(), "-m", "core.train", *ours_args, "--size", "16", "--epochs", "0",
                              "--freeze-epochs", "1"])
            report("ours (smoke)", ours)
            return
        theirs = run_timed([str(fastai_python), "-m", "bench.fastai_digits", str(folder), "--size", "64", "--bs", "64",
                            "--epochs", "3", "--freeze-epochs", "1"])
        ours = run_timed([python(), "-m", "core.train", *ours_args])
    report("fastai vision_learner + fine_tune(3) (1 frozen + 3 epochs, base_lr 2e-3)", theirs)
    report("ours, the default recipe (5 frozen epochs on cached features + 3 epochs, lr 5e-3)", ours)
    target = theirs.final_accuracy
    ours_time, theirs_time = ours.first_reaching(target), theirs.first_reaching(target)
    if ours_time is None:
        print(f"ours never reached fastai's {target:.1%}")
        return
    print(f"time to {target:.1%} (fastai's final accuracy): fastai {theirs_time:.1f} s, ours {ours_time:.1f} s: "
          f"{theirs_time / ours_time:.1f}x faster (target 5x); final accuracy ours {ours.final_accuracy:.1%} vs "
          f"fastai {theirs.final_accuracy:.1%}")


if __name__ == "__main__":
    main()
