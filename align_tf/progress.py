"""The one progress bar of align-tf: tqdm when asked for (or, with "auto", when the work is long
enough to be worth one), and a silent stand-in otherwise, so callers never check for None."""

from __future__ import annotations

import contextlib

# "A progress bar past a few dozen items": below this, bars are noise.
PROGRESS_MIN_ITEMS = 48
# Where bars are drawn; None: sys.stderr as it is when the bar is made.
_BAR_FILE = None


@contextlib.contextmanager
def bars_drawn_on(stream):
    """Bars made inside the block are drawn on `stream` (the CLI's terminal while file descriptor
    2, where Ray's own lines go, points elsewhere)."""
    global _BAR_FILE
    previous, _BAR_FILE = _BAR_FILE, stream
    try:
        yield
    finally:
        _BAR_FILE = previous


class SilentProgress:
    """What `progress_bar` returns when no bar is shown: accepts the same calls, prints nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(total: int | None, desc: str, enabled="auto", unit: str = "item", initial: int = 0,
                 leave: bool = True):
    """A tqdm bar over `total` items when `enabled` is True, or "auto" and `total` is past
    `PROGRESS_MIN_ITEMS` or unknown (None: the work may be long); otherwise a `SilentProgress`."""
    if enabled == "auto":
        enabled = total is None or total > PROGRESS_MIN_ITEMS
    if not enabled:
        return SilentProgress()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave, file=_BAR_FILE)
