"""Progress bars for the CLI: library loops report through ``progress(done, total, info)``."""

from __future__ import annotations

from tqdm.auto import tqdm

from stablejax.sharding import is_primary


class ProgressBar:
    """A callable progress callback backed by tqdm; use as a context manager."""

    def __init__(self, desc: str, unit: str = "it", postfix_keys: tuple[str, ...] = ()):
        self._bar = None
        self._desc, self._unit, self._keys = desc, unit, postfix_keys

    def __call__(self, done: int, total: int, info: dict | None = None) -> None:
        if not is_primary():  # a multi-host run shows progress from process 0 only
            return
        if self._bar is None:
            # Start from the first reported count (a resumed run, or a loop that reports after
            # its first step), so the rate and ETA count only work timed by this bar.
            self._bar = tqdm(total=total, initial=done, desc=self._desc, unit=self._unit,
                             dynamic_ncols=True)
        self._bar.total = total
        self._bar.n = done
        if info and self._keys:
            self._bar.set_postfix({k: info[k] for k in self._keys if k in info}, refresh=False)
        self._bar.refresh()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.close()
