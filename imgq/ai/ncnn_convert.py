"""Exact conversion of ncnn Real-ESRGAN files (.param + .bin) to PyTorch state dicts.

The ``.param`` file lists layers in execution order. For each Convolution the ``.bin`` holds a
4-byte tag (0x01306B47: fp16 weights follow; 0: fp32 weights follow), the weights padded to 4
bytes, then fp32 biases; PReLU layers hold fp32 slopes with no tag. Read in order, the
convolutions are RRDBNet's ``conv_first``, ``body.N.rdbK.convM`` (15 per block), ``conv_body``,
``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``; or ``body.N`` of SRVGGNetCompact with the
PReLUs in between. Every byte of the file must be consumed, which the reader asserts.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imgq.ai.errors import ModelLoadError
from imgq.ai.ncnn_graph import BinReader, GraphLayer, parse_graph

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# Layers that carry no weights in the .bin; anything else is refused rather than misread.
WEIGHTLESS = {"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "PixelShuffle",
              "ReLU", "Sigmoid", "Crop", "Padding"}
RRDB_CONVS_PER_BLOCK = 15
RRDB_TAIL = ("conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last")


def read_weights(layers: list[GraphLayer], data: bytes) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Return, in order, ('conv'|'prelu', arrays) for every weighted layer; all bytes used."""
    reader = BinReader(data)
    weighted: list[tuple[str, dict[str, np.ndarray]]] = []
    for layer in layers:
        if layer.kind == "Convolution":
            weighted.append(("conv", _read_conv(layer, reader)))
        elif layer.kind == "PReLU":
            weighted.append(("prelu", {"weight": reader.raw_fp32(layer.integer(0, 1))}))
        elif layer.kind not in WEIGHTLESS:
            raise ModelLoadError(f"unsupported ncnn layer type {layer.kind!r}")
    reader.assert_consumed()
    return weighted


def _read_conv(layer: GraphLayer, reader: BinReader) -> dict[str, np.ndarray]:
    out_ch, kernel = layer.integer(0), layer.integer(1)
    size = layer.integer(6)
    in_ch = size // (out_ch * kernel * kernel)
    if in_ch * out_ch * kernel * kernel != size:
        raise ModelLoadError(f"ncnn layer {layer.name}: weight size does not factor")
    arrays = {"weight": reader.tagged(size).reshape(out_ch, in_ch, kernel, kernel)}
    if layer.integer(5):
        arrays["bias"] = reader.raw_fp32(out_ch)
    return arrays


def rrdb_keys(conv_count: int) -> list[str]:
    blocks, rest = divmod(conv_count - 1 - len(RRDB_TAIL), RRDB_CONVS_PER_BLOCK)
    if rest or blocks < 1:
        raise ModelLoadError(f"{conv_count} convolutions do not form an RRDBNet")
    body = [f"body.{n}.rdb{k}.conv{m}" for n in range(blocks)
            for k in range(1, 4) for m in range(1, 6)]
    return ["conv_first", *body, *RRDB_TAIL]


def to_state_dict(weighted: list[tuple[str, dict[str, np.ndarray]]],
                  architecture: str) -> dict[str, torch.Tensor]:
    import torch

    if architecture == "RRDBNet":
        if any(kind != "conv" for kind, _ in weighted):
            raise ModelLoadError("RRDBNet ncnn file has non-convolution weights")
        names = rrdb_keys(len(weighted))
    elif architecture == "SRVGGNetCompact":
        names = [f"body.{i}" for i in range(len(weighted))]
    else:
        raise ModelLoadError(f"no ncnn conversion for architecture {architecture!r}")
    state: dict[str, torch.Tensor] = {}
    for name, (_, arrays) in zip(names, weighted, strict=True):
        for suffix, array in arrays.items():
            state[f"{name}.{suffix}"] = torch.from_numpy(array)
    return state


def convert_files(param_path: Path, bin_path: Path, architecture: str) -> dict[str, Any]:
    layers = parse_graph(param_path.read_text())
    weighted = read_weights(layers, bin_path.read_bytes())
    logger.debug("converted ncnn model", extra={"param": str(param_path), "tensors": len(weighted)})
    return to_state_dict(weighted, architecture)
