"""Reading ncnn model files: the layer graph of a ``.param`` and the weights of a ``.bin``.

A ``.param`` line is ``Type Name n_in n_out bottoms… tops… key=value…``; a negative key
-233NN holds an array for key NN, written ``count,v1,v2…``. In the ``.bin`` the weights follow
the layers' order: a weight matrix starts with a 4-byte tag (0x01306B47: fp16 values follow;
0: fp32), padded to 4 bytes; biases and PReLU slopes are plain fp32 without a tag.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from imgq.ai.errors import ModelLoadError

PARAM_MAGIC = 7767517
TAG_FP16 = 0x01306B47
TAG_FP32 = 0
ARRAY_KEY_BASE = -23300


@dataclass
class GraphLayer:
    kind: str
    name: str
    bottoms: list[str] = field(default_factory=list)
    tops: list[str] = field(default_factory=list)
    params: dict[int, str] = field(default_factory=dict)
    arrays: dict[int, list[float]] = field(default_factory=dict)

    def integer(self, key: int, default: int = 0) -> int:
        return int(float(self.params[key])) if key in self.params else default

    def number(self, key: int, default: float = 0.0) -> float:
        return float(self.params[key]) if key in self.params else default

    def array(self, key: int, default: list[float]) -> list[float]:
        return self.arrays.get(key, default)


def parse_graph(text: str) -> list[GraphLayer]:
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines or int(lines[0][0]) != PARAM_MAGIC:
        raise ModelLoadError("not an ncnn .param file (bad magic number)")
    layer_count = int(lines[1][0])
    layers = [_layer(parts) for parts in lines[2:2 + layer_count]]
    if len(layers) != layer_count:
        raise ModelLoadError(f"ncnn .param declares {layer_count} layers, has {len(layers)}")
    return layers


def _layer(parts: list[str]) -> GraphLayer:
    kind, name, n_in, n_out = parts[0], parts[1], int(parts[2]), int(parts[3])
    layer = GraphLayer(kind, name, parts[4:4 + n_in], parts[4 + n_in:4 + n_in + n_out])
    for pair in parts[4 + n_in + n_out:]:
        key_text, value = pair.split("=", 1)
        key = int(key_text)
        if key <= ARRAY_KEY_BASE:
            count, *values = value.split(",")
            layer.arrays[ARRAY_KEY_BASE - key] = [float(v) for v in values[:int(count)]]
        else:
            layer.params[key] = value
    return layer


class BinReader:
    """The weights of a ``.bin`` file, taken in order; every byte must be used."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def _take(self, size: int) -> bytes:
        if self.offset + size > len(self.data):
            raise ModelLoadError("ncnn .bin file is shorter than its .param describes")
        chunk = self.data[self.offset:self.offset + size]
        self.offset += size
        return chunk

    def raw_fp32(self, count: int) -> np.ndarray:
        return np.frombuffer(self._take(4 * count), dtype="<f4").copy()

    def tagged(self, count: int) -> np.ndarray:
        tag = int.from_bytes(self._take(4), "little")
        if tag == TAG_FP16:
            values = np.frombuffer(self._take(2 * count), dtype="<f2").astype(np.float32)
            self._take((-2 * count) % 4)  # padding to a 4-byte boundary
            return values
        if tag == TAG_FP32:
            return self.raw_fp32(count)
        raise ModelLoadError(f"unsupported ncnn weight storage tag {tag:#x}")

    def assert_consumed(self) -> None:
        if self.offset != len(self.data):
            raise ModelLoadError(
                f"ncnn .bin has {len(self.data) - self.offset} unread bytes: layout mismatch")
