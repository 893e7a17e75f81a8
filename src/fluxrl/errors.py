"""User-facing errors: one line that says what is wrong and what would be right."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class FluxError(Exception):
    """A mistake in the user's input. The CLI prints it as one line, without a traceback."""


class TrainingDiverged(FluxError):
    """A loss became NaN or infinite; the run stopped before checkpointing the bad state."""


class Interrupted(FluxError):
    """Ctrl-C or SIGTERM during training: the run wrote a checkpoint and stopped."""


def close_matches(name: str, options: Iterable[str], n: int = 3, prefix: str = "") -> str:
    """Return ``"did you mean a, b?"`` for the options closest to ``name``, or the full list.

    ``prefix`` is put in front of each suggestion (e.g. ``"gym/"``)."""
    options = sorted(options)
    close = difflib.get_close_matches(name, options, n=n, cutoff=0.5)
    if not close:
        lowered = name.lower()
        close = [o for o in options if lowered and lowered in o.lower()][:n]
    if close:
        return "did you mean " + ", ".join(prefix + c for c in close) + "?"
    shown = ", ".join(options[:12]) + (", ..." if len(options) > 12 else "")
    return "choose one of: " + shown
