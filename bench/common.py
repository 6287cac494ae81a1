"""Shared by the benchmarks: test images made in code, a timer, RSS helpers, and the imgq
engine called the way a worker calls it.

Nothing here is part of the test suite. Images are generated once into a cache folder under
/tmp (IMGQ_BENCH_CACHE overrides it) and reused by later runs.
"""

from __future__ import annotations

import importlib
import math
import os
import pkgutil
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CACHE = Path(os.environ.get("IMGQ_BENCH_CACHE", "/tmp/imgq-bench"))
PHOTO_SIZE = (1728, 1152)  # 1.99 megapixels, 3:2 like a camera
PHOTO_COUNT = 50
BIG_SIZE = (12000, 8400)  # 100.8 megapixels
SMALL_SIZE = (64, 64)


# -- test images ----------------------------------------------------------------------------

def _photo_like(width: int, height: int, seed: int, grain: float = 3.0) -> Any:
    """A 3-band uchar sRGB image that compresses and filters like a photo: a lighting
    gradient, soft shapes at several scales, hard-edged "objects", mostly-luminance texture,
    gentle colour casts, and fine sensor grain."""
    import pyvips

    def field(scale: int, sigma: float, s: int) -> pyvips.Image:
        # Smooth random field: coarse noise, blurred a little, then upsampled (cheap).
        w, h = max(4, width // scale + 4), max(4, height // scale + 4)
        small = pyvips.Image.gaussnoise(w, h, sigma=sigma, mean=0, seed=s).gaussblur(1.0)
        return small.resize(scale, kernel="cubic").crop(0, 0, width, height)

    xy = pyvips.Image.xyz(width, height)
    x, y = xy[0] / width, xy[1] / height
    angle = (seed * 2.399) % 6.283
    light = 60 + 120 * ((x * math.cos(angle) + y * math.sin(angle)) * 0.5 + 0.5)
    shapes = field(160, 45, seed * 17 + 1) + field(40, 22, seed * 17 + 2)
    # Hard-edged regions (object boundaries), antialiased a little.
    mask = (field(90, 1, seed * 17 + 3) > 0).ifthenelse(1.0, 0.0).gaussblur(0.8)
    objects = mask * (40 - 80 * (seed % 2))
    texture = field(6, 10, seed * 17 + 4) + field(2, 6, seed * 17 + 5)
    luma = light + shapes + objects + texture * (0.4 + mask * 0.8)
    colour = []
    for b, tint in enumerate((1.05, 0.97, 0.85)):
        cast = field(240, 18, seed * 17 + 6 + b)
        colour.append(luma * tint + cast + 12 * mask * (b - 1))
    img = colour[0].bandjoin(colour[1:])
    img = img + pyvips.Image.gaussnoise(width, height, sigma=grain, mean=0, seed=seed + 7)
    # cast clips to 0..255
    return img.rint().cast("uchar").copy(interpretation="srgb")


def photos(count: int = PHOTO_COUNT, size: tuple[int, int] = PHOTO_SIZE) -> list[Path]:
    """`count` photo-like JPEGs of `size` (quality 90), generated once."""
    folder = CACHE / f"photos-{size[0]}x{size[1]}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"photo-{i:03d}.jpg"
        if not path.exists():
            img = _photo_like(*size, seed=i + 1)
            tmp = path.with_suffix(".tmp.jpg")
            img.jpegsave(str(tmp), Q=90, keep="none")
            tmp.rename(path)
        paths.append(path)
    return paths


def big_photo(size: tuple[int, int] = BIG_SIZE) -> Path:
    """One 100-megapixel photo-like JPEG (quality 85), generated once (takes ~20 s)."""
    import pyvips

    path = CACHE / f"big-{size[0]}x{size[1]}.jpg"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    pyvips.concurrency_set(os.cpu_count() or 1)
    w, h = size
    small = _photo_like(w // 8, h // 8, seed=424242, grain=3)
    big = small.resize(8, kernel="cubic")
    grain = pyvips.Image.gaussnoise(w, h, sigma=5, mean=0, seed=99)
    img = (big.crop(0, 0, w, h) + grain).rint().cast("uchar").copy(interpretation="srgb")
    tmp = path.with_suffix(".tmp.jpg")
    img.jpegsave(str(tmp), Q=85, keep="none")
    tmp.rename(path)
    return path


def small_pngs(count: int = 200, size: tuple[int, int] = SMALL_SIZE) -> list[Path]:
    """`count` small distinct PNGs."""
    folder = CACHE / f"small-{size[0]}x{size[1]}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"small-{i:03d}.png"
        if not path.exists():
            img = _photo_like(*size, seed=1000 + i)
            tmp = path.with_suffix(".tmp.png")
            img.pngsave(str(tmp))
            tmp.rename(path)
        paths.append(path)
    return paths


# -- timing -----------------------------------------------------------------------------------

@dataclass
class Timer:
    seconds: float = 0.0


@contextmanager
def timed() -> Iterator[Timer]:
    t = Timer()
    start = time.perf_counter()
    try:
        yield t
    finally:
        t.seconds = time.perf_counter() - start


def geomean(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))


# -- memory -----------------------------------------------------------------------------------

def rss_mb() -> float:
    """This process's current resident set, MB (from /proc)."""
    return _proc_status_kb("VmRSS") / 1024


def peak_rss_mb() -> float:
    """This process's peak resident set so far, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def _proc_status_kb(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


@dataclass
class ChildRun:
    returncode: int
    seconds: float
    max_rss_mb: float
    stdout: str
    stderr: str


def run_child(args: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> ChildRun:
    """Run a fresh process and report its own peak RSS (ru_maxrss from wait4, this child only,
    not the whole RUSAGE_CHILDREN total)."""
    out_path = CACHE / f".child-{os.getpid()}.out"
    err_path = CACHE / f".child-{os.getpid()}.err"
    CACHE.mkdir(parents=True, exist_ok=True)
    with out_path.open("w") as out, err_path.open("w") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=err, env=env)
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    result = ChildRun(proc.returncode, seconds, usage.ru_maxrss / 1024,
                      out_path.read_text(), err_path.read_text())
    out_path.unlink(missing_ok=True)
    err_path.unlink(missing_ok=True)
    return result


# -- the imgq engine, the way a worker runs it --------------------------------------------------

class BenchContext:
    """What run_pipeline needs from an item context, doing nothing (no database)."""

    monitor = None

    def check(self) -> None:
        pass

    def begin_step(self, index: int, name: str) -> None:
        pass

    def progress(self, fraction: float, stage: str | None = None) -> None:
        pass

    def should_abort(self) -> bool:
        return False


@dataclass
class Engine:
    """imgq's operation registry plus any operation module not registered yet (the registry
    is filled while operations are being added); says which were picked up that way."""

    registry: Any
    unregistered: list[str] = field(default_factory=list)

    @classmethod
    def load(cls) -> Engine:
        import imgq.ops
        from imgq.ops import build_registry
        from imgq.ops.base import Registry

        registry = Registry()
        for op in build_registry():
            registry.add(op)
        extra = []
        for mod in pkgutil.iter_modules(imgq.ops.__path__):
            if mod.name.startswith("_") or mod.name in ("base", "image"):
                continue
            module = importlib.import_module(f"imgq.ops.{mod.name}")
            for op in getattr(module, "OPERATIONS", []):
                if op.name not in registry:
                    registry.add(op)
                    extra.append(op.name)
        return cls(registry, extra)

    def has(self, name: str) -> bool:
        return name in self.registry

    def steps(self, pipeline: str) -> list[Any]:
        """Bind a pipeline; an `encode` step is kept aside when imgq has no encode op yet."""
        from imgq.domain.pipeline import parse_pipeline

        specs = parse_pipeline(pipeline)
        encode = [s for s in specs if s.op == "encode"]
        if encode and not self.has("encode"):
            specs = [s for s in specs if s.op != "encode"]
            bound = self.registry.bind(specs)
            return [*bound, _FallbackEncode(encode[-1].params)]
        return self.registry.bind(specs)


@dataclass(frozen=True)
class _FallbackEncode:
    """Stands in for the `encode` op while it does not exist: sets the same EncodeOptions that
    encode_to_file reads (format, quality), nothing else."""

    params: dict[str, Any]
    name: str = "encode"

    @property
    def op(self) -> _FallbackEncode:
        return self

    def load(self, path: Path, fmt: str, params: Any) -> None:
        return None

    def apply(self, image: Any, params: Any, ctx: Any) -> Any:
        from dataclasses import replace

        opts = replace(image.encode, format=self.params.get("format"),
                       quality=self.params.get("quality"))
        return replace(image, encode=opts)


def run_engine(steps: list[Any], source: Path, target: Path) -> Any:
    """imgq's worker path minus the database: run_pipeline with a context that does nothing."""
    from imgq.worker.run import run_pipeline

    return run_pipeline(steps, source, "jpeg", target, BenchContext())  # type: ignore[arg-type]


def single_thread_libvips() -> None:
    """What a worker does (imgq.worker.runtime.tune_libvips) with one libvips thread: one
    thread per libvips pipeline, and no operation cache. IMGQ_BENCH_VIPS_THREADS=N gives
    libvips N threads instead (one `imgq serve` worker per machine gets all the cores)."""
    import pyvips

    pyvips.concurrency_set(vips_threads())
    pyvips.cache_set_max(0)


def vips_threads() -> int:
    return int(os.environ.get("IMGQ_BENCH_VIPS_THREADS", "1"))


# -- reporting -------------------------------------------------------------------------------

def machine_note() -> str:
    import PIL
    import pyvips

    cpu = "?"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    vips = f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{time.strftime('%Y-%m-%d %H:%M')} · {os.cpu_count()} cores ({cpu}), "
            f"load average {load} · "
            f"Python {platform.python_version()} · libvips {vips} (pyvips-binary) · "
            f"Pillow {PIL.__version__}")


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def python() -> str:
    return sys.executable


# -- CPU time of a set of processes -----------------------------------------------------------

def _process_table() -> tuple[dict[int, int], dict[int, float]]:
    """Every living process's parent, and its CPU seconds (user + system) so far, from /proc."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    return parents, times


def _tree(roots: list[int], parents: dict[int, int]) -> set[int]:
    wanted = set(roots)
    grew = True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in wanted} - wanted
        grew = bool(more)
        wanted |= more
    return wanted


def process_tree(roots: list[int]) -> list[int]:
    """The processes `roots` and every living descendant."""
    return sorted(_tree(roots, _process_table()[0]))


def process_tree_cpu(roots: list[int]) -> float:
    """CPU seconds (user + system) used so far by the processes `roots` and every living
    descendant, read from /proc. On a shared machine, CPU per item is steadier than wall time."""
    parents, times = _process_table()
    return sum(times.get(pid, 0.0) for pid in _tree(roots, parents))
