"""The run folder contract and its owners: files, metrics, checkpoints, the runs store, settings, curves."""
