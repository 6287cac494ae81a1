"""Log lines carry every fact of a log call, as text or JSON, and never a URL's password."""

from __future__ import annotations

import json
import logging

import pytest

from imgq.logs import JsonFormatter, TextFormatter


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("imgq.test", logging.WARNING, __file__, 1, message, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_text_lines_show_every_fact_given_in_extra_job_and_item_first() -> None:
    record = _record("model file rejected", file="/m/x.pth", error="not a model",
                     item_id="i1", job_id="j1")
    line = TextFormatter("%(levelname)s %(message)s").format(record)
    assert line == 'WARNING model file rejected [job_id=j1 item_id=i1 error="not a model" file=/m/x.pth]'


def test_json_lines_are_one_object_with_the_message_and_the_facts() -> None:
    record = _record("webhook to %s failed", "example.org", attempt=3, job_id="j1")
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "webhook to example.org failed"
    assert (entry["level"], entry["logger"], entry["attempt"], entry["job_id"]) == (
        "WARNING", "imgq.test", 3, "j1")
    assert entry["time"].endswith("+00:00")


@pytest.mark.parametrize("formatter", [TextFormatter("%(message)s"), JsonFormatter()])
def test_url_passwords_never_reach_the_output(formatter: logging.Formatter) -> None:
    record = _record("connecting to %s", "redis://:hunter2@broker:6379/0",
                     database="postgresql://imgq:s3cret@db/imgq")
    line = formatter.format(record)
    assert "hunter2" not in line and "s3cret" not in line
    assert "redis://:***@broker:6379/0" in line and "postgresql://imgq:***@db/imgq" in line


def test_a_traceback_is_kept_in_json() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("imgq", logging.ERROR, __file__, 1, "failed", (), None)
        import sys

        record.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(record))
    assert "ValueError: boom" in entry["exception"]
