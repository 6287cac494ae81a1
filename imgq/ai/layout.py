"""How a caller's numpy image maps to a model's RGB input, and back. numpy only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imgq.errors import InvalidParameters

LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class ImageLayout:
    height: int
    width: int
    channels: int  # 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA
    squeeze: bool  # the input was (H, W)
    dtype: np.dtype
    maximum: float

    @classmethod
    def of(cls, arr: np.ndarray) -> ImageLayout:
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 2, 3, 4)):
            raise InvalidParameters(f"unsupported image shape {arr.shape}")
        if arr.dtype == np.uint8:
            maximum = 255.0
        elif arr.dtype == np.uint16:
            maximum = 65535.0
        elif np.issubdtype(arr.dtype, np.floating):
            maximum = 1.0
        else:
            raise InvalidParameters(f"unsupported pixel type {arr.dtype}")
        channels = 1 if arr.ndim == 2 else arr.shape[2]
        return cls(arr.shape[0], arr.shape[1], channels, arr.ndim == 2, arr.dtype, maximum)

    @property
    def colour(self) -> int:
        return 3 if self.channels >= 3 else 1

    @property
    def has_alpha(self) -> bool:
        return self.channels in (2, 4)

    @property
    def out_channels(self) -> int:
        return self.channels

    def hwc(self, arr: np.ndarray) -> np.ndarray:
        return arr[:, :, None] if arr.ndim == 2 else arr

    def quantise(self, hwc01: np.ndarray) -> np.ndarray:
        """(h, w, C) float in 0..1 → the caller's dtype (rounded, clipped)."""
        clipped = np.clip(hwc01, 0.0, 1.0)
        if self.dtype == np.uint8:
            out: np.ndarray = np.rint(clipped * 255.0).astype(np.uint8)
        elif self.dtype == np.uint16:
            out = np.rint(clipped * 65535.0).astype(np.uint16)
        else:
            out = clipped.astype(self.dtype)
        return out

    def finish(self, array: np.ndarray) -> np.ndarray:
        """(H, W, C) in the caller's dtype → the caller's layout."""
        return array[:, :, 0] if self.squeeze else np.ascontiguousarray(array)
