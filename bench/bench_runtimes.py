"""Which CPU runtime runs each shipped model fastest while staying exact: PyTorch (channels_last,
as imgq ran until now), ONNX Runtime, OpenVINO and ncnn, on one fixed input per model.

Prints, per model and runtime, the best-of-N seconds for one forward pass, the speed against
PyTorch measured in the same run, and the PSNR of the output against PyTorch's (outputs clipped
to 0..1). The fastest runtime at ≥ 50 dB is marked as the pick. U²-Net-p ships only as ONNX, so
its reference is ONNX Runtime. Runtimes are timed in alternation, round after round, so a busy
machine slows them alike.

    python bench/bench_runtimes.py                 # all shipped models, 2 threads each
    python bench/bench_runtimes.py --models realesrgan-x4plus --side 96 --repeat 2

Needs the dev tools as well as the runtimes: torch (the reference), onnx (torch's ONNX export),
onnxruntime, openvino and ncnn. ONNX files are exported from the PyTorch models here, for the
comparison only. DAT light also runs as imgq runs it without torch: its shipped weightless
graph (scripts/export_dat_graphs.py) with the weights bound from the .pth, at the graph's one
tile shape (192², which is then the input side of the DAT rows).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine_note, photos, table  # noqa: E402
from imgq.ai.descriptors import SHIPPED, ModelDescriptor  # noqa: E402

EXACT_DB = 50.0
DEFAULT_MODELS = ("realesrgan-x4plus", "realesrgan-x4plus-anime", "realesr-animevideov3",
                  "dat-light-x2", "dat-light-x3", "dat-light-x4", "realcugan-x2",
                  "realcugan-x3", "realcugan-x4", "realcugan-pro-x2", "u2netp")
Forward = Callable[[np.ndarray], np.ndarray]  # (1, 3, h, w) float32 0..1 → (1, C, H, W)


@dataclass
class Result:
    runtime: str
    seconds: float = float("inf")
    output: np.ndarray | None = None
    note: str = ""


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def fixed_input(side: int) -> np.ndarray:
    """A side×side crop of the benchmarks' first photo-like image, (1, 3, h, w) in 0..1."""
    import pyvips

    image = pyvips.Image.new_from_file(str(photos(1)[0]))
    crop = image.crop((image.width - side) // 2, (image.height - side) // 2, side, side)
    return (np.asarray(crop.numpy(), dtype=np.float32) / 255.0).transpose(2, 0, 1)[None].copy()


# -- runtimes ------------------------------------------------------------------------------

def torch_forward(descriptor: ModelDescriptor, threads: int) -> Forward:
    import torch

    from imgq.ai.catalog import get_model

    torch.set_num_threads(threads)
    loaded = get_model(descriptor.name, "cpu", "fp32")

    def run(x: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(x)
        if loaded.channels_last:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return np.asarray(loaded.module(tensor).float().numpy())
    return run


def onnx_bytes(descriptor: ModelDescriptor, example: np.ndarray) -> bytes:
    """The ONNX graph of the model: the shipped file, or torch's export of the PyTorch model."""
    if descriptor.source.format == "onnx":
        return descriptor.source.location().read_bytes()
    import torch

    from imgq.ai.catalog import get_model

    module = get_model(descriptor.name, "cpu", "fp32").module.to(
        memory_format=torch.contiguous_format)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, torch.from_numpy(example), buffer, dynamo=False,
                          input_names=["input"], output_names=["output"], opset_version=17)
    return buffer.getvalue()


def onnxruntime_forward(graph: bytes, threads: int) -> Forward:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(graph, sess_options=options,
                                   providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: np.asarray(session.run(None, {name: x})[0])


def openvino_forward(graph: bytes, threads: int, precision: str) -> Forward:
    import openvino as ov

    core = ov.Core()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        path.write_bytes(graph)
        model = core.read_model(str(path))
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_PRECISION_HINT": precision}
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> np.ndarray:
        request.infer({0: x})
        return np.asarray(request.get_output_tensor(0).data).copy()
    return run


def ncnn_forward(descriptor: ModelDescriptor, threads: int) -> Forward:
    from imgq.ai.ncnn_runtime import NcnnNet

    net = NcnnNet(descriptor.source.location(), threads=threads)
    return lambda x: net.forward(x[0])[None]


def openvino_ncnn_forward(descriptor: ModelDescriptor, threads: int) -> Forward:
    """OpenVINO on the graph imgq builds from the ncnn files (no torch, no ONNX)."""
    from imgq.ai.openvino_runtime import OpenVinoNet

    net = OpenVinoNet(descriptor.source.location(), threads=threads)
    return lambda x: net.forward(x[0])[None]


def graph_forward(descriptor: ModelDescriptor, threads: int, runtime: str) -> Forward:
    """DAT light as imgq runs it without torch: the shipped weightless graph, bound to the .pth
    read without torch, on OpenVINO or onnxruntime (imgq.ai.graph_runtime)."""
    from imgq.ai.graph_runtime import OnnxRuntimeGraphNet, OpenVinoGraphNet

    kind = OpenVinoGraphNet if runtime == "openvino" else OnnxRuntimeGraphNet
    net = kind(descriptor.scale, descriptor.source.location(), threads)
    return lambda x: net.forward(x[0])[None]


def runtimes(descriptor: ModelDescriptor, example: np.ndarray,
             threads: int) -> list[tuple[str, Callable[[], Forward]]]:
    """(name, factory) for every runtime that can run this model; the first is the reference:
    PyTorch where imgq has a PyTorch form of the model, else the format's own runtime."""
    found: list[tuple[str, Callable[[], Forward]]] = []
    fmt = descriptor.source.format
    torch_form = fmt in ("pth", "safetensors") or descriptor.architecture in (
        "RRDBNet", "SRVGGNetCompact")
    if torch_form:
        found.append(("pytorch", lambda: torch_forward(descriptor, threads)))
    if fmt == "ncnn":
        found.append(("ncnn", lambda: ncnn_forward(descriptor, threads)))
        found.append(("openvino (from ncnn)", lambda: openvino_ncnn_forward(descriptor, threads)))
    graph: list[bytes] = []

    def exported() -> bytes:
        if not graph:
            graph.append(onnx_bytes(descriptor, example))
        return graph[0]
    if torch_form or fmt == "onnx":
        found.append(("onnxruntime", lambda: onnxruntime_forward(exported(), threads)))
    if fmt != "ncnn":
        found.append(("openvino (from onnx)", lambda: openvino_forward(exported(), threads, "f32")))
    if descriptor.graph_tile:
        found.append(("openvino (shipped graph)",
                      lambda: graph_forward(descriptor, threads, "openvino")))
        found.append(("onnxruntime (shipped graph)",
                      lambda: graph_forward(descriptor, threads, "onnxruntime")))
    return found


# -- the comparison ------------------------------------------------------------------------

def compare(descriptor: ModelDescriptor, side: int, threads: int, repeat: int) -> list[Result]:
    example = fixed_input(side)
    forwards: dict[str, Forward] = {}
    results: dict[str, Result] = {}
    for name, factory in runtimes(descriptor, example, threads):
        results[name] = Result(name)
        try:
            forwards[name] = factory()
            forwards[name](example)  # warm-up: first-call allocation and kernel choice
        except Exception as exc:  # noqa: BLE001 - a runtime that cannot run the model is reported
            results[name].note = f"cannot run it: {type(exc).__name__}: {str(exc)[:80]}"
            forwards.pop(name, None)
    for _ in range(repeat):
        for name, forward in forwards.items():
            started = time.perf_counter()
            output = forward(example)
            seconds = time.perf_counter() - started
            result = results[name]
            result.seconds, result.output = min(result.seconds, seconds), output
    return list(results.values())


def report(descriptor: ModelDescriptor, side: int, results: list[Result]) -> list[list[str]]:
    reference = results[0]
    rows = []
    exact = [r for r in results if r.output is not None and reference.output is not None
             and psnr(r.output, reference.output) >= EXACT_DB]
    pick = min(exact, key=lambda r: r.seconds) if exact else None
    for r in results:
        if r.output is None or reference.output is None:
            rows.append([descriptor.name, f"{side}²", r.runtime, "-", "-", "-", r.note])
            continue
        quality = psnr(r.output, reference.output)
        rows.append([descriptor.name, f"{side}²", r.runtime, f"{r.seconds:.3f}",
                     f"{reference.seconds / r.seconds:.2f}×",
                     "exact" if quality == float("inf") else f"{quality:.1f}",
                     "← pick" if r is pick else ("" if quality >= EXACT_DB else "not exact")])
    return rows


def side_for(descriptor: ModelDescriptor, side: int) -> int:
    if descriptor.purpose == "background":
        return 320  # U²-Net-p always runs on 320×320
    return descriptor.graph_tile or side  # DAT light's shipped graph takes one tile shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(DEFAULT_MODELS))
    parser.add_argument("--side", type=int, default=128, help="input side in pixels")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(machine_note())
    print(f"{args.threads} threads per runtime, best of {args.repeat}, PSNR against the first "
          "runtime of each model (PyTorch; ncnn for Real-CUGAN; ONNX Runtime for U²-Net-p)")
    rows: list[list[str]] = []
    for name in args.models:
        if name not in SHIPPED:
            print(f"skipped {name}: not a shipped model")
            continue
        descriptor = SHIPPED.get(name)
        side = side_for(descriptor, args.side)
        model_rows = report(descriptor, side, compare(descriptor, side, args.threads, args.repeat))
        print(table(model_rows, ["model", "input", "runtime", "s", "vs first", "PSNR dB", ""]))
        rows.extend(model_rows)
    print()
    print(table(rows, ["model", "input", "runtime", "s", "vs first", "PSNR dB", ""]))


if __name__ == "__main__":
    main()
