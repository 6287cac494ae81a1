"""libvips' messages below a warning never reach Python; its warnings still do."""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

import pytest
import pyvips

from imgq.ops.image import quiet_libvips
from tests.fixtures.images import write_jpeg


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def pyvips_records() -> list[logging.LogRecord]:
    """What reaches the `pyvips` logger, at every level, while a test runs."""
    logger, kept = logging.getLogger("pyvips"), _Kept()
    level = logger.level
    logger.addHandler(kept)
    logger.setLevel(logging.DEBUG)
    yield kept.records
    logger.removeHandler(kept)
    logger.setLevel(level)


def _libvips_says(level: int, text: bytes) -> None:
    """A message of libvips' log domain, as libvips' own code logs it (GLib's g_log)."""
    with open("/proc/self/maps") as maps:
        loaded = {line.split()[-1] for line in maps if "libvips" in line and ".so" in line}
    if not loaded:
        pytest.skip("libvips' shared library is not found in this process's memory map")
    ctypes.CDLL(sorted(loaded)[0]).g_log(b"VIPS", level, b"%s", text)


def test_libvips_chatter_stays_out_of_python(tmp_path: Path,
                                             pyvips_records: list[logging.LogRecord]) -> None:
    quiet_libvips()
    path = write_jpeg(tmp_path / "in.jpg", 400, 300)
    pyvips.Image.thumbnail(str(path), 100, height=100).jpegsave(str(tmp_path / "out.jpg"))
    _libvips_says(1 << 6, b"an info")  # G_LOG_LEVEL_INFO
    assert [r.getMessage() for r in pyvips_records if r.getMessage().startswith("VIPS")] == []


def test_libvips_warnings_still_reach_python(pyvips_records: list[logging.LogRecord]) -> None:
    quiet_libvips()
    quiet_libvips()  # twice, as a process that tunes libvips again does
    _libvips_says(1 << 4, b"a warning")  # G_LOG_LEVEL_WARNING
    assert [(r.levelno, r.getMessage()) for r in pyvips_records] == [
        (logging.WARNING, "VIPS: a warning")]
