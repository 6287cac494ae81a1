"""Estimates from this machine's measurements, on the default CPU runtime (no torch): what the
progress says before and after the first tile, what a run feeds back, and which models a
starting worker measures first."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import pyvips

from imgq.ai.costs import CostBook, cost_class, cost_key, covered_pixels
from imgq.ai.cpu_nets import choose_runtime
from imgq.ai.descriptors import SHIPPED
from imgq.ai.estimate import describe_estimate
from imgq.config import Settings, load_settings
from imgq.domain.pipeline import parse_pipeline
from imgq.ops import build_registry
from imgq.ops.upscale import DEFAULT_MODEL, shipped_choices
from imgq.worker.run import run_pipeline
from imgq.worker.runtime import models_to_measure

if importlib.util.find_spec("openvino") is None and importlib.util.find_spec("ncnn") is None:
    pytest.skip("neither OpenVINO nor ncnn is installed (the default install has OpenVINO)",
                allow_module_level=True)

FAST = SHIPPED.get("realesr-animevideov3")


class Ctx:
    """What run_pipeline uses of an ItemContext; keeps the stage messages."""

    def __init__(self) -> None:
        self.stages: list[str] = []

    def begin_step(self, index: int, name: str) -> None:
        pass

    def progress(self, fraction: float, stage: str | None = None) -> None:
        if stage:
            self.stages.append(stage)

    def should_abort(self) -> bool:
        return False

    def check(self) -> None:
        pass

    def monitor(self, image: pyvips.Image) -> None:
        pass


def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path, ai_device="cpu",
                         ai_costs_file=tmp_path / "model-costs.json")


def upscale(tmp_path: Path, width: int, height: int, ctx: Ctx) -> pyvips.Image:
    source, target = tmp_path / "in.png", tmp_path / "out.png"
    (pyvips.Image.xyz(width, height)[0] % 251).cast("uchar").bandjoin([
        (pyvips.Image.xyz(width, height)[1] * 3 % 256).cast("uchar"),
        pyvips.Image.black(width, height) + 90]).cast("uchar").write_to_file(str(source))
    steps = build_registry(settings(tmp_path)).bind(
        parse_pipeline(f"upscale:model={FAST.name},scale=4"))
    run_pipeline(steps, source, "png", target, ctx)  # type: ignore[arg-type]
    return pyvips.Image.new_from_file(str(target))


def test_progress_says_this_machines_estimate_first_then_the_pace_it_achieves(
        tmp_path: Path) -> None:
    # this "machine" once measured the model at 500 s for an image of this size: far slower
    # than it runs now, and far from the reference figure (well under a second)
    cfg = settings(tmp_path)
    work = covered_pixels(400, 200, FAST)
    CostBook(cfg.ai_costs_file).record(cost_key(FAST, "cpu", cfg.ai_threads), work, 500.0)
    ctx = Ctx()
    out = upscale(tmp_path, 400, 200, ctx)
    assert (out.width, out.height) == (1600, 800)
    tiles = [s for s in ctx.stages if " tile " in s]
    assert tiles[0].endswith(f"tile 0/6 · {describe_estimate(500.0)} left (estimate)"), tiles
    # after the first tile: the remaining time from the tiles done so far, not the 500 s
    first = tiles[1]
    assert "tile 1/6 · " in first and first.endswith(" s left"), tiles
    assert int(first.split("~")[1].split(" ")[0]) < 5 / 6 * 500
    assert tiles[-1].endswith("tile 6/6 · ~0 s left")


def test_a_run_feeds_its_time_back_under_this_workers_key(tmp_path: Path) -> None:
    cfg = settings(tmp_path)
    upscale(tmp_path, 200, 120, Ctx())
    fit = CostBook(cfg.ai_costs_file).fit(cost_key(FAST, "cpu", cfg.ai_threads))
    assert fit is not None and fit.runs == 1
    assert fit.sx == covered_pixels(200, 120, FAST) and fit.sy > 0


def test_a_starting_worker_measures_the_default_model_first_and_each_network_once(
        tmp_path: Path) -> None:
    cfg = settings(tmp_path)
    todo = models_to_measure(cfg)
    assert todo[0] == DEFAULT_MODEL
    classes = [cost_class(SHIPPED.get(name)) for name in todo]
    assert len(set(classes)) == len(classes)
    # every network that runs without torch; those on torch are measured by their first run
    assert set(classes) == {cost_class(SHIPPED.get(name)) for name in shipped_choices()
                            if choose_runtime(SHIPPED.get(name)) != "torch"}
    if "realcugan-x2-denoise3" in shipped_choices():
        assert "realcugan-x2-denoise3" not in todo  # Real-CUGAN ×2's figure serves it
    # once the default model has a figure, the others are what is left to measure
    x4plus = SHIPPED.get(DEFAULT_MODEL)
    CostBook(cfg.ai_costs_file).record(cost_key(x4plus, "cpu", cfg.ai_threads), 10_000, 1.0)
    assert models_to_measure(cfg) == todo[1:]
