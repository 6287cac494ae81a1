"""What a model run costs on this machine, measured here: for estimates before and during work.

seconds = overhead + seconds_per_pixel × the low-res pixels the tiles cover (overlaps count
twice), fitted per model from timed runs on this machine: a two-size calibration when a worker
first meets the model, then every real run. The figures live in a small JSON file (one per
machine, keyed by model and device), so that the API process, which never runs a
model, gives the same estimate as the worker that measured it. Without a figure the estimate
falls back to the model's FLOPs and a reference throughput (imgq.ai.estimate), and says so.

Nothing here imports torch.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from imgq.ai.descriptors import ModelDescriptor
from imgq.ai.estimate import estimate_cpu_seconds
from imgq.ai.tiling import axis_tiles

logger = logging.getLogger(__name__)

CPU_TILE = 192  # the tile side the CPU runs use (imgq.ai.upscale.MAX_TILE_CPU)
OVERLAP = 24  # imgq.ai.upscale.DEFAULT_OVERLAP
DECAY = 0.8  # weight each earlier run keeps when a new one is recorded
MEASURED = "measured on this machine"
REFERENCE = "not measured here yet: from the model's FLOPs and a reference CPU"


def covered_pixels(width: int, height: int, descriptor: ModelDescriptor,
                   tile: int = CPU_TILE, overlap: int = OVERLAP) -> int:
    """Low-res pixels the model runs on for a width×height input, overlaps included."""
    align = descriptor.size_alignment
    height = max(height + (-height) % align, descriptor.min_size, descriptor.graph_tile)
    width = max(width + (-width) % align, descriptor.min_size, descriptor.graph_tile)
    fixed = bool(descriptor.graph_tile)  # a graph of one tile shape (imgq.ai.upscale)
    tile = descriptor.graph_tile or tile
    tile_h, ys = axis_tiles(height, tile, overlap, align, fixed)
    tile_w, xs = axis_tiles(width, tile, overlap, align, fixed)
    return tile_h * len(ys) * tile_w * len(xs)


@dataclass
class Fit:
    """A decaying least-squares line through (covered pixels, seconds) of timed runs."""

    n: float = 0.0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0
    runs: int = 0

    def add(self, pixels: float, seconds: float) -> None:
        for name in ("n", "sx", "sy", "sxx", "sxy"):
            setattr(self, name, getattr(self, name) * DECAY)
        self.n += 1
        self.sx += pixels
        self.sy += seconds
        self.sxx += pixels * pixels
        self.sxy += pixels * seconds
        self.runs += 1

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


@dataclass(frozen=True)
class Estimate:
    seconds: float
    basis: str  # MEASURED or REFERENCE


class CostBook:
    """The per-model fits of this machine, kept in a JSON file shared by its processes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fits: dict[str, Fit] = {}
        self._mtime: float | None = None
        self._lock = threading.Lock()

    @staticmethod
    def key(model: str, device: str) -> str:
        return f"{model}|{device}"

    def fit(self, key: str) -> Fit | None:
        with self._lock:
            self._reload()
            return self._fits.get(key)

    def record(self, key: str, pixels: int, seconds: float) -> None:
        """Add one timed run and write the file (atomically: other processes read it)."""
        with self._lock:
            self._reload()
            self._fits.setdefault(key, Fit()).add(pixels, seconds)
            self._save()

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
        except (OSError, ValueError, TypeError) as exc:
            logger.warning("the model cost file %s is unreadable (%s); measuring afresh",
                           self.path, exc)
            self._fits = {}
        self._mtime = mtime

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            tmp.write_text(json.dumps({"fits": {k: asdict(f) for k, f in self._fits.items()}}))
            os.replace(tmp, self.path)
            self._mtime = self.path.stat().st_mtime
        except OSError as exc:  # a read-only cache only costs the estimates their accuracy
            logger.warning("could not write the model cost file %s: %s", self.path, exc)


def estimate(book: CostBook, descriptor: ModelDescriptor, width: int, height: int,
             device: str = "cpu", threads: int | None = None) -> Estimate:
    """Seconds to run `descriptor` on a width×height image here, and what the figure rests on.

    `threads` only serves the reference figure; a measured one is what the workers achieved."""
    fit = book.fit(CostBook.key(descriptor.name, device))
    line = fit.line() if fit is not None else None
    if line is None:
        return Estimate(estimate_cpu_seconds(width, height, descriptor, threads), REFERENCE)
    overhead, per_pixel = line
    return Estimate(overhead + per_pixel * covered_pixels(width, height, descriptor), MEASURED)


def seconds_per_megapixel(book: CostBook, descriptor: ModelDescriptor, device: str = "cpu",
                          threads: int | None = None) -> Estimate:
    """The cost of a large image per input megapixel (a 2000×1000 input, overlaps included)."""
    return _scaled(estimate(book, descriptor, 2000, 1000, device, threads), 0.5)


def _scaled(e: Estimate, factor: float) -> Estimate:
    return Estimate(e.seconds * factor, e.basis)


def default_path() -> Path:
    """$XDG_CACHE_HOME/imgq/model-costs.json (~/.cache/...): the figures belong to the machine."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "imgq" / "model-costs.json"


_books: dict[Path | None, CostBook] = {}
_books_lock = threading.Lock()


def book_at(path: Path | None) -> CostBook:
    """One CostBook per file in this process."""
    with _books_lock:
        if path not in _books:
            _books[path] = CostBook(path)
        return _books[path]
