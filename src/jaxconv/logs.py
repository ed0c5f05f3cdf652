"""Messages that jaxconv's own use of TFDS and Orbax provokes, kept out of a Python user's output.

TFDS warns "Using custom data configuration" for every built-in dataset jaxconv builds, and
Orbax warns that a type handler is overridden when jaxconv registers its one-process array
writer: both are jaxconv's doing, not the user's, and say nothing to act on. Only records that
start with the given text are dropped, and only while jaxconv does that one thing.
"""

from __future__ import annotations

import contextlib
import logging


class _Drop(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefixes)


@contextlib.contextmanager
def without_absl_messages(*prefixes: str):
    """Drops absl log records starting with any of ``prefixes`` while inside."""
    logger, drop = logging.getLogger("absl"), _Drop(prefixes)
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


__all__ = ["without_absl_messages"]
