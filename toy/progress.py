"""Progress bars of the toy commands: tqdm on a terminal, nothing when stderr is redirected
(no carriage returns or cursor codes in logs); bars are cleared when done."""

from __future__ import annotations

SHOW = True  # False: no bars at all (``toy all``'s parallel workers share one terminal)


def bar(iterable, label, total=None):
    """``iterable`` wrapped in a tqdm bar labelled ``label`` (off when stderr is not a TTY)."""
    from tqdm import tqdm  # noqa: PLC0415

    return tqdm(iterable, desc=label, total=total, leave=False, disable=None if SHOW else True, dynamic_ncols=True)
