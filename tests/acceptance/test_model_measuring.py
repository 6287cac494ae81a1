"""`imgq serve` measures model costs without making the first upscale wait for models nobody
asked for: the default model first, the others one at a time while the AI lane is idle; and
the threads those measurements and the runs use are the AI worker's share of the cores."""

from __future__ import annotations

import importlib.util
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest
import pyvips

from imgq.ai.costs import CostBook, cost_class, cost_key
from imgq.ai.cpu_nets import choose_runtime, usable_cores
from imgq.ai.descriptors import SHIPPED
from imgq.config import load_settings
from imgq.dispatch.pool import init_worker
from imgq.ops.upscale import DEFAULT_MODEL, shipped_choices
from tests.fixtures.encoded import jpeg_bytes
from tests.fixtures.server import Server

if importlib.util.find_spec("openvino") is None and importlib.util.find_spec("ncnn") is None:
    pytest.skip("neither OpenVINO nor ncnn is installed (the default install has OpenVINO)",
                allow_module_level=True)


def test_the_first_upscale_waits_only_for_its_own_models_measurement(
        serve: Callable[..., Server], tmp_path: Path) -> None:
    costs = tmp_path / "model-costs.json"
    server = serve(workers=1, ai_workers=1, ai_measure_on_start="true",
                   ai_costs_file=str(costs))
    job = server.submit_ok([("photo.jpg", jpeg_bytes(64, 48))], "upscale:scale=4")
    item = server.wait_finished(job["id"], timeout=180)["items"][0]
    assert item["status"] == "succeeded", item
    result = server.client.get(item["result_url"])
    image = pyvips.Image.new_from_buffer(result.content, "")
    assert (image.width, image.height) == (256, 192)
    started = datetime.fromisoformat(item["timings"]["started_at"]).timestamp()
    finished = datetime.fromisoformat(item["timings"]["finished_at"]).timestamp()

    threads = load_settings(ai_workers=1).ai_threads
    book = CostBook(costs)
    default = book.fit(cost_key(SHIPPED.get(DEFAULT_MODEL), "cpu", threads))
    assert default is not None and default.first_at <= started, \
        "the default model is measured before the first item runs"
    # the others follow while the lane is idle, each network once, after the item
    others = {cost_class(SHIPPED.get(n)) for n in shipped_choices()
              if choose_runtime(SHIPPED.get(n)) != "torch"} - {DEFAULT_MODEL}
    assert others, "the default install has more than one network"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not measured(book) & others:
        time.sleep(0.5)
    assert measured(book) & others, "no other model was measured while the lane was idle"
    for key in book.keys():
        fit = book.fit(key)
        if key.split("|")[0] in others and fit is not None:
            assert fit.first_at > finished, f"{key} was measured before the item ran"


def measured(book: CostBook) -> set[str]:
    return {key.split("|")[0] for key in book.keys()}


@pytest.mark.parametrize("processes", [1, 2])
def test_the_openvino_nets_of_an_ai_worker_get_its_share_of_the_cores(processes: int) -> None:
    # what a process of the AI lane sets up (its initializer), seen from inside it: the threads
    # its OpenVINO/ncnn nets are built with, and the threads its estimates are keyed by
    settings = load_settings(ai_workers=processes)
    threads = max(1, multiprocessing.cpu_count() // processes)
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                             initializer=init_worker,
                             initargs=(settings, threads, True)) as pool:
        seen = {pool.submit(usable_cores).result(timeout=120) for _ in range(processes)}
    assert seen == {threads} == {settings.ai_threads}
