"""Datasets: sources, archives, layouts, health reports, decoded images, batches, augmentation, edits."""
