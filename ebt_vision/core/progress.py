"""Progress bars that suit both a terminal and a log file.

In a terminal a tqdm bar redraws itself in place. Written to a file or CI log, the same redraws become thousands of
carriage-return updates on one line; there the bar prints a plain line at most every ``LOG_INTERVAL`` seconds.
"""

from __future__ import annotations

import sys

from tqdm import tqdm as plain_tqdm
from tqdm.auto import tqdm

LOG_INTERVAL = 10.0


class _LogLines(plain_tqdm):
    """A tqdm bar that writes whole lines (no carriage returns): for logs, CI and pipes."""

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        text = (self.__str__() if msg is None else msg).strip()
        if text:  # tqdm clears its line with an empty message: nothing to clear in a log
            self.fp.write(text + "\n")
            self.fp.flush()
        return True


def progress(iterable=None, *, desc: str = "", total: int | None = None, disable: bool = False, **kwargs) -> plain_tqdm:
    """``tqdm(iterable, ...)`` on a terminal; a line every ``LOG_INTERVAL`` seconds elsewhere."""
    stream = kwargs.pop("file", sys.stderr)
    if disable or stream.isatty():
        return tqdm(iterable, desc=desc, total=total, disable=disable, file=stream, **kwargs)
    return _LogLines(iterable, desc=desc, total=total, file=stream, mininterval=LOG_INTERVAL, maxinterval=LOG_INTERVAL,
                     dynamic_ncols=False, ncols=100, **kwargs)  # fmt: skip
