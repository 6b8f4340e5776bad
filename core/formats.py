"""How the engine's numbers are shown to people; imports nothing heavy, so pages and the terminal share it."""


def format_bytes(n: float) -> str:
    """A size as people read it: 1.2 GB, 35 MB, 420 KB (never "0 MB")."""
    if n >= 2**30:
        return f"{n / 2**30:.1f} GB"
    if n >= 2**20:
        return f"{n / 2**20:.0f} MB"
    return f"{max(n / 2**10, 1):.0f} KB"


def format_seconds(seconds: float) -> str:
    """Seconds as mm:ss, as fastai's epoch table shows them."""
    seconds = int(round(seconds))
    return f"{seconds // 60:02d}:{seconds % 60:02d}"
