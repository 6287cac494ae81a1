"""DAT light without torch: the .pth read without torch, the shipped weightless graph bound to
it on OpenVINO and onnxruntime, against PyTorch (spandrel) as the reference: ≥ 50 dB per tile
and for a tiled image, no seams, and the shipped graph is what scripts/export_dat_graphs.py
makes from today's spandrel."""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ._support import require_torch, scene

require_torch("spandrel")

import torch  # noqa: E402

from imgq.ai.catalog import get_model  # noqa: E402
from imgq.ai.descriptors import SHIPPED  # noqa: E402
from imgq.ai.errors import ModelLoadError  # noqa: E402
from imgq.ai.estimate import estimate_cpu_seconds  # noqa: E402
from imgq.ai.graph_runtime import (  # noqa: E402
    GRAPH_TILE,
    OnnxRuntimeGraphNet,
    OpenVinoGraphNet,
    graph_bytes,
    shift_masks,
)
from imgq.ai.options import DEFAULT_OVERLAP  # noqa: E402
from imgq.ai.pth_reader import read_state_dict  # noqa: E402
from imgq.ai.tiling import TilePlan  # noqa: E402
from imgq.ai.upscale import upscale_array  # noqa: E402

EXACT_DB = 50.0


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak * peak / mse)


def weights(scale: int) -> Path:
    return SHIPPED.get(f"dat-light-x{scale}").source.location()


def reference(scale: int, chw: np.ndarray) -> np.ndarray:
    """PyTorch's output for one (3, h, w) float image, untiled."""
    module = get_model(f"dat-light-x{scale}", "cpu", "fp32").module
    with torch.inference_mode():
        return np.asarray(module(torch.from_numpy(chw[None].copy()))[0].numpy())


# -- the .pth without torch ------------------------------------------------------------------

def test_the_reader_returns_what_torch_saved(tmp_path: Path) -> None:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    saved = {"params": collections.OrderedDict([
        ("module.a", base), ("b", base.t()), ("c", base[1:, 2:]),  # strided views of a storage
        ("d", torch.nn.Parameter(torch.randn(3, 2), requires_grad=False)),
        ("e", torch.tensor([1.5, -2.25], dtype=torch.bfloat16)),
        ("f", torch.tensor([0.5, 3.0], dtype=torch.float16)),
        ("g", torch.arange(5, dtype=torch.int64)), ("h", torch.tensor(7.0))])}
    path = tmp_path / "w.pth"
    torch.save(saved, path)
    state = read_state_dict(path)
    assert list(state) == ["a", "b", "c", "d", "e", "f", "g", "h"]  # unwrapped, prefix gone
    for key, tensor in saved["params"].items():
        expected = tensor.detach().float() if tensor.dtype == torch.bfloat16 else tensor.detach()
        got = state[key.removeprefix("module.")]
        assert got.shape == tuple(expected.shape) and np.array_equal(got, expected.numpy()), key


def test_the_reader_refuses_a_file_that_would_run_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps({"w": os.system}))
    with pytest.raises(ModelLoadError, match="refused"):
        read_state_dict(path)
    (tmp_path / "junk.pth").write_bytes(b"not a zip")
    with pytest.raises(ModelLoadError, match="junk.pth"):
        read_state_dict(tmp_path / "junk.pth")


def test_the_reader_matches_torch_load_on_the_shipped_weights() -> None:
    for scale in (2, 3, 4):
        ours = read_state_dict(weights(scale))
        theirs = torch.load(weights(scale), map_location="cpu", weights_only=True)["params"]
        assert set(ours) == set(theirs)
        for key, tensor in theirs.items():
            assert ours[key].dtype == tensor.numpy().dtype, key
            assert np.array_equal(ours[key], tensor.numpy()), key


def test_the_shift_masks_are_spandrels() -> None:
    module = get_model("dat-light-x2", "cpu", "fp32").module
    shifted = next(m for m in module.modules() if getattr(m, "attn_mask_0", None) is not None)
    for ours, theirs in zip(shift_masks(GRAPH_TILE, GRAPH_TILE),
                            shifted.calculate_mask(GRAPH_TILE, GRAPH_TILE), strict=True):
        assert np.array_equal(ours, theirs.numpy())
    # and the 64² masks the .pth stores, read without torch
    stored = read_state_dict(weights(2))
    ours64 = shift_masks(64, 64)
    assert np.array_equal(ours64[0], stored["layers.0.blocks.2.attn.attn_mask_0"])
    assert np.array_equal(ours64[1], stored["layers.0.blocks.2.attn.attn_mask_1"])


# -- the graph against PyTorch -----------------------------------------------------------------

@functools.cache
def tile_and_reference(scale: int) -> tuple[np.ndarray, np.ndarray]:
    """A tile of the graph's shape and PyTorch's output for it: made once per scale, for
    every runtime compared with it (PyTorch's DAT is most of such a test's time)."""
    chw = scene(GRAPH_TILE, GRAPH_TILE, seed=scale).transpose(2, 0, 1).astype(np.float32) / 255
    return chw, reference(scale, chw)


@pytest.mark.parametrize(("runtime", "scale"), [
    ("openvino", 2), ("openvino", 3), ("openvino", 4), ("onnxruntime", 4)])
def test_one_tile_matches_pytorch(runtime: str, scale: int) -> None:
    kind: Any = OpenVinoGraphNet if runtime == "openvino" else OnnxRuntimeGraphNet
    net = kind(scale, weights(scale), threads=2)
    assert net.tile == GRAPH_TILE
    chw, expected = tile_and_reference(scale)
    out = net.forward(chw)
    assert out.shape == expected.shape == (3, GRAPH_TILE * scale, GRAPH_TILE * scale)
    assert psnr(np.clip(out, 0, 1), np.clip(expected, 0, 1)) >= EXACT_DB


@pytest.mark.timeout(600)  # PyTorch on the whole image is the slow part (~50 s, loaded machine)
def test_a_tiled_image_matches_untiled_pytorch_without_seams() -> None:
    """Three by two tiles of the graph's one shape against PyTorch on the whole image: the
    torch-free path is exact and the tile borders do not show. The image is about the
    smallest that needs three tiles across (a middle tile blended on both sides) and two
    down: PyTorch's time grows with its pixels, and more would add no other border."""
    image = scene(208, 376, seed=11)
    plan = TilePlan.make(208, 376, GRAPH_TILE, DEFAULT_OVERLAP, 2, fixed=True)
    assert (len(plan.ys), len(plan.xs)) == (2, 3)
    out = upscale_array(image, "dat-light-x2", device="cpu", runtime="openvino")
    assert out.shape == (416, 752, 3) and out.dtype == np.uint8
    whole = reference(2, image.transpose(2, 0, 1).astype(np.float32) / 255)
    expected = np.rint(np.clip(whole, 0, 1) * 255).transpose(1, 2, 0)
    assert psnr(out, expected, 255.0) >= EXACT_DB
    error = np.abs(out.astype(np.int16) - expected.astype(np.int16)).max(axis=2)
    # a seam would show as a line of larger errors at the tile borders: none is worse than
    # the rest of the image
    columns, rows = error.mean(axis=0), error.mean(axis=1)
    assert columns.max() <= max(0.05, 4 * columns.mean())
    assert rows.max() <= max(0.05, 4 * rows.mean())


def test_a_short_image_is_padded_up_to_the_tile_and_cropped_back() -> None:
    image = scene(40, 70, seed=3)
    out = upscale_array(image, "dat-light-x3", device="cpu", runtime="openvino")
    expected = reference(3, image.transpose(2, 0, 1).astype(np.float32) / 255)
    expected8 = np.rint(np.clip(expected, 0, 1) * 255).transpose(1, 2, 0)
    assert out.shape == (120, 210, 3)
    # DAT sees edge-replicated context where PyTorch pads inside each block: the last rows and
    # columns differ a little (50.1 dB over the whole image measured, 51.8 without them)
    assert psnr(out[:-12, :-12], expected8[:-12, :-12], 255.0) >= 48.0


def test_the_estimate_counts_the_tile_a_short_image_is_padded_up_to() -> None:
    dat = SHIPPED.get("dat-light-x2")
    assert estimate_cpu_seconds(100, 60, dat, 2) == estimate_cpu_seconds(192, 192, dat, 2)
    any_tile = dataclasses.replace(dat, graph_tile=0)
    assert estimate_cpu_seconds(100, 60, any_tile, 2) < estimate_cpu_seconds(100, 60, dat, 2) / 5


# -- the shipped graph is today's export -------------------------------------------------------

@pytest.mark.timeout(600)
def test_the_shipped_graph_is_a_fresh_export() -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[3] / "scripts" / "export_dat_graphs.py"
    spec = importlib.util.spec_from_file_location("export_dat_graphs", path)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    fresh = script.export_graph(2)
    import onnx

    shipped = onnx.load_from_string(graph_bytes(2))
    assert not shipped.graph.initializer  # no weights in the repository

    def shape(graph: Any) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
        return [(n.op_type, tuple(n.input), tuple(n.output)) for n in graph.graph.node]
    assert shape(shipped) == shape(fresh)
    assert [i.name for i in shipped.graph.input] == [i.name for i in fresh.graph.input]
