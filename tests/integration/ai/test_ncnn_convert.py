"""The ncnn → PyTorch conversion is exact: same numbers as ncnn itself, every byte used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ._support import require_torch

require_torch("ncnn")

import torch  # noqa: E402

from imgq.ai.descriptors import SHIPPED  # noqa: E402
from imgq.ai.errors import ModelLoadError  # noqa: E402
from imgq.ai.catalog import get_model  # noqa: E402
from imgq.ai.ncnn_convert import read_weights, rrdb_keys
from imgq.ai.ncnn_graph import parse_graph  # noqa: E402

import ncnn  # noqa: E402  (test-only: the reference implementation)


def ncnn_cpu_output(stem: Path, image: np.ndarray) -> np.ndarray:
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    for flag in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic", "use_bf16_storage"):
        setattr(net.opt, flag, False)  # fp32 all through, like the PyTorch side
    net.opt.num_threads = 2
    net.opt.openmp_blocktime = 0  # idle ncnn threads must not spin against torch's
    net.load_param(str(stem.with_suffix(".param")))
    net.load_model(str(stem.with_suffix(".bin")))
    extractor = net.create_extractor()
    extractor.input("data", ncnn.Mat(np.ascontiguousarray(image)))
    status, out = extractor.extract("output")
    assert status == 0
    return np.array(out)


@pytest.mark.parametrize("name", ["realesrgan-x4plus", "realesr-animevideov3"])
def test_converted_model_equals_ncnn_cpu_output(name: str) -> None:
    descriptor = SHIPPED.get(name)
    image = np.random.default_rng(1).random((3, 20, 24), dtype=np.float32)
    reference = ncnn_cpu_output(descriptor.source.location(), image)
    loaded = get_model(name, "cpu", "fp32")
    with torch.inference_mode():
        ours = loaded.module(torch.from_numpy(image)[None])[0].numpy()
    assert ours.shape == reference.shape == (3, 80, 96)
    assert np.abs(ours - reference).max() < 1e-4


def test_every_byte_of_the_bin_file_is_used() -> None:
    stem = SHIPPED.get("realesr-animevideov3").source.location()
    layers = parse_graph(stem.with_suffix(".param").read_text())
    data = stem.with_suffix(".bin").read_bytes()
    weighted = read_weights(layers, data)
    assert [kind for kind, _ in weighted[:3]] == ["conv", "prelu", "conv"]
    with pytest.raises(ModelLoadError, match="unread bytes"):
        read_weights(layers, data + b"\0\0\0\0")
    with pytest.raises(ModelLoadError, match="shorter"):
        read_weights(layers, data[:-4])


def test_rrdb_key_order_follows_the_network() -> None:
    keys = rrdb_keys(23 * 15 + 6)
    assert keys[:3] == ["conv_first", "body.0.rdb1.conv1", "body.0.rdb1.conv2"]
    assert keys[-5:] == ["conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]
    with pytest.raises(ModelLoadError):
        rrdb_keys(100)
