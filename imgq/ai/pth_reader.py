"""The tensors of a PyTorch ``.pth`` state dict as numpy arrays, without torch.

A ``.pth`` written by ``torch.save`` (format version 3, the zip one) is a zip archive holding
``<name>/data.pkl`` (a pickle of plain containers whose tensors point at storages through
persistent ids) and ``<name>/data/<key>`` (each storage's raw little-endian bytes). This reader
unpickles ``data.pkl`` with an allow-list of what a state dict contains (dicts, OrderedDict,
``torch._utils._rebuild_tensor_v2`` and ``_rebuild_parameter``, the storage types) and refuses
every other global, like ``torch.load(weights_only=True)``; it runs no code from the file.

No maintained package does this without torch (safetensors reads its own format only, spandrel
and torch.load need torch), and it is one small allow-listed unpickler, so it lives here.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from imgq.ai.errors import ModelLoadError

# torch storage type → numpy dtype of its bytes (little-endian, as torch.save writes them).
_STORAGE_DTYPES: dict[str, np.dtype[Any]] = {
    "FloatStorage": np.dtype("<f4"), "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"), "BFloat16Storage": np.dtype("<u2"),
    "LongStorage": np.dtype("<i8"), "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"), "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"), "BoolStorage": np.dtype("?"),
}


class _StorageType:
    def __init__(self, name: str) -> None:
        self.name, self.dtype = name, _STORAGE_DTYPES[name]


class _Storage:
    def __init__(self, values: np.ndarray, bfloat16: bool) -> None:
        self.values, self.bfloat16 = values, bfloat16


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple[int, ...],
                    stride: tuple[int, ...], *_: Any) -> np.ndarray:
    values = storage.values
    count = int(np.prod(size)) if size else 1
    if count and offset + sum((s - 1) * st for s, st in zip(size, stride, strict=True)) >= len(values):
        raise ModelLoadError("a tensor reaches past the end of its storage")
    view = np.lib.stride_tricks.as_strided(
        values[offset:], shape=size, strides=[s * values.itemsize for s in stride])
    array = np.array(view, copy=True)
    if storage.bfloat16:  # bfloat16 is the top half of a float32
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def _rebuild_parameter(data: np.ndarray, *_: Any) -> np.ndarray:
    return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, archive: zipfile.ZipFile, prefix: str, data: bytes) -> None:
        import io

        super().__init__(io.BytesIO(data))
        self.archive, self.prefix = archive, prefix
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        found = _ALLOWED.get((module, name))
        if found is None:
            raise ModelLoadError(f"the weight file refers to {module}.{name}, which a state "
                                 "dict does not hold: refused")
        return found

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise ModelLoadError(f"unknown storage reference in the weight file: {pid!r:.80}")
        kind, key = pid[1], str(pid[2])
        if key not in self.storages:
            try:
                raw = self.archive.read(f"{self.prefix}data/{key}")
            except KeyError as exc:
                raise ModelLoadError(f"the weight file lacks storage {key}") from exc
            values = np.frombuffer(raw, dtype=kind.dtype)
            self.storages[key] = _Storage(values, kind.name == "BFloat16Storage")
        return self.storages[key]


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a zip-format ``.pth`` state dict, keyed as in the file; a checkpoint that
    wraps it in ``params_ema``/``params``/``state_dict`` is unwrapped, ``module.`` prefixes go."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise ModelLoadError(f"{path.name} is not a zip-format PyTorch weight file")
            prefix = pickles[0][: -len("data.pkl")]
            loaded = _StateDictUnpickler(archive, prefix, archive.read(pickles[0])).load()
    except (OSError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError) as exc:
        raise ModelLoadError(f"cannot read {path.name}: {exc}") from exc
    for wrapper in ("params_ema", "params", "state_dict"):
        if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
            loaded = loaded[wrapper]
            break
    if not isinstance(loaded, dict):
        raise ModelLoadError(f"{path.name} does not hold a state dict")
    state = {}
    for key, value in loaded.items():
        if isinstance(value, np.ndarray):
            state[key.removeprefix("module.")] = value
    return state
