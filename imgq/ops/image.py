"""The image abstraction: sniffing, header checks, decoding and encoding, on libvips.

Operations receive and return :class:`Image`; only this module and the operation modules
touch pyvips. Images are decoded lazily with sequential access, so a pipeline streams through
libvips instead of holding whole decoded images in memory.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyvips

from imgq.domain.units import describe_megapixels
from imgq.errors import AnimatedRefused, DecodeError, ImageTooLarge, UnsupportedFormat

log = logging.getLogger(__name__)

#: format name -> (libvips loader, media type, file extension)
INPUT_FORMATS: dict[str, tuple[str, str, str]] = {
    "jpeg": ("jpegload", "image/jpeg", "jpg"),
    "png": ("pngload", "image/png", "png"),
    "webp": ("webpload", "image/webp", "webp"),
    "gif": ("gifload", "image/gif", "gif"),
    "tiff": ("tiffload", "image/tiff", "tiff"),
    "heif": ("heifload", "image/heif", "heic"),
    "avif": ("heifload", "image/avif", "avif"),
}
OUTPUT_FORMATS: dict[str, tuple[str, str]] = {
    "jpeg": ("image/jpeg", "jpg"),
    "png": ("image/png", "png"),
    "webp": ("image/webp", "webp"),
    "avif": ("image/avif", "avif"),
    "gif": ("image/gif", "gif"),
    "tiff": ("image/tiff", "tiff"),
}
ANIMATABLE = frozenset({"gif", "webp"})
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}


def sniff(head: bytes) -> str | None:
    """Name the format from the first bytes of a file (at least 32), or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[4:8] == b"ftyp":
        brands = {head[8:12]} | {head[i : i + 4] for i in range(16, min(len(head), 32), 4)}
        if brands & _AVIF_BRANDS:
            return "avif"
        if brands & _HEIF_BRANDS:
            return "heif"
    return None


@dataclass(frozen=True)
class Limits:
    max_pixels: int
    max_frames: int
    reject_animated: bool


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int
    frames: int = 1
    bytes: int = 0
    #: what the steps report about the result (generate: model, seed, steps, prompt_used)
    details: dict[str, Any] = field(default_factory=dict)


def _load(path: Path | str, fmt: str, **options: Any) -> pyvips.Image:
    loader = getattr(pyvips.Image, INPUT_FORMATS[fmt][0])
    return loader(str(path), **options)


def open_source(path: Path) -> pyvips.Source:
    """The file as a libvips source, for a header read and a load of the same file: the file
    is opened once for both, and a load through it reads what the header read already has."""
    return pyvips.Source.new_from_file(str(path))


def header(source: pyvips.Source, fmt: str, **options: Any) -> pyvips.Image:
    """The source opened by its format's own loader, nothing decoded yet: libvips' search for
    the loader of a file (new_from_file) costs more than reading a small JPEG's header, and
    so does each option, which is why none is given unless needed."""
    return pyvips.Operation.call(f"{INPUT_FORMATS[fmt][0]}_source", source, **options)


def quiet_libvips() -> None:
    """Hand only libvips' warnings and errors to Python's logging. pyvips passes it every
    message, and libvips says about ten things of each image it makes ("selected loader",
    "residual reducev", "threadpool completed"): each one a call into Python, from the thread
    that said it, to be dropped by the `pyvips` logger, which `imgq.logs` keeps at WARNING.
    The rest go to GLib's own handler, which drops them unless G_MESSAGES_DEBUG names VIPS."""
    flags = pyvips.GLogLevelFlags
    try:
        pyvips.glib_lib.g_log_remove_handler(b"VIPS", pyvips._log_handler_id)
        pyvips._log_handler_id = pyvips.glib_lib.g_log_set_handler(
            b"VIPS", flags.LEVEL_WARNING | flags.LEVEL_CRITICAL | flags.LEVEL_ERROR
            | flags.FLAG_FATAL | flags.FLAG_RECURSION, pyvips._log_handler_cb, pyvips.ffi.NULL)
    except AttributeError:  # a pyvips without these names: its handler stays as it is
        log.debug("pyvips' log handler left as it is", exc_info=True)


def probe(path: Path, name: str, limits: Limits, data: bytes | None = None) -> ImageInfo:
    """Check a stored upload from its header only, before anything is decoded: from `data`,
    its bytes, where the caller holds them (a small upload), else from the file."""
    if data is None:
        with path.open("rb") as fh:
            head = fh.read(64)
    else:
        head = data[:64]
    fmt = sniff(head)
    if fmt is None:
        raise UnsupportedFormat(
            f"{name}: not an image in a supported format "
            f"(accepted: {', '.join(sorted(INPUT_FORMATS))})",
            file=name,
        )
    try:
        # From memory where the bytes are here: libvips' reading of a file costs more than
        # its reading of a small JPEG's header. Sequential only where a pixel is decoded.
        source = open_source(path) if data is None else pyvips.Source.new_from_memory(data)
        image = (header(source, fmt, access="sequential") if fmt in HEIF_FORMATS
                 else header(source, fmt))
    except pyvips.Error as exc:
        raise UnsupportedFormat(f"{name}: unreadable {fmt} header ({vips_reason(exc)})", file=name) from None
    frames = _pages(image)
    width, height = image.width, image.height
    if frames > 1 and fmt in ANIMATABLE:
        if limits.reject_animated:
            raise AnimatedRefused(f"{name}: animated images are not accepted", file=name)
        if frames > limits.max_frames:
            raise ImageTooLarge(
                f"{name}: {frames} frames, more than the limit of {limits.max_frames} frames",
                file=name
            )
        height = int(image.get("page-height")) if image.get_typeof("page-height") else height
    if width * height > limits.max_pixels:
        raise ImageTooLarge(
            f"{name}: {width}×{height} is {width * height:,} pixels, "
            f"more than the limit of {limits.max_pixels:,} pixels "
            f"({describe_megapixels(limits.max_pixels)})",
            file=name,
        )
    if fmt in HEIF_FORMATS:
        _refuse_undecodable(image, name, fmt)
    return ImageInfo(fmt, width, height, frames,
                     path.stat().st_size if data is None else len(data))


HEIF_FORMATS = frozenset({"heif", "avif"})


def _refuse_undecodable(header: pyvips.Image, name: str, fmt: str) -> None:
    """HEIF's header is read by libheif alone; its pixels need a codec plugin that a libvips
    build may lack (HEVC for HEIC). Decode one pixel now, so such a file is a 415 at upload
    rather than an item that fails later."""
    try:
        header.crop(0, 0, 1, 1).avg()
    except pyvips.Error as exc:
        detail = exc.detail or exc.message or ""
        if "plugin" in detail or "not been built in" in detail or "Unsupported codec" in detail:
            raise UnsupportedFormat(
                f"{name}: this server cannot decode {'HEIC' if fmt == 'heif' else 'AVIF'} "
                "images (its image library has no decoder for them); send JPEG, PNG, WebP "
                "or AVIF instead", file=name) from None
        raise UnsupportedFormat(f"{name}: unreadable {fmt} image ({vips_reason(exc)})",
                                file=name) from None


def _pages(image: pyvips.Image) -> int:
    # get_typeof is 0 for a field the image lacks; get_fields would build every field's name
    return int(image.get("n-pages")) if image.get_typeof("n-pages") else 1


def vips_reason(exc: pyvips.Error) -> str:
    """The line of libvips' error that names the cause: the first one (later lines are
    consequences such as "vips2png: unable to write to target")."""
    lines = [ln.strip() for ln in (exc.detail or exc.message or "").splitlines() if ln.strip()]
    reason = lines[0] if lines else "unknown reason"
    return _PATH.sub("<file>", reason)[:200]  # server paths are nobody else's business


_PATH = re.compile(r"(?:/[\w.@+-]+){2,}/?")


@dataclass
class EncodeOptions:
    format: str | None = None  # None: same as the input where it can be written
    quality: int | None = None
    lossless: bool = False
    keep_metadata: bool = False


@dataclass
class Image:
    """An image on its way through a pipeline. `vips` is lazy until encoded."""

    vips: pyvips.Image
    source_format: str
    encode: EncodeOptions = field(default_factory=EncodeOptions)
    #: facts a step reports about the result, kept in the item's output metadata
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def width(self) -> int:
        return int(self.vips.get("width"))

    @property
    def height(self) -> int:
        return int(self.vips.get("height"))

    @property
    def bands(self) -> int:
        return int(self.vips.bands)

    @property
    def has_alpha(self) -> bool:
        return bool(self.vips.hasalpha())

    @property
    def is_16bit(self) -> bool:
        return bool(self.vips.format == "ushort")

    def with_vips(self, image: pyvips.Image) -> Image:
        return replace(self, vips=image)

    def map_colour(self, fn: Callable[[pyvips.Image], pyvips.Image]) -> Image:
        """Apply `fn` to the colour bands only, keep alpha and the sample format as they were."""
        src = self.vips
        colour, alpha = (src[:-1], src[-1]) if self.has_alpha else (src, None)
        out = fn(colour)
        if out.format != src.format:
            out = out.cast(src.format)
        if alpha is not None:
            out = out.bandjoin(alpha)
        return self.with_vips(out.copy(interpretation=src.interpretation))

    def output_format(self) -> str:
        fmt = self.encode.format or self.source_format
        if fmt == "heif":
            return "avif"
        return fmt if fmt in OUTPUT_FORMATS else "png"


def decode(path: Path, fmt: str) -> Image:
    """Decode for processing: strict about truncated data, EXIF orientation applied once."""
    try:
        image = _load(path, fmt, access="sequential", fail_on="error")
        if image.get_typeof("orientation") and int(image.get("orientation")) not in (0, 1):
            image = _load(path, fmt, fail_on="error").autorot()
    except pyvips.Error as exc:
        raise DecodeError(f"cannot decode {fmt} image: {vips_reason(exc)}") from None
    return Image(vips=image, source_format=fmt)


_SAVE_OPTIONS: dict[str, Callable[[EncodeOptions], dict[str, Any]]] = {
    "jpeg": lambda o: {"Q": o.quality or 85, "interlace": False},
    "png": lambda o: {"compression": 6},
    "webp": lambda o: {"Q": o.quality or 80, "lossless": o.lossless, "effort": 4},
    "avif": lambda o: {
        "Q": o.quality or 50, "lossless": o.lossless, "compression": "av1", "effort": 2
    },
    "gif": lambda o: {},
    "tiff": lambda o: {"compression": "deflate"},
}


def _prepare_for(image: Image, fmt: str) -> pyvips.Image:
    out = image.vips
    if not image.encode.keep_metadata and out.get_typeof("icc-profile-data"):
        try:  # the colours stay right once the profile is stripped
            out = out.icc_transform("srgb")
        except pyvips.Error:
            log.debug("icc transform failed; keeping pixel values as they are", exc_info=True)
    if out.hasalpha() and fmt == "jpeg":
        out = out.flatten(background=[255] * (out.bands - 1))
    sample = out.get("format")
    if sample == "ushort" and fmt not in SIXTEEN_BIT_FORMATS:
        grey = out.bands - int(out.hasalpha()) == 1
        out = (out / 257).cast("uchar").copy(interpretation="b-w" if grey else "srgb")
    elif sample not in ("uchar", "ushort"):
        out = out.cast("uchar")
    return out


SIXTEEN_BIT_FORMATS = frozenset({"png", "tiff"})
_SAVERS = {"jpeg": "jpegsave", "png": "pngsave", "webp": "webpsave", "avif": "heifsave",
           "gif": "gifsave", "tiff": "tiffsave"}


def encode_to_file(
    image: Image, path: Path, monitor: Callable[[pyvips.Image], None] | None = None
) -> ImageInfo:
    """Write the image in its output format; return the written image's info.

    This is where libvips computes the whole lazy pipeline; `monitor` may attach progress
    callbacks to the final image and kill the computation (cancel, time limit).
    """
    fmt = image.output_format()
    out = _prepare_for(image, fmt)
    if monitor is not None:
        monitor(out)
    options = _SAVE_OPTIONS[fmt](image.encode)
    options["keep"] = "all" if image.encode.keep_metadata else "none"
    try:  # called by name: `out.jpegsave` would first look for an image property so named
        pyvips.Operation.call(_SAVERS[fmt], out, str(path), **options)
    except pyvips.Error as exc:
        unopened = _open_failure(exc)
        if unopened is not None:  # before a pixel was read: the disk's trouble, never the image's
            raise unopened from None
        reason = vips_reason(exc)
        if _SAVER_PREFIX.match(reason):
            raise DecodeError(f"cannot process the image: {reason}") from None
        # Pixels are read while the output is written: a loader's error is the input's fault.
        raise DecodeError(f"the image is truncated or corrupt: {reason}") from None
    return ImageInfo(fmt, int(out.get("width")), int(out.get("height")), 1, path.stat().st_size)


def _open_failure(exc: pyvips.Error) -> OSError | None:
    """libvips' "unable to open for write" (the output file could not be created) as the
    OSError it reports below it ("system error: Read-only file system"), so that the worker
    classifies it by its errno like any other file operation. Telling it from a bad input by
    probing the folder afterwards fails when the disk is back by then."""
    detail = exc.detail or ""
    first = next((ln.strip() for ln in detail.splitlines() if ln.strip()), "")
    if not first.endswith("unable to open for write"):
        return None
    system = _SYSTEM_ERROR.search(detail)
    text = system.group(1).strip() if system else "unable to open for write"
    return OSError(_ERRNO_OF.get(text, errno.EIO), text)


_SYSTEM_ERROR = re.compile(r"^system error: (.+)$", re.MULTILINE)
_ERRNO_OF = {os.strerror(number): number for number in errno.errorcode}

#: libvips errors that come from writing the output rather than reading the input.
_SAVER_PREFIX = re.compile(r"^(vips2\w+|vips_\w*save\w*|\w+save\w*|unable to write)")
