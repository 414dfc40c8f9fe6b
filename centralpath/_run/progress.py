"""Progress for long loops: a tqdm bar on a terminal, plain lines in a log.

tqdm redraws its bar with carriage returns, which a terminal overwrites but a log file (a job
scheduler's stderr, `2> log.txt`, CI) keeps: hundreds of partial frames per run. When stderr is
not a terminal, `progress` writes a few complete lines instead, about every tenth of the work
and at the end.
"""

from __future__ import annotations

import sys
import time


class _Lines:
    """The subset of tqdm's interface the package uses, printing whole lines to `stream`."""

    def __init__(self, total: int, initial: int, desc: str, unit: str, stream, every: int):
        self.total, self.n, self.desc, self.unit = int(total), int(initial), desc, unit
        self.stream = stream
        self.every = max(1, every)
        self.postfix = ""
        self.start = time.perf_counter()
        self._last = self.n

    def set_postfix(self, refresh: bool = False, **values) -> None:
        del refresh
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n - self._last >= self.every or self.n >= self.total:
            self._last = self.n
            elapsed = time.perf_counter() - self.start
            extra = f"; {self.postfix}" if self.postfix else ""
            print(
                f"{self.desc}: {self.n}/{self.total} {self.unit}s ({elapsed:.0f} s){extra}",
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        pass


class _Off(_Lines):
    def __init__(self):
        super().__init__(0, 0, "", "", None, 1)

    def update(self, n: int = 1) -> None:
        pass


def progress(
    total: int,
    *,
    enabled: bool = True,
    initial: int = 0,
    desc: str = "progress",
    unit: str = "step",
    stream=None,
):
    """A progress reporter with tqdm's `update`, `set_postfix` and `close`: tqdm on a terminal,
    plain lines (about ten per run) otherwise, nothing when not `enabled`."""
    stream = sys.stderr if stream is None else stream
    if not enabled:
        return _Off()
    isatty = getattr(stream, "isatty", None)
    if callable(isatty) and isatty():
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False, file=stream)
    return _Lines(total, initial, desc, unit, stream, every=-(-max(total, 1) // 10))


__all__ = ["progress"]
