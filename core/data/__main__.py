"""`python -m core.data`: check a dataset, find its label errors, mend it, export it.

    python -m core.data inspect PATH_OR_ZIP [--json] [--label-regex REGEX]   # exit 0: trainable, 2: why not
    python -m core.data suspects PATH [--json] [--top N]    # images whose label is probably wrong; near-duplicates
                                                             # (label sets: the suggested set, + missing, - extra)
    python -m core.data edit PATH EDITS.json                 # [{"file": ..., "label": NEW_LABEL or null}, ...]
    python -m core.data undo PATH                            # take back the last batch of edits
    python -m core.data export PATH OUT.zip                  # the mended dataset as a new zip
    python -m core.data plan PATH [--json] [--add N] [--run RUN_DIR]   # which class (or label) needs more images
Every refusal is one sentence and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.data.builtin import builtin_report
from core.data.load import inspect_source
from core.data.multilabel import RARE_LABEL, joined
from core.errors import BrokenRun, DataError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.data", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("inspect", "check a dataset before training"),
                       ("suspects", "rank the images whose label is probably wrong; list near-duplicates"),
                       ("edit", "record relabel/remove edits from a JSON file"), ("undo", "take back the last edits"),
                       ("export", "write the mended dataset as a new zip"),
                       ("plan", "which classes to collect more images of, and the recall they would reach")):
        command = commands.add_parser(name, help=text)
        command.add_argument("source", help="a folder, a .zip, or builtin:NAME")
        command.add_argument("--label-regex", default=None, help="labels from file names: a regex with one group")
        if name in ("inspect", "suspects", "plan"):
            command.add_argument("--json", action="store_true", help="print JSON")
        if name == "suspects":
            command.add_argument("--top", type=int, default=None, help="list the N most suspicious images, "
                                 "instead of those confident learning flags")
        if name == "plan":
            command.add_argument("--add", type=int, default=100, help="images a class would get (default 100)")
            command.add_argument("--run", type=Path, default=None, help="a run folder trained on this dataset: "
                                 "its split and its recall, instead of the probe's")
        if name in ("edit", "export"):
            command.add_argument("file", type=Path, help="EDITS.json" if name == "edit" else "OUT.zip (must not exist)")
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (DataError, BrokenRun, OSError) as error:
        message = str(error) if isinstance(error, DataError | BrokenRun) else \
            f"{error.filename or 'A file'} could not be used ({(error.strerror or str(error)).lower()})."
        print(json.dumps({"ok": False, "verdict": message}) if getattr(args, "json", False) else message)
        return 2


def inspect(args: argparse.Namespace) -> int:
    """The health report; exit 0 if trainable, else 2."""
    if args.source.startswith("builtin:"):
        report = builtin_report(args.source)
    else:
        report = inspect_source(args.source, args.label_regex)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1, ensure_ascii=False))
    else:
        print(f"{report.source}: {report.layout}, in {report.root}")
        width = max(len(name) for name in report.class_counts) if report.class_counts else 0
        for name, count in report.class_counts.items():
            flag = "  (few: imbalanced)" if name in report.imbalanced else ""
            print(f"  {name:<{width}}  {count:>6}{flag}")
        if report.sizes.get("width"):
            w, h = report.sizes["width"], report.sizes["height"]
            print(f"image sizes: width {w['min']}–{w['max']} (median {w['median']}), "
                  f"height {h['min']}–{h['max']} (median {h['median']})")
        for file, reason in report.skipped:
            print(f"skipped {file}: {reason}")
        for group in report.duplicates:
            print(f"identical files: {', '.join(group)}")
        for group in report.conflicts:
            print(f"the same image under different labels: {', '.join(group)}")
        if report.too_small:
            print(f"too few images to split: {', '.join(report.too_small)}")
        print_label_sets(report.label_sets)
        print(report.verdict())
        for suggestion in report.suggestions:
            print(suggestion)
    return 0 if report.ok else 2


def print_label_sets(summary: dict) -> None:
    """A multi-label dataset's labels per image, pairs that go together, images with none, labels too rare."""
    if not summary:
        return
    spread = summary["per_image"]
    print(f"labels per image: {spread['min']}–{spread['max']} (median {spread['median']:g})")
    for a, b, n in summary["co_occurrence"][:10]:
        print(f"  together on {n} images: {a} + {b}")
    if summary["no_label"]:
        print(f"{len(summary['no_label'])} image(s) with no label: {', '.join(summary['no_label'][:5])}"
              f"{' …' if len(summary['no_label']) > 5 else ''}")
    if summary["rare"]:
        print(f"too rare to learn well (fewer than {RARE_LABEL} images): {', '.join(summary['rare'])}")


def suspects(args: argparse.Namespace) -> int:
    from core.fix.mend import review, review_json

    data, result = review(args.source, args.label_regex)
    found = review_json(data, result, args.top)
    if args.json:
        print(json.dumps(found, indent=1, ensure_ascii=False))
        return 0
    if data.multi_label:
        print(f"{len(found['suspects'])} image(s) whose label set the evidence contradicts (features: "
              f"{', '.join(found['layers'])}); + a label probably missing, - one probably extra:")
        for row in found["suspects"]:
            print(f"  {row['score']:.2f}  {row['file']}: labelled {joined(tuple(row['labels'])) or 'no label'}, "
                  f"suggested {joined(tuple(row['suggested'])) or 'no label'} "
                  f"({' '.join([*('+' + m for m in row['missing']), *('-' + e for e in row['extra'])])})")
    else:
        print(f"{len(found['suspects'])} image(s) whose label the neighbours contradict (features: "
              f"{', '.join(found['layers'])}):")
        for row in found["suspects"]:
            print(f"  {row['score']:.2f}  {row['file']}: labelled {row['label']}, looks like {row['suggested']}")
    for pair in found["near_duplicates"]:
        why = "across train/validation" if pair["crosses_split"] else "with different labels"
        print(f"near-duplicates {why} ({pair['similarity']:.3f}): {' and '.join(pair['files'])}")
    return 0


def plan(args: argparse.Namespace) -> int:
    from core.fix.mend import plan as collect_plan

    if args.add < 1:
        raise DataError("--add must be 1 or more images.")
    found = collect_plan(args.source, args.label_regex, args.add, args.run)
    if args.json:
        print(json.dumps(found.to_json(), indent=1, ensure_ascii=False))
        return 0
    plural = {"class": "classes", "label": "labels"}[found.kind]
    print(f"Recall on {found.measured_on} (from {found.recall_from}); the {plural} to collect first come first:")
    for name in found.collect_next:
        print(f"  {found.sentence(name)}")
    return 0


def edit(args: argparse.Namespace) -> int:
    from core.fix.mend import record_edits

    try:
        edits = json.loads(args.file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise DataError(f"{args.file} is not a JSON list of edits.") from None
    batch = record_edits(args.source, edits, "cli", args.label_regex)
    print(f"Recorded {len(edits)} edit(s) as batch {batch}; the images themselves are unchanged. "
          f"Undo with: python -m core.data undo {args.source}")
    return 0


def undo(args: argparse.Namespace) -> int:
    from core.data.load import edit_log_for

    taken = edit_log_for(args.source).undo()
    print(f"Took back batch {taken['batch']} ({len(taken.get('edits', []))} edit(s))." if taken else
          "There are no edits to take back.")
    return 0


def export(args: argparse.Namespace) -> int:
    from core.fix.mend import mended_zip, write_zip

    if args.file.exists():
        raise DataError(f"{args.file} exists already; choose a new file name (nothing is ever overwritten).")
    write_zip(mended_zip(args.source, args.label_regex), args.file)
    print(args.file)
    return 0


COMMANDS = {"plan": plan, "inspect": inspect, "suspects": suspects, "edit": edit, "undo": undo, "export": export}


if __name__ == "__main__":
    sys.exit(main())
