"""Per-epoch JSON-lines logs that stay consistent with checkpoints across crashes and resumes."""

from __future__ import annotations

import json
import os
from pathlib import Path

from stablejax.sharding import primary_only


@primary_only
def append_record(path: str | Path, record: dict) -> None:
    """Append one JSON record (one line) and flush it to disk."""
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


@primary_only
def truncate_log(path: str | Path, n_epochs: int) -> None:
    """Keep only the records of epochs ``< n_epochs`` (those a restored checkpoint contains);
    a run killed between writing its log line and its checkpoint logs that epoch again."""
    path = Path(path)
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines()
            if ln.strip() and json.loads(ln)["epoch"] < n_epochs]
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(k + "\n" for k in keep))
    os.replace(tmp, path)


def read_records(path: str | Path) -> list[dict]:
    """All records of a log (empty list when the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
