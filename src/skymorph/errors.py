"""The common base of the errors that skymorph raises on purpose.

Every exception class of skymorph derives from :class:`SkymorphError`, and most also
from the built-in class that fits (``ValueError`` for bad input or settings,
``RuntimeError`` for a run directory or a compute cluster in the wrong state), so
code that catches those keeps working.  The command line prints a
``SkymorphError`` as one sentence that says what to do; any other exception is a
bug, shown with its traceback.  This module imports nothing, so every layer may use it.
"""

from __future__ import annotations

__all__ = ["SkymorphError", "Reject"]


class SkymorphError(Exception):
    """An error that skymorph raises on purpose, with a message that says what to do.

    Examples
    --------
    >>> from skymorph.errors import SkymorphError
    >>> from skymorph.config import ConfigError
    >>> issubclass(ConfigError, SkymorphError), issubclass(ConfigError, ValueError)
    (True, True)
    """


class Reject(SkymorphError):
    """One input is unusable; the message is the reason written to rejects.csv.

    Raised by the array code of :mod:`skymorph.core.stamps` and :mod:`skymorph.core.detect`
    and by the readers of :mod:`skymorph.io.readers` (which re-export it); ingest turns it
    into a row of ``rejects.csv`` and carries on with the next galaxy.
    """
