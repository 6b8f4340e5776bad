"""metrics.jsonl: one JSON object a line, appended and flushed by the training process, read incrementally by the
dashboard. A row is {"kind": "step", ...} per batch or {"kind": "epoch", ...} per epoch; a reader skips a
half-written last line (it waits for the rest) and any row without the fields every reader relies on (ROW_FIELDS).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

NUMBER = (int, float)

# metrics.jsonl rows: the fields every reader relies on, by kind; a row without them is skipped.
ROW_FIELDS = {"step": {"step": (int,), "loss": NUMBER, "lr": NUMBER},
              "epoch": {"epoch": (int,), "step": (int,), "phase": (str,), "train_loss": NUMBER, "valid_loss": NUMBER,
                        "accuracy": NUMBER, "error_rate": NUMBER, "seconds": NUMBER}}


def fits(value, kinds: tuple) -> bool:
    """`value` is one of `kinds` (bool is not a number here), and a finite number if it is one."""
    if isinstance(value, bool) and bool not in kinds:
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False  # NaN or infinity: no reader's arithmetic or format survives it
    return isinstance(value, kinds)


class MetricsWriter:
    """Appends one JSON object a line to metrics.jsonl, flushed per line so a reader sees it at once."""

    def __init__(self, path: Path):
        self._file = open(path, "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


@dataclass
class MetricsTail:
    """Reads only the bytes appended to metrics.jsonl since the last call; a half-written last line waits."""

    path: Path
    offset: int = 0
    steps: list[dict] = field(default_factory=list)
    epochs: list[dict] = field(default_factory=list)

    def poll(self) -> int:
        """Read new complete lines into `steps` and `epochs`; returns how many rows arrived."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except OSError:
            return 0
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        rows = 0
        for line in chunk[:end].splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            kind = row.get("kind") if isinstance(row, dict) else None
            if kind not in ROW_FIELDS or not all(fits(row.get(key), kinds) for key, kinds in ROW_FIELDS[kind].items()):
                continue  # damaged or foreign: every reader may rely on these fields
            (self.epochs if row.get("kind") == "epoch" else self.steps).append(row)
            rows += 1
        return rows
