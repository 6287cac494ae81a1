"""Run every benchmark in turn, memory first (least sensitive to a busy machine).

    python bench/run_all.py            # about 10 minutes on 2 cores
    python bench/run_all.py --profile  # also profile the small-image throughput (py-spy)

Each benchmark is its own script and prints its own figures; nothing here is a test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = [
    ["bench_memory.py"],
    ["bench_engine.py"],
    ["bench_serve.py"],
]


def main() -> int:
    extra = ["--profile"] if "--profile" in sys.argv[1:] else []
    status = 0
    for script, *args in ORDER:
        print(f"\n===== {script} =====", flush=True)
        more = extra if script == "bench_serve.py" else []
        status |= subprocess.call([sys.executable, str(HERE / script), *args, *more])
    return status


if __name__ == "__main__":
    raise SystemExit(main())
