"""Errors that carry a sentence for a person, not a traceback."""


class DataError(ValueError):
    """A dataset that cannot be used, with a sentence a person can act on."""
