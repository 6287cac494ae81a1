"""Helpers of the AI tests: the torch gate and synthetic images (no files, no Pillow needed)."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
NO_TORCH = ("torch is not installed: these AI tests need the torch extra "
            "(scripts/setup.sh --torch, or see docs/ai.md)")


def require_torch(*also: str) -> None:
    """Skip the calling test module on a laptop without torch (or `also`); fail it in CI."""
    missing = [name for name in ("torch", *also) if importlib.util.find_spec(name) is None]
    if not missing:
        return
    names = ", ".join(missing)
    reason = NO_TORCH if "torch" in missing else f"{names} not installed ({NO_TORCH})"
    if IN_CI:
        pytest.fail(f"{reason}; CI must run these tests", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A photo-like uint8 RGB image: smooth shading, soft-edged discs and light noise.

    Random noise alone is the worst case for a GAN upscaler and says nothing about seams.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([80 + 100 * yy / height, 120 + 60 * xx / width,
                      200 - 80 * (xx + yy) / (width + height)], axis=2)
    for _ in range(12):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        radius = rng.uniform(3, max(4, min(height, width) / 3))
        inside = np.clip(radius - np.hypot(yy - cy, xx - cx), 0, 1.5) / 1.5
        image = image * (1 - inside[..., None]) + rng.uniform(0, 255, 3) * inside[..., None]
    image += rng.normal(0, 2.5, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
