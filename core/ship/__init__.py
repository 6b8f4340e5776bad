"""Using a model outside training: prediction, verified export, and serving over HTTP."""

# Every exported model file's interface (core.ship.export): its input and its outputs, in this order.
INPUT_NAME = "pixels"
OUTPUT_NAMES = ("probabilities", "unknown_score", "unknown")
LABELS_OUTPUT = "labels"  # a run of label sets' fourth output: (B, C) bool, each label at or above its threshold


def output_names(multi_label: bool) -> tuple[str, ...]:
    return (*OUTPUT_NAMES, LABELS_OUTPUT) if multi_label else OUTPUT_NAMES
