"""`imgq serve` keeps what it made to start, and the code it imports later, out of the cyclic
collector's sight."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

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
                         text=True, check=True, cwd=ROOT)
    heap = json.loads(out.stdout.strip().splitlines()[-1])
    assert heap["frozen"] >= heap["before"] // 2  # the app, its routes and modules
    assert heap["seen"] < heap["frozen"] // 20  # what a full collection still walks
    assert not heap["app_seen"]


LATER_IMPORT = """
import gc, json, sys, weakref
from imgq.compose import build_app
from imgq.config import Settings
from imgq.cli import settle_heap
app, _ = build_app(Settings(data_dir=sys.argv[1], ai_measure_on_start=False), embedded_workers=False)
settle_heap()
assert "kombu.transport.redis" not in sys.modules
import kombu.transport.redis  # what a fleet API's first publish imports (and redis-py with it)
imported = len(gc.get_objects())
gc.collect()  # a full collection, as the collector makes them
module_seen = any(o is kombu.transport.redis.Transport for o in gc.get_objects())
after = len(gc.get_objects())

class Node:
    pass

alive = Node()
alive.me = alive  # a reference cycle that lives through a full collection with no new module
gone = weakref.ref(alive)
gc.collect()
alive_seen = any(o is alive for o in gc.get_objects())
del alive
gc.collect()
print(json.dumps({"imported": imported, "after": after, "module_seen": module_seen,
                  "alive_seen": alive_seen, "cycle_freed": gone() is None}))
"""


def test_code_imported_after_start_leaves_the_full_collections_after_the_next(
        tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", LATER_IMPORT, str(tmp_path)],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    heap = json.loads(out.stdout.strip().splitlines()[-1])
    assert heap["imported"] > 5000  # the broker client's functions, classes, dicts
    assert not heap["module_seen"]
    assert heap["after"] < heap["imported"] // 10
    # With no module imported since, a full collection settles nothing: a cycle that lived
    # through it stays in the collector's sight, and is freed once it is garbage.
    assert heap["alive_seen"]
    assert heap["cycle_freed"]
