"""Logging: readable lines for people, or JSON objects for a fleet's log collector.

Every fact a log call gives in `extra` reaches the output (job and item ids first), and
secrets never do: URL passwords are replaced by *** whatever field they appear in.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

from imgq.config import redact

# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}
_FIRST = ("job_id", "item_id", "error_code")


def context_of(record: logging.LogRecord) -> dict[str, Any]:
    """The facts given in `extra`, the job and item ids first."""
    facts = {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
    ordered = {k: facts.pop(k) for k in _FIRST if k in facts}
    ordered.update(sorted(facts.items()))
    return ordered


class TextFormatter(logging.Formatter):
    """`time LEVEL process logger: message [key=value ...]`, traceback below."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(f"{k}={_text(v)}" for k, v in context_of(record).items())
        if context:
            head, sep, rest = line.partition("\n")
            line = f"{head} [{context}]{sep}{rest}"
        return redact(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, process, message, the facts, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname, "logger": record.name, "process": record.processName,
            "message": record.getMessage(), **context_of(record)}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str, ensure_ascii=False))


def _text(value: Any) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if (" " in text or not text) else text


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(
        "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("pyvips").setLevel(logging.WARNING)  # per-threadpool chatter
    # one line per request: every poll of a remote model endpoint (imgq.ai.remote logs its own)
    logging.getLogger("httpx").setLevel(logging.WARNING)
