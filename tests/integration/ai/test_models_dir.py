"""The models folder: user models are listed and run; bad files are listed with their error."""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest

from ._support import require_torch, scene

require_torch()

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from imgq.ai._spandrel import import_spandrel  # noqa: E402
from imgq.ai.errors import ModelNotFound  # noqa: E402
from imgq.ai.descriptors import SHIPPED  # noqa: E402
from imgq.ai.catalog import get_model  # noqa: E402
from imgq.ai.loading import ModelCache  # noqa: E402
from imgq.ai.models_dir import scan_models_dir  # noqa: E402
from imgq.ai.upscale import upscale_array  # noqa: E402


def tiny_swinir() -> torch.nn.Module:
    import_spandrel()
    from spandrel.architectures.SwinIR import SwinIR

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.meshgrid")
        return SwinIR(upscale=2, in_chans=3, img_size=16, window_size=4, img_range=1.0,
                      depths=[1, 1], embed_dim=12, num_heads=[2, 2], mlp_ratio=2.0,
                      upsampler="pixelshuffledirect", resi_connection="1conv")


def tiny_esrgan() -> torch.nn.Module:
    import_spandrel()
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    return ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4)


class RunsCode:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch pwned-by-pickle",))


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    state = {k: v.contiguous() for k, v in tiny_swinir().state_dict().items()}
    save_file(state, tmp_path / "my-swinir.safetensors")
    save_file({k: v.contiguous() for k, v in tiny_esrgan().state_dict().items()},
              tmp_path / "tiny-esrgan.safetensors")
    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    (tmp_path / "evil.pth").write_bytes(pickle.dumps(RunsCode()))
    (tmp_path / "unknown.safetensors").write_bytes(b"")
    save_file({"weight": torch.zeros(3, 3)}, tmp_path / "unknown.safetensors")
    (tmp_path / "realesrgan-x4plus.pth").write_bytes(b"")
    (tmp_path / "readme.txt").write_text("not a model")
    return tmp_path


def test_user_models_are_listed_with_architecture_and_scale(models_dir: Path) -> None:
    entries = {e.name: e for e in scan_models_dir(models_dir)}
    assert entries["my-swinir"].ok and entries["tiny-esrgan"].ok
    assert (entries["my-swinir"].architecture, entries["my-swinir"].scale) == ("SwinIR", 2)
    assert (entries["tiny-esrgan"].architecture, entries["tiny-esrgan"].scale) == ("ESRGAN", 4)
    assert entries["my-swinir"].public()["available"] is True


def test_broken_unsupported_and_clashing_files_are_listed_with_their_error(
        models_dir: Path) -> None:
    entries = {e.name: e for e in scan_models_dir(models_dir)}
    assert not entries["broken"].ok and entries["broken"].error
    assert "not recognise" in (entries["unknown"].error or "")
    assert "taken by a shipped model" in (entries["realesrgan-x4plus"].error or "")
    assert "unsupported file type" in (entries["readme"].error or "")
    assert entries["broken"].public()["available"] is False


def test_a_pickle_that_runs_code_is_refused_and_never_runs(models_dir: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(models_dir)
    entry = next(e for e in scan_models_dir(models_dir) if e.name == "evil")
    assert "forbidden" in (entry.error or "")
    assert not (models_dir / "pwned-by-pickle").exists()


@pytest.mark.parametrize(("name", "scale"), [("my-swinir", 2), ("tiny-esrgan", 4)])
def test_a_user_model_runs_by_name(models_dir: Path, name: str, scale: int) -> None:
    image = scene(20, 22, seed=6)
    out = upscale_array(image, name, device="cpu", models_dir=models_dir, tile=16)
    assert out.shape == (20 * scale, 22 * scale, 3) and out.dtype == np.uint8


def test_an_unknown_or_broken_model_name_is_not_found(models_dir: Path) -> None:
    with pytest.raises(ModelNotFound):
        get_model("broken", "cpu", models_dir=models_dir)
    with pytest.raises(ModelNotFound):
        get_model("no-such-model", "cpu")


def test_models_are_loaded_once_and_the_cache_is_bounded() -> None:
    first = get_model("realesr-animevideov3", "cpu", "fp32")
    assert get_model("realesr-animevideov3", "cpu", "fp32") is first
    cache, cpu = ModelCache(size=2), torch.device("cpu")
    compact, anime = SHIPPED.get("realesr-animevideov3"), SHIPPED.get("realesrgan-x4plus-anime")
    kept = cache.get(compact, cpu, "fp32")
    assert cache.get(compact, cpu, "bf16").precision == "bf16"
    cache.get(anime, cpu, "fp32")
    assert cache.get(compact, cpu, "fp32") is not kept  # evicted as least recently used
    assert len(cache._models) == 2
