"""structlog set-up: one event per line, key=value, on stderr."""

from __future__ import annotations

import logging
import sys

import structlog


class StderrLogger(structlog.PrintLogger):
    """structlog's PrintLogger, except that a line that cannot be written is dropped.

    When whoever read stderr is gone (a closed terminal, a parent process that ended) a
    write raises BrokenPipeError; raised inside the shutdown it stopped the server halfway,
    with a database thread still open, and the process then never exited (a test covers it).
    Losing log lines is better than a server that cannot be stopped."""

    def msg(self, message: str) -> None:
        try:
            super().msg(message)
        except (OSError, ValueError):  # a broken pipe, a closed file
            pass

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def configure(level: str = "info") -> None:
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "event"], drop_missing=True),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=lambda *args: StderrLogger(sys.stderr),
        cache_logger_on_first_use=True,
    )
