"""Logging: readable lines that carry the job and item ids."""

from __future__ import annotations

import logging

_CONTEXT = ("job_id", "item_id", "error_code")


class ContextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(f"{k}={getattr(record, k)}" for k in _CONTEXT if hasattr(record, k))
        if not context:
            return line
        head, sep, rest = line.partition("\n")
        return f"{head} [{context}]{sep}{rest}"


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(ContextFormatter(
        "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("pyvips").setLevel(logging.WARNING)  # per-threadpool chatter
