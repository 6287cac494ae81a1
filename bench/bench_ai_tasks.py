"""What each Backend AI task type costs on this machine's CPU, run the way a worker runs it
(imgq's run_pipeline: decode, the AI step, encode PNG), next to a classic step on the same
photo measured in the same run (a Lanczos resize to 4× the width), so the figures can be read as
ratios on a machine whose load changes.

    python bench/bench_ai_tasks.py                 # all of them (about 10 min on 2 busy cores)
    python bench/bench_ai_tasks.py --skip-generate

image_generation has no weights here (none install from PyPI): it runs a Stable Diffusion 1.5
sized pipeline (the UNet, VAE and CLIP ViT-L/14 text encoder with SD 1.5's shapes) with random
weights, which costs the same arithmetic per step as the real ones, through imgq's generate
code (imgq.ai.generate.generate). face_swap is not measured: its weights cannot be installed
here, and random ones of the same architecture are not at hand.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import CACHE, BenchContext, _photo_like, machine_note, table  # noqa: E402


def timed(fn: Callable[[], object], runs: int) -> float:
    """The best of `runs` runs, after one to warm up (model loading, first-call setup)."""
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def sd15_pipeline() -> Any:
    """Stable Diffusion 1.5's architecture with random weights (its published configs:
    diffusers' UNet2DConditionModel defaults with 768-wide cross attention, the 4-block VAE,
    CLIP ViT-L/14's text encoder)."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from tests.fixtures.tiny_diffusion import build_tiny_pipeline

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=512)
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
        num_attention_heads=12, max_position_embeddings=77, projection_dim=768))
    tiny = CACHE / "tiny-sd"  # only for its tokenizer: the text encoder's cost is the same
    if not (tiny / "model_index.json").is_file():
        build_tiny_pipeline(tiny)
    tokenizer = CLIPTokenizer.from_pretrained(str(tiny / "tokenizer"), model_max_length=77)
    pipe = StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text, tokenizer=tokenizer,
        scheduler=PNDMScheduler(skip_prk_steps=True), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2, help="timed runs per task, best kept")
    parser.add_argument("--skip-generate", action="store_true")
    args = parser.parse_args()

    from imgq.domain.pipeline import parse_pipeline
    from imgq.ops import build_registry
    from imgq.worker.run import run_pipeline

    CACHE.mkdir(parents=True, exist_ok=True)
    registry = build_registry()
    rows: list[list[str]] = []

    def run(pipeline: str, width: int, height: int) -> float:
        source = CACHE / f"ai-tasks-{width}x{height}.png"
        if not source.exists():
            _photo_like(width, height, seed=4).pngsave(str(source))
        steps = registry.bind(parse_pipeline(pipeline))
        target = CACHE / "ai-tasks-out.png"
        return timed(lambda: run_pipeline(steps, source, "png", target, BenchContext()),  # type: ignore[arg-type]
                     args.runs)

    reference: dict[tuple[int, int], float] = {}

    def task(kind: str, pipeline: str, width: int, height: int) -> None:
        if (width, height) not in reference:
            reference[(width, height)] = run(f"resize:width={width * 4}", width, height)
        seconds = run(pipeline, width, height)
        mp = width * height / 1e6
        rows.append([kind, pipeline, f"{width}×{height}", f"{seconds:.2f}", f"{seconds / mp:.1f}",
                     f"{seconds / reference[(width, height)]:.0f}×"])

    task("image_enhancement", "upscale:model=realesrgan-x4plus", 160, 120)
    task("image_enhancement", "upscale:model=realesrgan-x4plus", 320, 240)
    task("background_removal", "remove_background", 640, 480)
    task("background_removal", "remove_background", 1600, 1200)
    task("style_transfer", "style_transfer:style=7", 640, 480)
    task("style_transfer", "style_transfer:style=7", 1600, 1200)
    print(machine_note())
    print(f"best of {args.runs} after a warm-up run; seconds per megapixel of the input; "
          "reference: resize to 4× the width (Lanczos) of the same photo, same run")
    print(table(rows, ["task type", "pipeline", "input", "seconds", "s/MP", "× reference"]))

    if args.skip_generate:
        return
    from imgq.ai import generate as sd

    started = time.perf_counter()
    pipe = sd15_pipeline()
    built = time.perf_counter() - started
    checkpoint = sd.Checkpoint("sd15-random", CACHE / "sd15-random")
    sd._pipelines[(str(checkpoint.path), "cpu")] = pipe  # built here, not loaded from disk
    per_step: list[float] = []

    def hook(done: int, total: int, seconds_per_step: float) -> None:
        per_step.append(time.perf_counter())

    gen_rows = []
    for steps in (1, 3):
        request = sd.Request(prompt="a lighthouse at dusk", negative_prompt="blurry",
                             width=512, height=512, steps=steps, guidance=7.5, seed=1)
        per_step.clear()
        start = time.perf_counter()
        sd.generate(checkpoint, "cpu", request, hook)
        total = time.perf_counter() - start
        gaps = [b - a for a, b in zip(per_step, per_step[1:])]
        gen_rows.append([str(steps), f"{total:.1f}",
                         f"{min(gaps):.1f}" if gaps else "–",
                         f"{time.perf_counter() - per_step[-1]:.1f}"])
    print(f"\nimage_generation: SD 1.5-sized pipeline, random weights, 512×512, guidance on "
          f"(2 UNet passes a step), built in {built:.0f} s")
    print(table(gen_rows, ["steps", "seconds in all", "s per step (between steps)",
                           "after the last step (VAE decode, PNG not included)"]))


if __name__ == "__main__":
    main()
