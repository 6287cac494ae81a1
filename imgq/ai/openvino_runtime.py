"""The shipped ncnn files (.param + .bin) as an OpenVINO model, built layer by layer.

bench/bench_runtimes.py measured OpenVINO as the fastest exact CPU runtime for the Real-ESRGAN
and Real-CUGAN networks that it can run without torch. Their weights ship as ncnn files, and OpenVINO reads no ncnn; converting through
PyTorch or ONNX would need torch or onnx at install time. So this module reads the ncnn graph
(layer types, blob wiring, parameters) and the weights in file order, and builds the same graph
with OpenVINO's operation set: no torch, no file written, a fraction of a second per model.
Only the layer types the shipped files use are known; any other is refused by name.

ncnn blobs are (C, H, W) without a batch axis; here every blob is (1, C, H, W), and the 1-D
blobs of Real-CUGAN's squeeze-excitation (global pooling → InnerProduct) are (1, C, 1, 1).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from imgq.ai.errors import AIUnavailable, ModelLoadError
from imgq.ai.ncnn_graph import BinReader, GraphLayer, parse_graph

logger = logging.getLogger(__name__)

Node = Any  # an OpenVINO output (openvino.Output); untyped in openvino's stubs


class GraphBuilder:
    """ncnn layers → OpenVINO nodes, in file order, weights consumed as they come."""

    def __init__(self, reader: BinReader, min_side: int = 1) -> None:
        import openvino as ov
        import openvino.opset13 as ops

        self.ov, self.ops, self.reader = ov, ops, reader
        self.min_side = min_side
        self.blobs: dict[str, Node] = {}
        self.handlers: dict[str, Callable[[GraphLayer, list[Node]], Node]] = {
            "Convolution": self.convolution, "Deconvolution": self.deconvolution,
            "PReLU": self.prelu, "Eltwise": self.eltwise, "BinaryOp": self.binary,
            "Concat": self.concat, "Interp": self.interp, "PixelShuffle": self.pixel_shuffle,
            "Crop": self.crop, "Pooling": self.pooling, "InnerProduct": self.inner_product,
        }

    # -- wiring --------------------------------------------------------------------------
    def add(self, layer: GraphLayer) -> None:
        if layer.kind == "Input":
            self.input = self.ops.parameter(self.ov.PartialShape(
                [1, 3, self.ov.Dimension(self.min_side, -1), self.ov.Dimension(self.min_side, -1)]),
                np.float32,
                                            name="input")
            self.blobs[layer.tops[0]] = self.input.output(0)
            return
        inputs = [self.blobs[name] for name in layer.bottoms]
        if layer.kind == "Split":
            for top in layer.tops:
                self.blobs[top] = inputs[0]
            return
        handler = self.handlers.get(layer.kind)
        if handler is None:
            raise ModelLoadError(f"no OpenVINO translation for ncnn layer type {layer.kind!r}")
        self.blobs[layer.tops[0]] = handler(layer, inputs)

    def const(self, values: np.ndarray) -> Node:
        return self.ops.constant(np.ascontiguousarray(values, dtype=np.float32)).output(0)

    def activation(self, node: Node, layer: GraphLayer) -> Node:
        kind = layer.integer(9)
        if kind == 0:
            return node
        if kind == 1:
            return self.ops.relu(node).output(0)
        if kind == 2:
            slope = layer.array(10, [0.0])[0]
            return self.ops.prelu(node, self.const(np.array([slope]))).output(0)
        if kind == 4:
            return self.ops.sigmoid(node).output(0)
        raise ModelLoadError(f"ncnn activation type {kind} in {layer.name} is not supported")

    def with_bias(self, node: Node, layer: GraphLayer, channels: int) -> Node:
        if not layer.integer(5):
            return node
        bias = self.reader.raw_fp32(channels).reshape(1, channels, 1, 1)
        return self.ops.add(node, self.const(bias)).output(0)

    # -- layers --------------------------------------------------------------------------
    def convolution(self, layer: GraphLayer, inputs: list[Node]) -> Node:
        out_ch, kw = layer.integer(0), layer.integer(1)
        kh = layer.integer(11, kw)
        in_ch = layer.integer(6) // (out_ch * kw * kh)
        weights = self.reader.tagged(layer.integer(6)).reshape(out_ch, in_ch, kh, kw)
        stride = [layer.integer(13, layer.integer(3, 1)), layer.integer(3, 1)]
        dilation = [layer.integer(12, layer.integer(2, 1)), layer.integer(2, 1)]
        left = layer.integer(4)
        if left < 0:
            raise ModelLoadError(f"ncnn 'same' padding in {layer.name} is not supported")
        top, right = layer.integer(14, left), layer.integer(15, left)
        bottom = layer.integer(16, top)
        node = self.ops.convolution(inputs[0], self.const(weights), stride, [top, left],
                                    [bottom, right], dilation).output(0)
        return self.activation(self.with_bias(node, layer, out_ch), layer)

    def deconvolution(self, layer: GraphLayer, inputs: list[Node]) -> Node:
        out_ch, kw = layer.integer(0), layer.integer(1)
        kh = layer.integer(11, kw)
        in_ch = layer.integer(6) // (out_ch * kw * kh)
        # ncnn keeps (out, in, kh, kw); OpenVINO wants PyTorch's (in, out, kh, kw).
        weights = self.reader.tagged(layer.integer(6)).reshape(out_ch, in_ch, kh, kw)
        weights = weights.transpose(1, 0, 2, 3)
        stride = [layer.integer(13, layer.integer(3, 1)), layer.integer(3, 1)]
        left = layer.integer(4)
        top, right = layer.integer(14, left), layer.integer(15, left)
        bottom = layer.integer(16, top)
        if layer.integer(18) or layer.integer(19) or layer.integer(20) or layer.integer(21):
            raise ModelLoadError(f"ncnn output padding in {layer.name} is not supported")
        node = self.ops.convolution_backprop_data(
            inputs[0], self.const(weights), stride, pads_begin=[top, left],
            pads_end=[bottom, right],
            dilations=[layer.integer(12, layer.integer(2, 1)), layer.integer(2, 1)]).output(0)
        return self.activation(self.with_bias(node, layer, out_ch), layer)

    def prelu(self, layer: GraphLayer, inputs: list[Node]) -> Node:
        slopes = self.reader.raw_fp32(layer.integer(0, 1))
        return self.ops.prelu(inputs[0], self.const(slopes.reshape(-1, 1, 1))).output(0)

    def eltwise(self, layer: GraphLayer, inputs: list[Node]) -> Node:
        if layer.integer(0) != 1:
            raise ModelLoadError(f"ncnn Eltwise {layer.name}: only sums are supported")
        coeffs = layer.array(1, [1.0] * len(inputs))
        total = None
        for node, coeff in zip(inputs, coeffs, strict=True):
            term = node if coeff == 1.0 else self.ops.multiply(
                node, self.const(np.array(coeff))).output(0)
            total = term if total is None else self.ops.add(total, term).output(0)
        return total

    def binary(self, layer: GraphLayer, inputs: list[Node]) -> Node:
        ops = {0: self.ops.add, 1: self.ops.subtract, 2: self.ops.multiply, 3: self.ops.divide}
        op = ops.get(layer.integer(0))
        if op is None:
            raise ModelLoadError(f"ncnn BinaryOp type {layer.integer(0)} is not supported")
        other = inputs[1] if not layer.integer(1) else self.const(np.array(layer.number(2)))
        return op(inputs[0], other).output(0)

    def concat(self, layer: GraphLayer, inputs: list[Node]) -> Node:
        return self.ops.concat(inputs, layer.integer(0) + 1).output(0)

    def interp(self, layer: GraphLayer, inputs: list[Node]) -> Node:
        if layer.integer(0) != 1 or layer.integer(3) or layer.integer(4):
            raise ModelLoadError(f"ncnn Interp {layer.name}: only nearest by a scale is supported")
        scales = self.const(np.array([layer.number(1, 1.0), layer.number(2, 1.0)]))
        return self.ops.interpolate(
            inputs[0], scales, "nearest", "scales", axes=[2, 3],
            coordinate_transformation_mode="asymmetric", nearest_mode="floor").output(0)

    def pixel_shuffle(self, layer: GraphLayer, inputs: list[Node]) -> Node:
        if layer.integer(1):
            raise ModelLoadError(f"ncnn PixelShuffle mode {layer.integer(1)} is not supported")
        return self.ops.depth_to_space(inputs[0], "depth_first", layer.integer(0)).output(0)

    def crop(self, layer: GraphLayer, inputs: list[Node]) -> Node:
        starts, ends, axes = (layer.array(k, []) for k in (9, 10, 11))
        if not axes or len(starts) != len(axes) or len(ends) != len(axes):
            raise ModelLoadError(f"ncnn Crop {layer.name}: only the start/end form is supported")
        big = np.iinfo(np.int64).max
        stops = [int(e) if e != 0 else big for e in ends]  # ncnn: 0 as an end means "to the end"
        axes4 = [int(a) + 4 if a < 0 else int(a) + 1 for a in axes]
        return self.ops.slice(inputs[0], np.array(starts, np.int64), np.array(stops, np.int64),
                              np.ones(len(axes), np.int64), np.array(axes4, np.int64)).output(0)

    def pooling(self, layer: GraphLayer, inputs: list[Node]) -> Node:
        if layer.integer(0) != 1 or not layer.integer(4):
            raise ModelLoadError(f"ncnn Pooling {layer.name}: only global average is supported")
        return self.ops.reduce_mean(inputs[0], np.array([2, 3], np.int64), True).output(0)

    def inner_product(self, layer: GraphLayer, inputs: list[Node]) -> Node:
        out_ch = layer.integer(0)
        weights = self.reader.tagged(layer.integer(2)).reshape(out_ch, -1)
        flat = self.ops.reshape(inputs[0], np.array([1, -1], np.int64), False).output(0)
        node = self.ops.matmul(flat, self.const(weights), False, True).output(0)
        node = self.ops.reshape(node, np.array([1, out_ch, 1, 1], np.int64), False).output(0)
        if layer.integer(1):
            bias = self.reader.raw_fp32(out_ch).reshape(1, out_ch, 1, 1)
            node = self.ops.add(node, self.const(bias)).output(0)
        return self.activation(node, layer)


def build_model(stem: Path, min_side: int = 1) -> Any:
    """The OpenVINO model (openvino.Model) of an ncnn .param/.bin pair, for inputs of at least
    min_side pixels a side (a network without border padding shrinks its blobs)."""
    import openvino as ov

    param, weights = stem.with_suffix(".param"), stem.with_suffix(".bin")
    try:
        layers = parse_graph(param.read_text())
        reader = BinReader(weights.read_bytes())
    except OSError as exc:
        raise ModelLoadError(f"cannot read {param.name} / {weights.name}: {exc}") from exc
    builder = GraphBuilder(reader, min_side)
    for layer in layers:
        builder.add(layer)
    reader.assert_consumed()
    output = builder.blobs[layers[-1].tops[-1]]
    return ov.Model([output], [builder.input], stem.name)


class OpenVinoNet:
    """A compiled model; ``forward`` maps (3, h, w) float32 to the network's output."""

    def __init__(self, stem: Path, threads: int = 1, min_side: int = 1) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise AIUnavailable("this model runs on OpenVINO: pip install openvino") from exc
        config = {"INFERENCE_NUM_THREADS": max(1, threads), "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_PRECISION_HINT": "f32", "ENABLE_CPU_PINNING": False}
        self.compiled = ov.Core().compile_model(build_model(stem, min_side), "CPU", config)
        self.threads = max(1, threads)
        self._request = self.compiled.create_infer_request()
        self._lock = threading.Lock()

    def forward(self, chw: np.ndarray) -> np.ndarray:
        with self._lock:  # one request at a time: the threads are already all in use
            self._request.infer({0: np.ascontiguousarray(chw[None], dtype=np.float32)})
            return np.array(self._request.get_output_tensor(0).data[0], copy=True)
