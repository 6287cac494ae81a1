"""Face swapping with InsightFace's models, which the operator puts in `<models dir>/face_swap/`.

- ``det_10g.onnx``: SCRFD-10GF, the face detector of InsightFace's ``buffalo_l`` pack. Input
  RGB, (x - 127.5) / 128, the image scaled into a 640×640 canvas (top-left, black padding);
  outputs per stride (8, 16, 32; two anchors per cell): scores (N, 1), box distances (N, 4)
  and 5-point keypoint offsets (N, 10), in stride units from the cell's corner.
- ``w600k_r50.onnx``: ArcFace ResNet-50 of ``buffalo_l``: a 112×112 face aligned to the ArcFace
  template, RGB, (x - 127.5) / 127.5 → a 512-number identity embedding.
- ``inswapper_128.onnx``: InsightFace's swapper: ``target`` (1, 3, 128, 128), the target's face
  aligned to the template shifted 8 px right, RGB in 0..1; ``source`` (1, 512), the source's
  normalised embedding times ``emap`` (the graph's last initializer), normalised again →
  ``output``, the swapped face, same layout.

This follows InsightFace's own ``SCRFD``, ``ArcFaceONNX`` and ``INSwapper`` classes; the
similarity transform (Umeyama's least squares) is computed with numpy and the warps are
libvips' ``mapim``, so neither OpenCV nor scikit-image is needed. The swapped face is pasted
back under a mask that is feathered towards the aligned square's edges.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgq.ai.errors import AIUnavailable, ModelLoadError
from imgq.ai.onnx import onnx_session

log = logging.getLogger(__name__)

FOLDER = "face_swap"
DETECTOR = "det_10g.onnx"
RECOGNIZER = "w600k_r50.onnx"
SWAPPER = "inswapper_128.onnx"
FILES = (DETECTOR, RECOGNIZER, SWAPPER)
SOURCES = {DETECTOR: "InsightFace buffalo_l pack (SCRFD-10GF face detector)",
           RECOGNIZER: "InsightFace buffalo_l pack (ArcFace ResNet-50, WebFace600K)",
           SWAPPER: "InsightFace inswapper_128"}
LICENSE = ("InsightFace's buffalo_l and inswapper_128 weights: non-commercial research use only "
           "(the InsightFace code is MIT)")

#: Where the five keypoints (eyes, nose tip, mouth corners) of a 112×112 ArcFace crop lie.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]])
DETECTOR_SIDE = 640  # when the detector's input size is not fixed by the model
NMS_THRESHOLD = 0.4
SWAP_SIDE = 128
RECOGNITION_SIDE = 112


# -- the files ----------------------------------------------------------------------------------
def folder(models_dir: Path | None) -> Path | None:
    return None if models_dir is None else models_dir / FOLDER


def missing_files(models_dir: Path | None) -> list[str]:
    where = folder(models_dir)
    return [name for name in FILES if where is None or not (where / name).is_file()]


def no_model_message(models_dir: Path | None, missing: list[str] | None = None) -> str:
    where = folder(models_dir) or f"<IMGQ_AI_MODELS_DIR>/{FOLDER}"
    absent = missing if missing is not None else missing_files(models_dir)
    return (f"face swap needs InsightFace's models, and {', '.join(absent)} "
            f"{'is' if len(absent) == 1 else 'are'} not installed: put det_10g.onnx and "
            f"w600k_r50.onnx (from the buffalo_l pack) and inswapper_128.onnx in {where}, then "
            "restart (these weights are for non-commercial research use only), or serve it from "
            "a remote endpoint (IMGQ_AI_REMOTE_ENDPOINTS); see docs/ai.md")


def listing(models_dir: Path | None) -> dict[str, object]:
    """What GET /v1/models says about the face swap models (no server path)."""
    missing = missing_files(models_dir)
    return {
        "operation": "face_swap", "folder": f"<models dir>/{FOLDER}/",
        "files": [{"file": name, "installed": name not in missing, "source": source}
                  for name, source in SOURCES.items()],
        "available": not missing, "license": LICENSE,
        "how_to_install": None if not missing else (
            f"put {', '.join(FILES)} in the {FOLDER} folder of the server's IMGQ_AI_MODELS_DIR "
            "and restart; docs/ai.md says where they come from")}


# -- sessions, one per (file, device) per process -----------------------------------------------
_models: dict[tuple[str, int, bool], Any] = {}
_lock = threading.Lock()


def _cached(path: Path, gpu: bool, make: Callable[[Path, bool], Any]) -> Any:
    try:
        key = (str(path), path.stat().st_mtime_ns, gpu)
    except OSError:
        raise AIUnavailable(f"the face swap model {path.name} is missing from {path.parent}; "
                            "see docs/ai.md") from None
    with _lock:
        if key not in _models:
            _models[key] = make(path, gpu)
        return _models[key]


def _session(path: Path, gpu: bool) -> Any:
    try:
        return onnx_session(path, gpu, "face swap")
    except AIUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken file is the operator's to replace
        raise ModelLoadError(f"the face swap model {path.name} could not be loaded: "
                             f"{type(exc).__name__}: {str(exc)[:300]}") from None


# -- geometry -----------------------------------------------------------------------------------
def similarity(points: np.ndarray, template: np.ndarray) -> np.ndarray:
    """The 2×3 similarity transform (rotation, uniform scale, shift) taking `points` nearest to
    `template` in the least-squares sense (Umeyama 1991, without reflection)."""
    src, dst = points.astype(np.float64), template.astype(np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.ones(2)
    if np.linalg.det(covariance) < 0:
        sign[1] = -1.0
    rotation = u @ np.diag(sign) @ vt
    variance = (src_c ** 2).sum() / len(src)
    scale = float(singular @ sign) / variance if variance > 0 else 1.0
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - matrix[:, :2] @ src_mean
    return matrix


def invert(matrix: np.ndarray) -> np.ndarray:
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    inverse: np.ndarray = np.linalg.inv(full)[:2]
    return inverse


def template(side: int) -> np.ndarray:
    """The ArcFace template for a crop of `side` pixels, as InsightFace places it (a 128 crop
    keeps the 112 template's scale and shifts it 8 px right)."""
    if side % 112 == 0:
        result: np.ndarray = ARCFACE_TEMPLATE * (side / 112)
        return result
    ratio = side / 128
    shifted: np.ndarray = ARCFACE_TEMPLATE * ratio + np.array([8.0 * ratio, 0.0])
    return shifted


def _warp(image: np.ndarray, matrix: np.ndarray, width: int, height: int,
          origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Pixels (x, y) of an output width×height window whose top-left is `origin` in the
    destination, each read from `image` at `matrix`⁻¹·(x, y) (bilinear; 0 outside), where
    `matrix` maps image coordinates to destination coordinates. float32 (H, W[, C])."""
    import pyvips

    inverse = invert(matrix)
    ys, xs = np.mgrid[origin[1]:origin[1] + height, origin[0]:origin[0] + width]
    coords = np.stack([inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2],
                       inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]], axis=2)
    bands = 1 if image.ndim == 2 else image.shape[2]
    empty = np.zeros((height, width, bands) if image.ndim == 3 else (height, width),
                     dtype=np.float32)
    # Only the part of the image the window reads is converted (a face, not a 16 MP photo).
    left = max(0, int(np.floor(coords[:, :, 0].min())) - 1)
    top = max(0, int(np.floor(coords[:, :, 1].min())) - 1)
    right = min(image.shape[1], int(np.ceil(coords[:, :, 0].max())) + 2)
    bottom = min(image.shape[0], int(np.ceil(coords[:, :, 1].max())) + 2)
    if right <= left or bottom <= top:
        return empty
    part = np.ascontiguousarray(image[top:bottom, left:right], dtype=np.float32)
    coords -= np.array([left, top], dtype=coords.dtype)
    source = pyvips.Image.new_from_array(part)
    index = pyvips.Image.new_from_array(coords.astype(np.float32))
    out = source.mapim(index, interpolate=pyvips.Interpolate.new("bilinear"))
    warped: np.ndarray = np.asarray(out.numpy(), dtype=np.float32)
    return warped.reshape(empty.shape)


def align(rgb: np.ndarray, keypoints: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """The face cropped, rotated and scaled onto the template: (side, side, 3) float32 in the
    input's values, and the 2×3 transform from image to crop coordinates."""
    matrix = similarity(keypoints, template(side))
    return _warp(rgb, matrix, side, side), matrix


# -- detection ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in image pixels
    score: float
    keypoints: np.ndarray  # (5, 2): eyes, nose tip, mouth corners, in image pixels

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


class Detector:
    """SCRFD with keypoints, as InsightFace's `SCRFD` class runs it."""

    def __init__(self, path: Path, gpu: bool) -> None:
        self.session = _session(path, gpu)
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        shape = first.shape
        fixed = len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape[2:])
        self.side = (int(shape[3]), int(shape[2])) if fixed else (DETECTOR_SIDE, DETECTOR_SIDE)
        self.output_names = [o.name for o in self.session.get_outputs()]
        count = len(self.output_names)
        if count not in (9, 15):
            raise ModelLoadError(f"{path.name} has {count} outputs; face swap needs SCRFD with "
                                 "keypoints (9 outputs, as det_10g.onnx has)")
        self.levels = count // 3
        self.strides = (8, 16, 32) if self.levels == 3 else (8, 16, 32, 64, 128)
        self.anchors = 2 if self.levels == 3 else 1

    def detect(self, rgb: np.ndarray, threshold: float) -> list[Face]:
        """Faces in an (H, W, 3) uint8 RGB image, best score first."""
        import pyvips

        height, width = rgb.shape[:2]
        canvas_w, canvas_h = self.side
        if height / width > canvas_h / canvas_w:
            new_h, new_w = canvas_h, max(1, int(canvas_h * width / height))
        else:
            new_w, new_h = canvas_w, max(1, int(canvas_w * height / width))
        scale = new_h / height
        image = pyvips.Image.new_from_array(np.ascontiguousarray(rgb))
        small = np.asarray(image.resize(new_w / width, vscale=new_h / height).cast("float")
                           .numpy(), dtype=np.float32)[:new_h, :new_w]
        canvas = np.zeros((canvas_h, canvas_w, 3), dtype=np.float32)
        canvas[:small.shape[0], :small.shape[1]] = small
        blob = ((canvas - 127.5) / 128.0).transpose(2, 0, 1)[None]
        outputs = self.session.run(self.output_names, {self.input_name: blob})
        boxes, scores, points = [], [], []
        for level, stride in enumerate(self.strides):
            score = _rows(outputs[level], 1)[:, 0]
            distance = _rows(outputs[level + self.levels], 4) * stride
            offsets = _rows(outputs[level + 2 * self.levels], 10) * stride
            rows, cols = canvas_h // stride, canvas_w // stride
            grid_y, grid_x = np.mgrid[:rows, :cols]
            centres = np.stack([grid_x, grid_y], axis=-1).astype(np.float32)
            centres = np.repeat((centres * stride).reshape(-1, 2), self.anchors, axis=0)
            if len(centres) != len(score):
                raise ModelLoadError(f"the face detector's stride-{stride} output has "
                                     f"{len(score)} rows, not the {len(centres)} SCRFD makes")
            keep = score >= threshold
            centre = centres[keep]
            boxes.append(np.hstack([centre - distance[keep][:, :2],
                                    centre + distance[keep][:, 2:]]))
            points.append(centre[:, None, :] + offsets[keep].reshape(-1, 5, 2))
            scores.append(score[keep])
        found_scores = np.concatenate(scores)
        found_boxes = np.concatenate(boxes) / scale
        found_points = np.concatenate(points) / scale
        order = _nms(found_boxes, found_scores, NMS_THRESHOLD)
        return [Face(tuple(float(v) for v in found_boxes[i]),  # type: ignore[arg-type]
                     float(found_scores[i]), found_points[i].astype(np.float64))
                for i in order]


def _rows(output: np.ndarray, width: int) -> np.ndarray:
    """An output as (N, width), whether or not the model kept the batch axis."""
    return np.asarray(output, dtype=np.float32).reshape(-1, width)


def _nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Indices of the boxes kept by non-maximum suppression, best score first."""
    order = list(np.argsort(-scores, kind="stable"))
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    kept: list[int] = []
    while order:
        best, rest = order[0], np.array(order[1:], dtype=np.int64)
        kept.append(int(best))
        if not len(rest):
            break
        x1 = np.maximum(boxes[best, 0], boxes[rest, 0])
        y1 = np.maximum(boxes[best, 1], boxes[rest, 1])
        x2 = np.minimum(boxes[best, 2], boxes[rest, 2])
        y2 = np.minimum(boxes[best, 3], boxes[rest, 3])
        overlap = np.maximum(0.0, x2 - x1) * np.maximum(0.0, y2 - y1)
        iou = overlap / np.maximum(areas[best] + areas[rest] - overlap, 1e-9)
        order = [int(i) for i in rest[iou <= threshold]]
    return kept


# -- identity and swapping ----------------------------------------------------------------------
class Recognizer:
    """ArcFace: an aligned 112×112 face → its normalised 512-number embedding."""

    def __init__(self, path: Path, gpu: bool) -> None:
        self.session = _session(path, gpu)
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        side = first.shape[2] if len(first.shape) == 4 else None
        self.side = side if isinstance(side, int) and side > 0 else RECOGNITION_SIDE
        self.mean, self.std = _input_normalisation(path)

    def embedding(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        crop, _ = align(rgb, face.keypoints, self.side)
        blob = ((crop - self.mean) / self.std).transpose(2, 0, 1)[None].astype(np.float32)
        vector = np.asarray(self.session.run(None, {self.input_name: blob})[0],
                            dtype=np.float64).reshape(-1)
        norm = float(np.linalg.norm(vector))
        if norm == 0.0:
            raise ModelLoadError("the face recognition model gave an empty embedding")
        return vector / norm


class Swapper:
    """inswapper: the target's aligned face and the source's identity → the swapped face."""

    def __init__(self, path: Path, gpu: bool) -> None:
        self.session = _session(path, gpu)
        names = [i.name for i in self.session.get_inputs()]
        if len(names) != 2:
            raise ModelLoadError(f"{path.name} has {len(names)} inputs; the face swapper takes "
                                 "two (target, source), as inswapper_128.onnx does")
        self.target_name = "target" if "target" in names else names[0]
        self.source_name = "source" if "source" in names else names[1]
        self.emap = _last_initializer(path)
        shape = self.session.get_inputs()[names.index(self.target_name)].shape
        side = shape[2] if len(shape) == 4 else None
        self.side = side if isinstance(side, int) and side > 0 else SWAP_SIDE

    def latent(self, embedding: np.ndarray) -> np.ndarray:
        if self.emap.shape[0] != embedding.shape[0]:
            raise ModelLoadError(f"the face swapper's emap is {self.emap.shape}; it does not fit "
                                 f"a {embedding.shape[0]}-number embedding")
        latent = embedding.reshape(1, -1) @ self.emap
        result: np.ndarray = (latent / max(float(np.linalg.norm(latent)), 1e-12)).astype(
            np.float32)
        return result

    def swap(self, aligned: np.ndarray, latent: np.ndarray) -> np.ndarray:
        """An aligned (side, side, 3) face in 0..255 → the swapped face, the same way."""
        blob = (aligned / 255.0).transpose(2, 0, 1)[None].astype(np.float32)
        out = self.session.run(None, {self.target_name: blob, self.source_name: latent})[0]
        face: np.ndarray = np.clip(np.asarray(out[0], dtype=np.float32).transpose(1, 2, 0)
                                   * 255.0, 0.0, 255.0)
        return face


def _graph(path: Path) -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise AIUnavailable("face swap needs the onnx package to read its models' graphs: "
                            "pip install onnx") from exc
    try:
        return onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - a broken file is the operator's to replace
        raise ModelLoadError(f"the face swap model {path.name} could not be read: "
                             f"{type(exc).__name__}: {str(exc)[:300]}") from None


def _input_normalisation(path: Path) -> tuple[float, float]:
    """(mean, std) of the recognition model's input, decided as InsightFace's ArcFaceONNX does:
    models converted from MXNet subtract and scale inside the graph (a Sub and a Mul among the
    first eight nodes) and take 0..255; the others, w600k_r50 among them, take
    (x - 127.5) / 127.5."""
    names = [str(node.name) for node in _graph(path).graph.node[:8]]
    subtracts = any(name.startswith(("Sub", "_minus")) for name in names)
    multiplies = any(name.startswith(("Mul", "_mul")) for name in names)
    return (0.0, 1.0) if subtracts and multiplies else (127.5, 127.5)


def _last_initializer(path: Path) -> np.ndarray:
    """inswapper keeps the map from ArcFace embeddings to its latent space as the graph's last
    initializer (InsightFace's INSwapper reads it the same way)."""
    model = _graph(path)
    from onnx import numpy_helper

    if not model.graph.initializer:
        raise ModelLoadError(f"{path.name} has no initializers: it is not inswapper_128.onnx")
    emap: np.ndarray = np.asarray(numpy_helper.to_array(model.graph.initializer[-1]),
                                  dtype=np.float64)
    if emap.ndim != 2:
        raise ModelLoadError(f"{path.name}: its last initializer is {emap.shape}, not the "
                             "embedding map inswapper_128.onnx has")
    return emap


@dataclass(frozen=True)
class Models:
    detector: Detector
    recognizer: Recognizer
    swapper: Swapper


def load(models_dir: Path | None, gpu: bool) -> Models:
    missing = missing_files(models_dir)
    where = folder(models_dir)
    if missing or where is None:
        raise AIUnavailable(no_model_message(models_dir, missing))
    return Models(_cached(where / DETECTOR, gpu, Detector),
                  _cached(where / RECOGNIZER, gpu, Recognizer),
                  _cached(where / SWAPPER, gpu, Swapper))


# -- pasting back -------------------------------------------------------------------------------
def feather_mask(side: int) -> np.ndarray:
    """1 in the middle of the aligned square, falling smoothly to 0 at a tenth of its side from
    the edges (InsightFace erodes and blurs its mask by about as much)."""
    edge = np.minimum(np.arange(side), np.arange(side)[::-1]).astype(np.float32)
    margin, ramp = side / 40.0, side / 10.0
    one_axis = np.clip((edge - margin) / ramp, 0.0, 1.0)
    one_axis = one_axis * one_axis * (3.0 - 2.0 * one_axis)  # smoothstep
    mask: np.ndarray = np.minimum(one_axis[:, None], one_axis[None, :])
    return mask


def paste(image: np.ndarray, face: np.ndarray, matrix: np.ndarray, blend: float,
          top: float) -> None:
    """Blend the swapped `face` (side, side, 3; 0..255), whose crop `matrix` maps image
    coordinates into, back into `image` (H, W, 3+; values up to `top`) in place. Pixels the
    mask does not reach keep their exact values."""
    height, width = image.shape[:2]
    side = face.shape[0]
    inverse = invert(matrix)
    corners = np.array([[0, 0, 1], [side, 0, 1], [0, side, 1], [side, side, 1]], dtype=np.float64)
    placed = corners @ inverse.T
    x0 = max(0, int(np.floor(placed[:, 0].min())))
    y0 = max(0, int(np.floor(placed[:, 1].min())))
    x1 = min(width, int(np.ceil(placed[:, 0].max())) + 1)
    y1 = min(height, int(np.ceil(placed[:, 1].max())) + 1)
    if x1 <= x0 or y1 <= y0:
        return
    both = np.dstack([face * (top / 255.0), feather_mask(side)])
    warped = _warp(both, inverse, x1 - x0, y1 - y0, (x0, y0))
    weight = warped[:, :, 3] * blend
    region = image[y0:y1, x0:x1, :3].astype(np.float32)
    mixed = region + weight[:, :, None] * (warped[:, :, :3] - region)
    touched = weight > 0
    values = np.clip(np.rint(mixed), 0, top).astype(image.dtype)
    image[y0:y1, x0:x1, :3][touched] = values[touched]
