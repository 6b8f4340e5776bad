"""How the engine's numbers are shown to people; imports nothing heavy, so pages and the terminal share it."""


def format_seconds(seconds: float) -> str:
    """Seconds as mm:ss, as fastai's epoch table shows them."""
    seconds = int(round(seconds))
    return f"{seconds // 60:02d}:{seconds % 60:02d}"
