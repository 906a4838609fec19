"""Where generated data lives: never the current directory by accident."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "STABLEJAX_DATA"


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The data cache root: ``data_dir`` if given, else ``$STABLEJAX_DATA``, else the user cache
    directory (e.g. ``~/.cache/stablejax``)."""
    if data_dir is not None:
        return Path(data_dir).expanduser().resolve()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser().resolve()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("stablejax", appauthor=False))
