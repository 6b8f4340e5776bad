"""Opening a study: its storage, sampler and pruner; and its storage as shown to people."""
from __future__ import annotations

import time


def open_study(name: str, storage: str, sampler_seed: int | None):
    """(the study, whether this call made it) with a TPE sampler that spreads parallel workers' trials apart
    (constant liar: a running trial counts as a poor one) and the median pruner. Of workers started at once, exactly
    one makes the study: that one alone puts the starting settings first (two did, and tried them twice)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the worker says what happens in its own words
    sampler = optuna.samplers.TPESampler(seed=sampler_seed, constant_liar=True)
    # From the third trial on, and not before a third of a trial's schedule past the frozen phase (steps are tenths:
    # worker.schedule_step)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=3)
    for attempt in range(OPEN_ATTEMPTS):
        try:
            try:
                return optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                           direction="maximize"), True
            except optuna.exceptions.DuplicatedStudyError:
                return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner), False
        except Exception:  # sqlalchemy's OperationalError or IntegrityError: see OPEN_ATTEMPTS
            if attempt == OPEN_ATTEMPTS - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


# Workers started at once on a new SQLite file both make its tables: one fails with "table ... already exists" or a
# UNIQUE constraint on alembic_version (2 of 8 pairs started at once here); a moment later the tables are there and
# the study opens. A storage that cannot be opened at all fails after the last attempt, about 5 s later.
OPEN_ATTEMPTS = 5


def shown_storage(url: str) -> str:
    """The storage URL without its password, as written into run folders and printed."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads; Optuna says so when it opens it
        return url


def absolute_storage(url: str) -> str:
    """A SQLite URL with a relative path (`sqlite:///sweeps.db`) made absolute, so that the dashboard, started
    elsewhere, opens the same file; any other URL as it is."""
    path = sqlite_file(url)
    return f"sqlite:///{path.resolve()}" if path is not None and not path.is_absolute() else url


def sqlite_file(url: str):
    """The file of a `sqlite:///PATH` URL (a Path), or None for another kind of storage or an in-memory one."""
    from pathlib import Path

    prefix = "sqlite:///"
    if not url.startswith(prefix) or url[len(prefix):] in ("", ":memory:"):
        return None
    return Path(url[len(prefix):].split("?", 1)[0])
