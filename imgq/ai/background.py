"""Background removal with U²-Net-p (the ONNX file the rembg package ships), on onnxruntime.

Pre- and post-processing follow rembg's own session: Lanczos resize to 320×320, divide by the
image's maximum, ImageNet mean/std; the first output, min-max normalised, Lanczos-resized back.
Resizing uses libvips (imgq's image engine), so neither Pillow nor OpenCV is needed here.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from imgq.ai.descriptors import SHIPPED
from imgq.ai.onnx import onnx_session
from imgq.errors import InvalidParameters

logger = logging.getLogger(__name__)

MODEL_SIDE = 320
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
MODES = ("rgba", "mask", "composite")

_sessions: dict[tuple[str, bool], Any] = {}
_lock = threading.Lock()


def session(model: str = "u2netp", gpu: bool = False) -> Any:
    """One onnxruntime session per (model, gpu) per process."""
    with _lock:
        key = (model, gpu)
        if key not in _sessions:
            _sessions[key] = _new_session(model, gpu)
        return _sessions[key]


def _new_session(model: str, gpu: bool) -> Any:
    return onnx_session(SHIPPED.get(model).source.location(), gpu, "background removal")


def _resize(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    import pyvips

    image = pyvips.Image.new_from_array(np.ascontiguousarray(arr))
    resized = image.resize(width / image.width, vscale=height / image.height, kernel="lanczos3")
    return np.asarray(resized.numpy())


def _as_float_rgb(arr: np.ndarray) -> np.ndarray:
    colour = arr if arr.ndim == 2 else arr[:, :, : 3 if arr.shape[2] >= 3 else 1]
    colour = colour.astype(np.float32)
    if colour.ndim == 2 or colour.shape[2] == 1:
        colour = np.repeat(colour.reshape(arr.shape[0], arr.shape[1], 1), 3, axis=2)
    return colour


def predict_mask(arr: np.ndarray, model: str = "u2netp", gpu: bool = False) -> np.ndarray:
    """Foreground probability in 0..1, float32 (H, W)."""
    height, width = arr.shape[:2]
    small = _resize(_as_float_rgb(arr), MODEL_SIDE, MODEL_SIDE)
    small = small / max(float(small.max()), 1e-6)
    batch = ((small - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)
    sess = session(model, gpu)
    pred = sess.run(None, {sess.get_inputs()[0].name: batch})[0][0, 0]
    low, high = float(pred.min()), float(pred.max())
    pred = (pred - low) / max(high - low, 1e-6)
    mask: np.ndarray = np.clip(_resize(pred.astype(np.float32), width, height), 0.0, 1.0)
    return mask


def _max_value(dtype: np.dtype) -> float:
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    return 1.0


def remove_background(arr: np.ndarray, mode: str = "rgba",
                      color: tuple[float, ...] = (255, 255, 255), model: str = "u2netp",
                      gpu: bool = False) -> np.ndarray:
    """'rgba': the image with alpha = mask (grey in → grey+alpha out; an existing alpha is
    multiplied); 'mask': the mask alone (H, W) in the input's dtype; 'composite': the image
    over `color` (given in the input's value range), without alpha."""
    if mode not in MODES:
        raise InvalidParameters(f"mode must be one of {', '.join(MODES)}")
    if arr.ndim not in (2, 3):
        raise InvalidParameters(f"unsupported image shape {arr.shape}")
    mask = predict_mask(arr, model, gpu)
    top = _max_value(arr.dtype)
    hwc = arr[:, :, None] if arr.ndim == 2 else arr
    colour_count = 3 if hwc.shape[2] >= 3 else 1
    if hwc.shape[2] in (2, 4):
        mask = mask * (hwc[:, :, -1].astype(np.float32) / top)
    if mode == "mask":
        return _to_dtype(mask * top, arr.dtype)
    colour = hwc[:, :, :colour_count].astype(np.float32)
    if mode == "rgba":
        return _to_dtype(np.dstack([colour, mask * top]), arr.dtype)
    backdrop = np.asarray(color, dtype=np.float32).reshape(-1)[:3]
    if backdrop.size != colour_count:  # a colour for a grey image, or a grey level for colour
        backdrop = np.full(colour_count, float(backdrop.mean()), dtype=np.float32)
    blended = colour * mask[:, :, None] + backdrop * (1.0 - mask[:, :, None])
    result = _to_dtype(blended, arr.dtype)
    return result[:, :, 0] if arr.ndim == 2 else result


def _to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        converted: np.ndarray = np.rint(values).clip(info.min, info.max).astype(dtype)
        return converted
    return values.astype(dtype)
