"""The default install has no torch: the shipped Real-ESRGAN, Real-CUGAN and DAT light models
still upscale (DAT light from its shipped graph and the .pth read without torch), and the
upscale operation offers them all. Run in a child process where importing torch fails."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

CHILD = textwrap.dedent("""
    import importlib.abc, sys

    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "spandrel", "safetensors", "torchvision"):
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, NoTorch())
    import importlib.util
    importlib.util.find_spec = (lambda find: lambda name, *a: None if name.split(".")[0] in
        ("torch", "spandrel", "safetensors") else find(name, *a))(importlib.util.find_spec)

    import numpy as np
    from imgq.ai.upscale import upscale_array
    from imgq.ops.upscale import Upscale

    rng = np.random.default_rng(0)
    image = (rng.random((24, 28, 3)) * 255).astype(np.uint8)
    for name, scale in (("realesrgan-x4plus", 4), ("realcugan-x2", 2), ("realcugan-x3", 3),
                        ("dat-light-x2", 2)):
        out = upscale_array(image, name, device="auto")
        assert out.shape == (24 * scale, 28 * scale, 3), (name, out.shape)
        print(name, out.shape, round(float(out.mean()), 1))
    op = Upscale()
    assert op.unavailable_reason is None, op.unavailable_reason
    choices = op.choices()
    assert {"realesrgan-x4plus", "realcugan-x2", "dat-light-x2", "dat-light-x4"} <= set(choices)
    assert "torch" not in sys.modules
    print("ok")
""")


@pytest.mark.timeout(900)
def test_shipped_models_upscale_without_torch() -> None:
    done = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[-1] == "ok"
    means = [float(line.split()[-1]) for line in lines[:-1]]
    assert len(means) == 4 and all(60 < m < 200 for m in means)  # real pictures, not blank
