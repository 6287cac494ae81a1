"""face_swap: the face of a picture sent with the job (`source_face`, an attachment) put onto
the faces of the image, with InsightFace's detector, ArcFace and inswapper models, which the
operator installs in `<models dir>/face_swap/` (imgq/ai/faces.py, docs/ai.md).

The source picture's largest face gives the identity; the target's largest face (or every face,
up to `max_faces`) is aligned to 128×128, swapped and pasted back under a feathered mask, so
pixels away from the faces keep their exact values. A picture with no face found fails the item
with `no_face`, saying which picture. Alpha is kept; 16-bit input comes back 16-bit; a grey
image comes back grey.

Resource "gpu": on a CPU the detector (640×640, about 10 GFLOPs) and each swapped face (the
128×128 swapper) take a few tenths of a second each; the models are loaded once per worker.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import numpy as np
from pydantic import Field

from imgq.ai.errors import NoFaceFound
from imgq.ops.ai_support import (
    AIConfig,
    from_array,
    missing_packages,
    stopping_as_the_item_asks,
    to_array,
)
from imgq.ops.base import Operation, Params, StepContext
from imgq.ops.image import Image
from imgq.ops.remote import AIOperation, run_remote, serving


class FaceSwapParams(Params):
    source_face: str = Field(
        min_length=1, max_length=255, description="File name of a picture sent in the job's "
        "'attachments' field: its largest face is put onto the image.")
    faces: Literal["largest", "all"] = Field(
        "largest", description="Which faces of the image to replace: the largest one, or all "
        "(up to max_faces, largest first).")
    max_faces: int = Field(10, ge=1, le=50, description="With faces=all, at most this many.")
    blend_ratio: float = Field(
        1.0, ge=0.0, le=1.0, description="1: the swapped face; 0: the image as it was; between: "
        "a mix of the two.")
    min_score: float = Field(
        0.5, ge=0.05, le=1.0, description="How sure the detector must be that it found a face.")


def _problem(config: AIConfig) -> str | None:
    missing = missing_packages("onnxruntime", "onnx")
    if missing:
        return (f"face swap needs {' and '.join(missing)} (pip install {' '.join(missing)}; "
                "both come with imgq)")
    from imgq.ai.faces import missing_files, no_model_message

    absent = missing_files(config.models_dir)
    return no_model_message(config.models_dir, absent) if absent else None


def _as_rgb(array: np.ndarray) -> tuple[np.ndarray, int]:
    """(H, W[, C]) → (H, W, 3 or 4) with the colour as RGB (grey repeated), and how many colour
    bands the input had."""
    hwc = array[:, :, None] if array.ndim == 2 else array
    colour = 3 if hwc.shape[2] >= 3 else 1
    if colour == 3:
        return hwc.copy(), 3
    rgb = np.repeat(hwc[:, :, :1], 3, axis=2)
    return (np.dstack([rgb, hwc[:, :, 1]]) if hwc.shape[2] == 2 else rgb), 1


def _eight_bit(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype == np.uint8:
        return rgb[:, :, :3]
    scaled: np.ndarray = np.rint(rgb[:, :, :3] / 257.0).astype(np.uint8)
    return scaled


def _back(work: np.ndarray, colour: int, original: np.ndarray) -> np.ndarray:
    if colour == 3:
        return work
    grey = np.rint(work[:, :, :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114],
                                                                dtype=np.float32))
    values = grey.astype(original.dtype)
    if original.ndim == 2:
        return values
    return np.dstack([values, work[:, :, 3]])


class FaceSwap(AIOperation):
    name = "face_swap"
    summary = ("Face swap (InsightFace models the operator installs): the face of a picture "
               "you attach (source_face) put onto the largest face of the image, or onto all.")
    params_model = FaceSwapParams
    resource = "gpu"
    attachment_params = ("source_face",)

    def __init__(self, config: AIConfig | None = None) -> None:
        super().__init__(config or AIConfig.from_environment())
        remote = serving(self.config, self.name, None) is not None
        self.unavailable_reason = None if remote else _problem(self.config)  # type: ignore[misc]
        self.concurrent = remote  # type: ignore[misc]  # served remotely: only waits there

    def name_suffix(self, params: FaceSwapParams) -> str:
        return "-swapped"

    def apply(self, image: Image, params: FaceSwapParams, ctx: StepContext) -> Image:
        from imgq.ai import faces

        config = self.config
        served = serving(config, self.name, None)
        if served is not None:
            return image.with_vips(run_remote(config, served, self.name,
                                              params.model_dump(mode="json"), ctx, image,
                                              {"source_face": params.source_face}))
        gpu = config.device != "cpu" and config.runs_on_cuda()
        ctx.progress(0.0, "face_swap: loading the models")
        models = faces.load(config.models_dir, gpu)
        with stopping_as_the_item_asks(ctx):
            ctx.progress(0.1, "face_swap: reading the source face")
            picture = _eight_bit(_as_rgb(to_array(ctx.attachment(params.source_face)).array)[0])
            found = models.detector.detect(picture, params.min_score)
            if not found:
                raise NoFaceFound(f"no face found in the source picture {params.source_face!r}: "
                                  "send a picture with a clearly visible face")
            source = max(found, key=lambda face: face.area)
            latent = models.swapper.latent(models.recognizer.embedding(picture, source))
            ctx.check()
            ctx.progress(0.3, "face_swap: finding the faces to replace")
            target = to_array(image)
            work, colour = _as_rgb(target.array)
            rgb = _eight_bit(work)
            targets = sorted(models.detector.detect(rgb, params.min_score),
                             key=lambda face: face.area, reverse=True)
            if not targets:
                raise NoFaceFound("no face found in the image to put the face onto (lower "
                                  "min_score if a face is there)")
            chosen = targets[:1] if params.faces == "largest" else targets[:params.max_faces]
            top = 65535.0 if work.dtype == np.uint16 else 255.0
            for number, face in enumerate(chosen):
                ctx.check()
                ctx.progress(0.4 + 0.6 * number / len(chosen),
                             f"face_swap: swapping face {number + 1} of {len(chosen)}")
                aligned, matrix = faces.align(rgb, face.keypoints, models.swapper.side)
                swapped = models.swapper.swap(aligned, latent)
                faces.paste(work, swapped, matrix, params.blend_ratio, top)
        out = from_array(image, _back(work, colour, target.array), target.icc)
        return replace(out, details={**out.details, "faces_found": len(targets),
                                     "faces_swapped": len(chosen),
                                     "source_face": params.source_face})


def operations(config: AIConfig | None = None) -> list[Operation]:
    return [FaceSwap(config)]
