"""Tiles of several items through one model in shared batches (imgq.ai.torch_batcher)."""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from ._support import require_torch, scene

require_torch()

import torch  # noqa: E402

from imgq.ai.torch_batcher import BatchStats, TileBatcher, batcher_for  # noqa: E402
from imgq.ai.torch_upscale import TorchUpscaler  # noqa: E402
from imgq.ai.upscale import UpscaleOptions, Upscaler  # noqa: E402

FAST = "realesr-animevideov3"
TILING: dict[str, Any] = {"tile": 32, "overlap": 8, "device": "cpu", "runtime": "torch"}


def upscaler(**options: Any) -> TorchUpscaler:
    runner = Upscaler(UpscaleOptions(model=FAST, **{**TILING, **options}))
    assert isinstance(runner, TorchUpscaler)
    return runner


@pytest.fixture
def batcher() -> Iterator[TileBatcher]:
    """The process's batcher of the model, waiting (far) longer than any test takes for a busy
    item's tiles: a batch then runs early only when the mechanism says so, never by chance."""
    shared = batcher_for(upscaler().loaded)
    wait, shared.wait_seconds = shared.wait_seconds, 30.0
    yield shared
    shared.wait_seconds = wait


def snapshot(stats: BatchStats) -> tuple[int, int, int, Counter[str]]:
    return stats.batches, stats.mixed, stats.tiles, Counter(stats.flushes)


def both_in_the_pass(barrier: threading.Barrier) -> Callable[[float, str], None]:
    """A progress callback whose first call (before the first tile, inside the tiled pass)
    waits for the other item to be in its pass too."""
    waited = threading.Event()

    def progress(fraction: float, _: str) -> None:
        if fraction == 0.0 and not waited.is_set():  # not again in an fp32 rerun
            waited.set()
            barrier.wait(timeout=60)
    return progress


def run_together(jobs: dict[str, Callable[[], np.ndarray]]) -> dict[str, np.ndarray | Exception]:
    results: dict[str, np.ndarray | Exception] = {}

    def go(name: str, job: Callable[[], np.ndarray]) -> None:
        try:
            results[name] = job()
        except Exception as exc:
            results[name] = exc

    threads = [threading.Thread(target=go, args=item) for item in jobs.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def test_two_items_share_every_batch_and_each_equals_its_run_alone(batcher: TileBatcher) -> None:
    a, b = scene(40, 48, seed=1), scene(40, 48, seed=2)
    alone = {"a": upscaler().run(a), "b": upscaler().run(b)}
    before = snapshot(batcher.stats)
    barrier = threading.Barrier(2)
    results = run_together({
        "a": lambda: upscaler(share_batches=True).run(a, both_in_the_pass(barrier)),
        "b": lambda: upscaler(share_batches=True).run(b, both_in_the_pass(barrier)),
    })
    batches, mixed, tiles, flushes = (now - then for now, then
                                      in zip(snapshot(batcher.stats), before, strict=True))
    for name in "ab":
        out = results[name]
        assert isinstance(out, np.ndarray) and out.shape == (160, 192, 3)
        assert np.abs(out.astype(np.int16) - alone[name]).max() <= 1
    # 2×2 tiles each, one tile per hand-over: every model call held a tile of each item.
    assert (tiles, batches, mixed) == (8, 4, 4)
    assert flushes == Counter(idle=4)


def test_a_lone_item_is_never_held_for_tiles_that_cannot_come(batcher: TileBatcher) -> None:
    image = scene(40, 48, seed=3)
    before = snapshot(batcher.stats)
    out = upscaler(share_batches=True).run(image)
    batches, mixed, tiles, flushes = (now - then for now, then
                                      in zip(snapshot(batcher.stats), before, strict=True))
    assert np.array_equal(out, upscaler().run(image))
    # Each tile ran as soon as it was handed over: the only item in the pass was waiting.
    assert (tiles, batches, mixed) == (4, 4, 0)
    assert flushes == Counter(idle=4)
    assert batcher.members == 0


def failing_on_second_call(forward: Callable[[torch.Tensor], torch.Tensor]
                           ) -> Callable[[torch.Tensor], torch.Tensor]:
    calls = [0]

    def wrapped(tiles: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        if calls[0] == 2:
            raise RuntimeError("injected: a layer failed on this image")
        return forward(tiles)
    return wrapped


@pytest.mark.parametrize("how", ["error", "cancel"])
def test_an_item_that_fails_or_stops_does_not_fail_or_hold_its_neighbour(
        batcher: TileBatcher, how: str) -> None:
    a, b = scene(40, 48, seed=4), scene(40, 48, seed=5)
    expected = upscaler().run(b)
    before = snapshot(batcher.stats)
    barrier = threading.Barrier(2)
    progress, neighbour = both_in_the_pass(barrier), both_in_the_pass(barrier)
    done: list[float] = []

    def troubled() -> np.ndarray:
        if how == "error":
            return upscaler(share_batches=True, wrap_forward=failing_on_second_call).run(
                a, progress)
        return upscaler(share_batches=True).run(
            a, lambda f, s: (progress(f, s), done.append(f)), lambda: len(done) >= 2)

    results = run_together({"a": troubled,
                            "b": lambda: upscaler(share_batches=True).run(b, neighbour)})
    assert isinstance(results["a"], Exception)
    assert ("injected" if how == "error" else "stopped after tile 1/4") in str(results["a"])
    out = results["b"]
    assert isinstance(out, np.ndarray)
    assert np.abs(out.astype(np.int16) - expected).max() <= 1
    _, mixed, _, flushes = (now - then for now, then
                            in zip(snapshot(batcher.stats), before, strict=True))
    assert mixed == 1  # the first tiles went together; then the neighbour ran on alone,
    assert flushes["timeout"] == 0  # never waiting for the item that left
    assert batcher.members == 0


def test_a_shared_batch_that_raises_is_run_again_item_by_item() -> None:
    def model(tiles: torch.Tensor) -> torch.Tensor:  # a layer that cannot take some input
        if torch.isnan(tiles).any():
            raise RuntimeError("non-finite input")
        return torch.nn.functional.interpolate(tiles, scale_factor=2.0, mode="nearest")

    shared = TileBatcher(model, wait_seconds=30.0)
    good, bad = torch.rand(1, 3, 8, 8), torch.full((1, 3, 8, 8), float("nan"))
    barrier = threading.Barrier(2)

    def submit(tiles: torch.Tensor) -> Callable[[], np.ndarray]:
        def job() -> np.ndarray:
            with shared.member() as owner:
                barrier.wait(timeout=60)
                return shared.run(owner, tiles, limit=4).numpy()
        return job

    results = run_together({"good": submit(good), "bad": submit(bad)})
    assert isinstance(results["bad"], RuntimeError)
    out = results["good"]
    assert isinstance(out, np.ndarray)
    assert np.array_equal(out, model(good).numpy())
    assert shared.stats.flushes == Counter(alone=1)
    assert (shared.stats.batches, shared.stats.mixed) == (1, 0)  # only the item-alone calls count


def test_fixed_shapes_fill_a_shared_batch_up_to_a_power_of_two() -> None:
    shapes: list[int] = []

    def model(tiles: torch.Tensor) -> torch.Tensor:
        shapes.append(tiles.shape[0])
        return tiles * 2

    shared = TileBatcher(model, pad=True)
    tiles = torch.rand(3, 3, 8, 8)
    with shared.member() as owner:
        out = shared.run(owner, tiles, limit=8)
    assert shapes == [4] and shared.stats.padded == 1
    assert torch.equal(out, tiles * 2)


def test_non_finite_tiles_send_only_their_own_image_back_to_fp32() -> None:
    first = upscaler(precision="bf16", share_batches=True)
    second = upscaler(precision="bf16", share_batches=True)
    real = first.loaded.module

    def overflowing_on_dark_tiles(x: torch.Tensor) -> torch.Tensor:  # fp16/bf16 overflow
        out = real(x)
        dark = x.float().mean(dim=(1, 2, 3)) < 0.2
        return torch.where(dark[:, None, None, None], torch.full_like(out, torch.nan), out)

    shared_model = dataclasses.replace(first.loaded, module=overflowing_on_dark_tiles)
    first.loaded = second.loaded = shared_model  # both items on the one model and batcher
    batcher = batcher_for(shared_model)
    batcher.wait_seconds = 30.0  # a batch runs early only when the mechanism says so
    dark, bright = scene(40, 48, seed=6) // 8, scene(40, 48, seed=7)
    barrier = threading.Barrier(2)
    results = run_together({"dark": lambda: first.run(dark, both_in_the_pass(barrier)),
                            "bright": lambda: second.run(bright, both_in_the_pass(barrier))})
    assert batcher.stats.mixed >= 1
    assert first.loaded.precision == "fp32"  # the dark image ran again in fp32, alone
    assert second.loaded is shared_model  # the bright one stayed in bf16
    out = results["dark"]
    assert isinstance(out, np.ndarray)
    assert np.abs(out.astype(np.int16) - upscaler().run(dark)).max() <= 1
    lone = upscaler(precision="bf16")
    lone.loaded = shared_model
    bright_out = results["bright"]
    assert isinstance(bright_out, np.ndarray)
    assert np.abs(bright_out.astype(np.int16) - lone.run(bright)).max() <= 2


def test_tiles_wait_for_a_busy_neighbour_no_longer_than_the_wait_bound() -> None:
    shared = TileBatcher(lambda tiles: tiles + 1, wait_seconds=0.05)
    tiles = torch.zeros(1, 3, 8, 8)
    with shared.member(), shared.member() as owner:  # the first stays busy elsewhere
        out = shared.run(owner, tiles, limit=4)
    assert torch.equal(out, tiles + 1)
    assert shared.stats.flushes == Counter(timeout=1)
