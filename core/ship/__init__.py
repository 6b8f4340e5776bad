"""Using a model outside training: prediction, verified export, and serving over HTTP."""
