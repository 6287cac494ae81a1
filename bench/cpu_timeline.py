"""How busy the cores were during a benchmark's run, and when: a sampler in a process of its
own (so it takes no turn on the GIL of the clients it watches) reads, every 20 ms, the CPU time
of a system's processes (and their descendants, found when the run starts), of the process
running the HTTP clients, and of the whole machine (/proc/stat: other work on a shared machine
shows there, not in the first two).

    timeline = CpuTimeline()                    # starts the sampler
    timeline.start(service_pids, client_pid)
    ...                                         # the run
    samples = timeline.stop()                   # [(t, services s, clients s, machine busy s)]
    tenths(samples, cores=2)                    # utilisation in each tenth of the run

The kernel counts CPU time in ticks (10 ms), so a 20-ms sample is coarse; the tenths of a run
of a second or more hold 15+ ticks per core each.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from multiprocessing.connection import Connection

from bench.common import process_tree

INTERVAL = 0.02
Sample = tuple[float, float, float, float]


def _cpu(pids: list[int], tick: int) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / tick


def _machine_busy(tick: int) -> float:
    with open("/proc/stat") as fh:
        fields = [int(f) for f in fh.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / tick


def _sample(conn: Connection) -> None:
    tick = os.sysconf("SC_CLK_TCK")
    while True:
        message = conn.recv()
        if message is None:
            return
        services, client = process_tree(message[0]), [message[1]]
        samples: list[Sample] = []
        while not conn.poll(INTERVAL):
            samples.append((time.monotonic(), _cpu(services, tick), _cpu(client, tick),
                            _machine_busy(tick)))
        conn.recv()  # the stop
        samples.append((time.monotonic(), _cpu(services, tick), _cpu(client, tick),
                        _machine_busy(tick)))
        conn.send(samples)


class CpuTimeline:
    def __init__(self) -> None:
        self._conn, theirs = multiprocessing.get_context("spawn").Pipe()
        self._process = multiprocessing.get_context("spawn").Process(
            target=_sample, args=(theirs,), daemon=True)
        self._process.start()

    def start(self, service_pids: list[int], client_pid: int) -> None:
        self._conn.send((service_pids, client_pid))

    def stop(self) -> list[Sample]:
        self._conn.send("stop")
        return self._conn.recv()  # type: ignore[no-any-return]

    def close(self) -> None:
        self._conn.send(None)
        self._process.join(5)


def tenths(samples: list[Sample], start: float, end: float, cores: int,
           parts: int = 10) -> list[tuple[float, float]]:
    """(services + clients, machine) utilisation of `cores` in each of `parts` equal parts of
    [start, end], each from the samples around its edges (0.0–1.0)."""
    def at(t: float) -> Sample:
        before = [s for s in samples if s[0] <= t]
        return before[-1] if before else samples[0]

    out = []
    for n in range(parts):
        a, b = start + (end - start) * n / parts, start + (end - start) * (n + 1) / parts
        sa, sb = at(a), at(b)
        span = max(sb[0] - sa[0], INTERVAL) * cores
        out.append((((sb[1] - sa[1]) + (sb[2] - sa[2])) / span, (sb[3] - sa[3]) / span))
    return out


def occupancy(spans: list[tuple[float, float]], start: float, end: float,
              parts: int = 10) -> list[float]:
    """How many items were being worked on, on average, in each of `parts` equal parts of
    [start, end] (each item's (start, end), same clock): with 2 worker processes, 2.0 is both
    busy all the time. Unlike the CPU time, the machine's other work does not lower it."""
    out = []
    for n in range(parts):
        a, b = start + (end - start) * n / parts, start + (end - start) * (n + 1) / parts
        out.append(sum(max(0.0, min(e, b) - max(s, a)) for s, e in spans) / (b - a))
    return out
