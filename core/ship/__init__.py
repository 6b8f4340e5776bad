"""Using a model outside training: prediction, verified export, and serving over HTTP."""

# Every exported model file's interface (core.ship.export): its input and its outputs, in this order.
INPUT_NAME = "pixels"
OUTPUT_NAMES = ("probabilities", "unknown_score", "unknown")
