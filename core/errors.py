"""Errors that carry a sentence for a person, not a traceback."""


class DataError(ValueError):
    """A dataset that cannot be used, with a sentence a person can act on."""


class BrokenRun(ValueError):
    """A run folder (or one of its files) that cannot be read as this app wrote it; the message says which file
    and what is wrong with it, as a sentence."""
