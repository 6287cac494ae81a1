"""What a model run costs on this machine, measured here: for estimates before and during work.

seconds = overhead + seconds_per_pixel × the pixels the network actually runs on: the tiles of
the image with their overlaps (counted once per tile) and the border each tile is padded with
(Real-CUGAN pads every tile by 14–19 pixels a side, so small tiles cost far more per image
pixel). The fixed part (a run's set-up, the first run of a new tile shape) and the per-pixel part
are fitted apart, per model, from timed runs on this machine: a calibration of two sizes when a
worker first needs the model (imgq.ai.warmup), then every real run, the recent ones weighing
most.

On the CPU the line is fitted through the CPU seconds a run used, which stay the same when the
machine gets busy (on a loaded 2-core machine they varied by under 10 % while the wall-clock
time of the same run varied 2×); the wall-clock seconds are those × the pace: wall ÷ CPU
seconds of the latest runs of any model with the same runtime and threads. So a busier machine
lengthens every model's estimate as soon as one run shows it, not only the model that ran.
Where no run is recent (PACE_FRESH_SECONDS), the pace is the one the load average predicts: the
worker's threads get their fair share of the cores among the runnable threads. A model not yet
measured here is estimated the same way, from its FLOPs over the pixels its tiles make the
network run on, at the reference CPU seconds per FLOP (imgq.ai.estimate), × that pace.

The figures live in a small JSON file (one per machine) keyed by the model, the device, the CPU
runtime and the threads a worker gives it, so that a figure measured with PyTorch never stands
for OpenVINO, and the API process, which never runs a model, gives the same estimate as the
worker that measured it. Models that differ only in their weights (Real-CUGAN's denoise levels)
share one figure. Without a figure the estimate falls back to the model's FLOPs and a reference
throughput (imgq.ai.estimate), and says so.

Nothing here imports torch.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from imgq.ai.cpu_nets import choose_runtime, usable_cores
from imgq.ai.descriptors import SHIPPED, ModelDescriptor
from imgq.ai.errors import AIUnavailable
from imgq.ai.estimate import estimate_cpu_seconds, reference_cpu_seconds_per_pixel
from imgq.ai.ncnn_runtime import CUGAN_ALIGN, CUGAN_PREPADDING
from imgq.ai.tiling import axis_tiles

logger = logging.getLogger(__name__)

CPU_TILE = 192  # the tile side the CPU runs use (imgq.ai.upscale.MAX_TILE_CPU)
OVERLAP = 24  # imgq.ai.upscale.DEFAULT_OVERLAP
DECAY = 0.8  # weight each earlier run keeps when a new one is recorded
PACE_DECAY = 0.5  # the same for the pace: the machine's load changes faster than a model's cost
PACE_FRESH_SECONDS = 300.0  # an older pace gives way to the load average's
MEASURED = "measured on this machine"
REFERENCE = "not measured here yet: from the model's FLOPs and a reference CPU"


def covered_pixels(width: int, height: int, descriptor: ModelDescriptor,
                   tile: int = CPU_TILE, overlap: int = OVERLAP) -> int:
    """Pixels the network runs on for a width×height input: every tile as the network gets
    it, overlaps and each tile's own border padding included."""
    align = descriptor.size_alignment
    height = max(height + (-height) % align, descriptor.min_size, descriptor.graph_tile)
    width = max(width + (-width) % align, descriptor.min_size, descriptor.graph_tile)
    fixed = bool(descriptor.graph_tile)  # a graph of one tile shape (imgq.ai.upscale)
    tile = descriptor.graph_tile or tile
    tile_h, ys = axis_tiles(height, tile, overlap, align, fixed)
    tile_w, xs = axis_tiles(width, tile, overlap, align, fixed)
    return _padded(tile_h, descriptor) * len(ys) * _padded(tile_w, descriptor) * len(xs)


def _padded(side: int, descriptor: ModelDescriptor) -> int:
    """A tile side as the network sees it (imgq.ai.ncnn_runtime.CuganForward pads each tile)."""
    if descriptor.architecture != "RealCUGAN" or descriptor.scale not in CUGAN_PREPADDING:
        return side
    return side + 2 * CUGAN_PREPADDING[descriptor.scale] + (-side) % CUGAN_ALIGN[descriptor.scale]


def cost_class(descriptor: ModelDescriptor) -> str:
    """The name a model's figures are kept under: the first shipped model with the same
    network (architecture, scale, FLOPs and runtimes), whose runs cost the same."""
    same = (descriptor.architecture, descriptor.scale, descriptor.flops_per_pixel,
            descriptor.cpu_runtimes)
    if descriptor.flops_per_pixel:
        for shipped in SHIPPED:
            if (shipped.architecture, shipped.scale, shipped.flops_per_pixel,
                    shipped.cpu_runtimes) == same:
                return shipped.name
    return descriptor.name


def cost_key(descriptor: ModelDescriptor, device: str, threads: int) -> str:
    """The cost book's key for the model on this device: on the CPU, with the runtime that
    runs it here and the threads an AI worker gives it (cuda: the device alone)."""
    if device == "cpu":
        try:
            runtime = choose_runtime(descriptor)
        except AIUnavailable:
            runtime = "none"
        device = f"cpu/{runtime}/{max(1, threads)}t"
    return CostBook.key(cost_class(descriptor), device)


@dataclass
class Fit:
    """A decaying least-squares line through (covered pixels, seconds) of timed runs."""

    n: float = 0.0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0
    runs: int = 0
    first_at: float = 0.0  # Unix time of the first run recorded, and of the latest
    last_at: float = 0.0
    cpu: bool = False  # seconds are CPU seconds (× the pace for wall-clock ones)

    def add(self, pixels: float, seconds: float) -> None:
        for name in ("n", "sx", "sy", "sxx", "sxy"):
            setattr(self, name, getattr(self, name) * DECAY)
        self.n += 1
        self.sx += pixels
        self.sy += seconds
        self.sxx += pixels * pixels
        self.sxy += pixels * seconds
        self.runs += 1
        self.last_at = time.time()
        self.first_at = self.first_at or self.last_at

    def line(self) -> tuple[float, float] | None:
        """(overhead seconds, seconds per pixel), or None before the first run."""
        if self.n <= 0 or self.sx <= 0:
            return None
        spread = self.n * self.sxx - self.sx * self.sx
        if self.runs >= 2 and spread > 1e-9 * self.sxx * self.n:
            slope = (self.n * self.sxy - self.sx * self.sy) / spread
            overhead = (self.sy - slope * self.sx) / self.n
            if slope > 0 and overhead >= 0:
                return overhead, slope
        return 0.0, self.sy / self.sx  # one size only (or a noisy fit): no fixed part


@dataclass
class Pace:
    """Wall-clock ÷ CPU seconds of the recent runs: how busy the machine is for the models."""

    wall: float = 0.0
    cpu: float = 0.0
    at: float = 0.0  # Unix time of the latest run

    def add(self, wall: float, cpu: float) -> None:
        self.wall = self.wall * PACE_DECAY + wall
        self.cpu = self.cpu * PACE_DECAY + cpu
        self.at = time.time()

    def ratio(self) -> float:
        return self.wall / self.cpu if self.cpu > 0 else 1.0


@dataclass(frozen=True)
class Run:
    """One timed run: the pixels the network ran on, wall-clock seconds, and the CPU seconds
    the process used meanwhile (None where they say nothing, e.g. on a GPU)."""

    pixels: int
    seconds: float
    cpu_seconds: float | None = None


@dataclass(frozen=True)
class Estimate:
    seconds: float
    basis: str  # MEASURED or REFERENCE
    cpu_seconds: float | None = None  # the CPU seconds behind `seconds`, where measured so


class CostBook:
    """The per-model fits of this machine, kept in a JSON file shared by its processes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fits: dict[str, Fit] = {}
        self._paces: dict[str, Pace] = {}
        self._mtime: float | None = None
        self._lock = threading.Lock()

    @staticmethod
    def key(model: str, device: str) -> str:
        return f"{model}|{device}"

    def fit(self, key: str) -> Fit | None:
        with self._lock:
            self._reload()
            return self._fits.get(key)

    def pace(self, key: str, threads: int) -> float:
        """Wall-clock ÷ CPU seconds of the recent runs on the key's device, or where none is
        recent, what the load average predicts for `threads` threads."""
        with self._lock:
            self._reload()
            pace = self._paces.get(_device(key))
        if pace is not None and pace.cpu > 0 and time.time() - pace.at < PACE_FRESH_SECONDS:
            return pace.ratio()
        return load_pace(threads)

    def record(self, key: str, pixels: int, seconds: float,
               cpu_seconds: float | None = None) -> None:
        """Add one timed run and write the file (atomically: other processes read it)."""
        self.record_runs(key, [Run(pixels, seconds, cpu_seconds)])

    def record_runs(self, key: str, runs: list[Run]) -> None:
        """Add timed runs at once: one write, so that a reader never sees half of a
        calibration. With CPU seconds the fit is in CPU seconds and the runs set the pace."""
        with self._lock:
            self._reload()
            fit = self._fits.get(key)
            on_cpu = all(run.cpu_seconds for run in runs)
            if fit is None or fit.cpu != on_cpu:  # figures of another kind are replaced
                fit = self._fits[key] = Fit(cpu=on_cpu)
            for run in runs:
                if on_cpu and run.cpu_seconds:
                    fit.add(run.pixels, run.cpu_seconds)
                    self._paces.setdefault(_device(key), Pace()).add(run.seconds,
                                                                     run.cpu_seconds)
                else:
                    fit.add(run.pixels, run.seconds)
            self._save()

    def keys(self) -> list[str]:
        with self._lock:
            self._reload()
            return list(self._fits)

    def _reload(self) -> None:
        if self.path is None:
            return
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            return
        if mtime == self._mtime:
            return
        try:
            raw = json.loads(self.path.read_text())
            self._fits = {k: Fit(**v) for k, v in raw.get("fits", {}).items()}
            self._paces = {k: Pace(**v) for k, v in raw.get("paces", {}).items()}
        except (OSError, ValueError, TypeError) as exc:
            logger.warning("the model cost file %s is unreadable (%s); measuring afresh",
                           self.path, exc)
            self._fits, self._paces = {}, {}
        self._mtime = mtime

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            tmp.write_text(json.dumps({"fits": {k: asdict(f) for k, f in self._fits.items()},
                                       "paces": {k: asdict(p) for k, p in self._paces.items()}}))
            os.replace(tmp, self.path)
            self._mtime = self.path.stat().st_mtime
        except OSError as exc:  # a read-only cache only costs the estimates their accuracy
            logger.warning("could not write the model cost file %s: %s", self.path, exc)


def estimate(book: CostBook, descriptor: ModelDescriptor, width: int, height: int,
             device: str = "cpu", threads: int | None = None) -> Estimate:
    """Seconds to run `descriptor` on a width×height image here, and what the figure rests on:
    the line fitted through this machine's runs of the model, over the pixels its tiles
    make the network run on (imgq.ai.costs.covered_pixels).

    `threads`: an AI worker's CPU threads (part of the key; the reference figure scales with
    them)."""
    threads = threads or usable_cores()
    key = cost_key(descriptor, device, threads)
    fit = book.fit(key)
    line = fit.line() if fit is not None else None
    if fit is None or line is None:
        if device != "cpu":
            return Estimate(estimate_cpu_seconds(width, height, descriptor, threads), REFERENCE)
        cpu = covered_pixels(width, height, descriptor) * reference_cpu_seconds_per_pixel(
            descriptor)
        return Estimate(cpu * book.pace(key, threads), REFERENCE, cpu)
    overhead, per_pixel = line
    seconds = overhead + per_pixel * covered_pixels(width, height, descriptor)
    if not fit.cpu:
        return Estimate(seconds, MEASURED)
    return Estimate(seconds * book.pace(key, threads), MEASURED, seconds)


def load_pace(threads: int) -> float:
    """Wall-clock ÷ CPU seconds that the load average predicts for a run on `threads` threads:
    1/threads on an idle machine, more when other runnable threads share the cores."""
    try:
        load = os.getloadavg()[0]
    except OSError:  # no load average here: assume an idle machine
        load = 0.0
    cores = os.cpu_count() or 1
    return max(1.0 / threads, (load + threads) / (cores * threads))


def seconds_per_megapixel(book: CostBook, descriptor: ModelDescriptor, device: str = "cpu",
                          threads: int | None = None) -> Estimate:
    """The cost of a large image per input megapixel (a 2000×1000 input, overlaps included)."""
    return _scaled(estimate(book, descriptor, 2000, 1000, device, threads), 0.5)


def _scaled(e: Estimate, factor: float) -> Estimate:
    return Estimate(e.seconds * factor, e.basis,
                    None if e.cpu_seconds is None else e.cpu_seconds * factor)


def default_path() -> Path:
    """$XDG_CACHE_HOME/imgq/model-costs.json (~/.cache/...): the figures belong to the machine."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "imgq" / "model-costs.json"


def _device(key: str) -> str:
    return key.partition("|")[2]


_books: dict[Path | None, CostBook] = {}
_books_lock = threading.Lock()


def book_at(path: Path | None) -> CostBook:
    """One CostBook per file in this process."""
    with _books_lock:
        if path not in _books:
            _books[path] = CostBook(path)
        return _books[path]
