"""Descriptors, registry, device and precision choice, CPU estimates, plug-ins."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from ._support import require_torch

require_torch()

import torch  # noqa: E402

from imgq.ops import plugins  # noqa: E402
from imgq.ai.descriptors import SHIPPED, DuplicateModel, ModelRegistry  # noqa: E402
from imgq.ai.device import choose_precision, free_memory, resolve_device  # noqa: E402
from imgq.ai.errors import DeviceUnavailable, ModelNotFound  # noqa: E402
from imgq.ai.costs import (  # noqa: E402
    DECAY,
    MEASURED,
    REFERENCE,
    CostBook,
    cost_key,
    covered_pixels,
    estimate,
)
from imgq.ai.estimate import describe_estimate, estimate_cpu_seconds  # noqa: E402
from imgq.ai.warmup import calibrate, calibration_sides  # noqa: E402


def test_every_shipped_model_has_its_weights_installed() -> None:
    assert SHIPPED.get().name == "realesrgan-x4plus"
    names = set(SHIPPED.names("sr"))
    assert {"realesrgan-x4plus", "realesrgan-x4plus-anime", "realesr-animevideov3",
            "dat-light-x2", "dat-light-x3", "dat-light-x4"} <= names
    cugan = {n for n in names if n.startswith("realcugan")}
    assert {"realcugan-x2", "realcugan-x3", "realcugan-x4", "realcugan-x2-denoise1",
            "realcugan-x2-denoise3", "realcugan-x4-conservative", "realcugan-pro-x3"} <= cugan
    assert len(cugan) == 17 and len(names) == 6 + 17
    assert all(SHIPPED.get(n).good_for for n in names)
    for descriptor in SHIPPED:
        location = descriptor.source.location()
        if descriptor.source.format == "ncnn":
            assert location.with_suffix(".param").is_file() and location.with_suffix(".bin").is_file()
        else:
            assert location.is_file(), descriptor.name


def test_the_registry_refuses_duplicates_and_unknown_names() -> None:
    registry = ModelRegistry()
    registry.add(SHIPPED.get("u2netp"))
    with pytest.raises(DuplicateModel):
        registry.add(SHIPPED.get("u2netp"))
    with pytest.raises(ModelNotFound, match="u2netp"):
        registry.get("nope")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_auto_device_is_cpu_without_cuda_and_cuda_is_refused() -> None:
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    with pytest.raises(DeviceUnavailable, match="CUDA"):
        resolve_device("cuda:0")
    with pytest.raises(DeviceUnavailable, match="unknown device"):
        resolve_device("tpu")


def test_precision_is_fp32_on_cpu_unless_bf16_is_asked_for() -> None:
    cpu = torch.device("cpu")
    assert choose_precision(SHIPPED.get(), cpu) == "fp32"
    assert choose_precision(SHIPPED.get(), cpu, "fp16") == "fp32"
    assert choose_precision(SHIPPED.get(), cpu, "bf16") == "bf16"
    assert choose_precision(SHIPPED.get("u2netp"), cpu, "bf16") == "fp32"
    assert 0 < free_memory(cpu, cpu_budget=1 << 20) <= 1 << 20


def test_cpu_estimate_scales_with_pixels_and_model_cost() -> None:
    big, compact = SHIPPED.get("realesrgan-x4plus"), SHIPPED.get("realesr-animevideov3")
    one_mp = estimate_cpu_seconds(1000, 1000, big, threads=2)
    assert estimate_cpu_seconds(2000, 1000, big, threads=2) == pytest.approx(2 * one_mp)
    assert estimate_cpu_seconds(1000, 1000, compact, threads=2) < one_mp / 10
    assert 60 < one_mp < 600  # MODELS.md: about 3 minutes per megapixel on 2 cores
    assert describe_estimate(40.2) == "~40 s" and describe_estimate(600) == "~10 min"


def test_calibration_replaces_the_reference_throughput(tmp_path: Path) -> None:
    compact = SHIPPED.get("realesr-animevideov3")
    book = CostBook(tmp_path / "costs.json")
    assert estimate(book, compact, 100, 100).basis == REFERENCE
    calibrate(compact, book, threads=2)
    fit = book.fit(cost_key(compact, "cpu", 2))
    assert fit is not None and fit.runs == 2  # a small and a larger image
    small, large = calibration_sides(compact)
    assert small < large <= 384
    assert fit.sx == pytest.approx(DECAY * covered_pixels(small, small, compact)
                                   + covered_pixels(large, large, compact))
    line = fit.line()
    assert line is not None
    measured = estimate(book, compact, 100, 100, threads=2)
    assert measured.basis == MEASURED
    # the line is in CPU seconds; wall-clock ones are those × the pace the runs showed
    assert fit.cpu and book.pace(cost_key(compact, "cpu", 2), 2) > 0
    assert measured.seconds == pytest.approx(
        (line[0] + line[1] * 100 * 100) * book.pace(cost_key(compact, "cpu", 2), 2))


def test_an_installed_plugin_adds_an_operation_and_a_broken_one_is_reported(
        monkeypatch: pytest.MonkeyPatch) -> None:
    entries = [EntryPoint("style_transfer", "collections:OrderedDict", plugins.GROUP),
               EntryPoint("sketch", "no_such_module_xyz:Op", plugins.GROUP)]
    monkeypatch.setattr(plugins, "entry_points", lambda group: entries)
    found = plugins.discover()
    assert found["style_transfer"].available and found["style_transfer"].target is not None
    assert not found["sketch"].available and "failed to load" in (found["sketch"].reason or "")
    assert found["sketch"].public()["provider"] == "no_such_module_xyz:Op"
