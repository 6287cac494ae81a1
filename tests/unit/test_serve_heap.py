"""`imgq serve` keeps what it made to start out of the cyclic collector's sight."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import gc, json, sys
from imgq.compose import build_app
from imgq.config import Settings
from imgq.cli import settle_heap
app, _ = build_app(Settings(data_dir=sys.argv[1], ai_measure_on_start=False), embedded_workers=False)
before = len(gc.get_objects())
settle_heap()
print(json.dumps({"before": before, "frozen": gc.get_freeze_count(), "seen": len(gc.get_objects()),
                  "app_seen": any(o is app for o in gc.get_objects())}))
"""


def test_a_full_collection_after_start_walks_none_of_the_startup_objects(tmp_path: Path) -> None:
    # In a process of its own: freezing is for the whole process, and pytest's must stay as is.
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True,
                         text=True, check=True, cwd=Path(__file__).resolve().parents[2])
    heap = json.loads(out.stdout.strip().splitlines()[-1])
    assert heap["frozen"] >= heap["before"] // 2  # the app, its routes and modules
    assert heap["seen"] < heap["frozen"] // 20  # what a full collection still walks
    assert not heap["app_seen"]
