"""Lanes in `imgq serve`: AI items and classic items never wait for each other, and model
threads × processes stay within the cores."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import pytest
import pyvips

from imgq.config import load_settings
from imgq.dispatch.pool import WorkerPool, init_worker
from tests.fixtures.encoded import jpeg_bytes
from tests.fixtures.server import Server
from tests.integration.ai._support import require_torch

require_torch("spandrel")


def test_a_classic_item_finishes_while_an_upscale_runs(serve: Callable[..., Server]) -> None:
    server = serve(workers=1, ai_workers=1)
    upscale = server.submit_ok([("photo480.jpg", jpeg_bytes(640, 480))],
                               "upscale:model=realesrgan-x4plus,scale=4")
    server.wait_job(upscale["id"], lambda j: j["items"][0]["status"] == "running", timeout=120,
                    what="the upscale running")

    classic = server.submit_ok([("small.jpg", jpeg_bytes(120, 80, seed=3))], "grayscale")
    done = server.wait_finished(classic["id"], timeout=60)
    assert server.job(upscale["id"])["items"][0]["status"] == "running", \
        "the upscale should still be running: the classic item did not wait for it"

    item = done["items"][0]
    assert item["status"] == "succeeded", item
    result = server.client.get(item["result_url"])
    assert result.status_code == 200
    image = pyvips.Image.new_from_buffer(result.content, "")
    assert (image.width, image.height) == (120, 80)
    grey = image if image.bands == 1 else image[0]
    assert image.bands == 1 or max(abs(image[0] - image[b]).max() for b in (1, 2)) <= 1
    assert grey.deviate() > 5  # the picture, not a flat grey

    cancelled = server.client.post(f"/v1/jobs/{upscale['id']}/cancel")
    assert cancelled.status_code == 200
    server.wait_finished(upscale["id"], timeout=120)


@pytest.mark.parametrize("processes", [1, 2])
def test_model_threads_times_processes_stay_within_the_cores(processes: int) -> None:
    import torch

    cores = multiprocessing.cpu_count()
    settings = load_settings()
    lane = WorkerPool(settings, processes, models=True)
    try:
        assert lane.threads == max(1, cores // processes)
    finally:
        lane.stop(wait=10)
    # what a process of that pool sets up (its initializer), seen from inside it
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                             initializer=init_worker,
                             initargs=(settings, lane.threads, True)) as pool:
        threads = {pool.submit(torch.get_num_threads).result(timeout=120)
                   for _ in range(processes)}
    assert threads == {lane.threads}
    assert lane.threads * processes <= max(cores, processes)
