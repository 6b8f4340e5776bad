"""The data loop's review: label-error suspects, near-duplicates, and mending a dataset with edits."""
