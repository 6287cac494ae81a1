"""Estimates before the work starts: in the 201 answer, GET /v1/estimate and GET /v1/models,
from costs this machine measured (calibration and real runs through the worker's pipeline)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.ai._support import require_torch

require_torch("spandrel")

with warnings.catch_warnings():  # starlette prefers httpx2 and warns when it finds httpx
    warnings.filterwarnings("ignore", message=r".*httpx", category=UserWarning)
    from fastapi.testclient import TestClient

from imgq.ai.costs import MEASURED, CostBook, book_at, cost_key, covered_pixels  # noqa: E402
from imgq.ai.descriptors import SHIPPED, ModelDescriptor  # noqa: E402
from imgq.ai.warmup import calibrate_missing  # noqa: E402
from imgq.api.app import create_app  # noqa: E402
from imgq.compose import open_runtime  # noqa: E402
from imgq.domain.pipeline import parse_pipeline  # noqa: E402
from imgq.ops import build_registry  # noqa: E402
from tests.integration.test_ai_ops import FAST, picture, run, settings, write  # noqa: E402

X4PLUS = SHIPPED.get("realesrgan-x4plus")
PER_PIXEL = 1.5e-4  # seconds, the figure this test's "machine" measured


def key(descriptor: ModelDescriptor, tmp_path: Path) -> str:
    """The cost book's key under which a worker with these settings records the model."""
    return cost_key(descriptor, "cpu", settings(tmp_path).ai_threads)


@pytest.fixture
def costs_file(tmp_path: Path) -> Path:
    path = tmp_path / "model-costs.json"
    CostBook(path).record(key(X4PLUS, tmp_path), 20_000, 20_000 * PER_PIXEL)
    return path


@pytest.fixture
def client(tmp_path: Path, costs_file: Path) -> Iterator[TestClient]:
    runtime = open_runtime(settings(tmp_path, ai_costs_file=costs_file), run_migrations=True)
    app = create_app(runtime, sweeper=False)
    with TestClient(app, base_url="http://127.0.0.1") as test_client:  # a loopback Host
        yield test_client


def photo() -> bytes:
    return bytes(picture(480, 640, "rgb").jpegsave_buffer())


def test_an_ordinary_photo_is_accepted_for_upscaling_with_its_estimate(
        client: TestClient) -> None:
    response = client.post("/v1/jobs", files=[("files", ("photo480.jpg", photo())),
                                              ("files", ("small.png", picture(60, 80, "rgb")
                                                         .pngsave_buffer()))],
                           data={"pipeline": "upscale:scale=4"})
    assert response.status_code == 201, response.text
    big, small = response.json()["items"]
    assert big["estimated_seconds"] == round(PER_PIXEL * covered_pixels(640, 480, X4PLUS), 1)
    assert small["estimated_seconds"] == round(PER_PIXEL * 80 * 60, 1)
    assert big["estimated_seconds"] > 640 * 480 * PER_PIXEL  # tile overlaps cost too
    # the same figure when the job is read back, and none for a pipeline without AI
    again = client.get(response.headers["Location"]).json()["items"][0]
    assert again["estimated_seconds"] == big["estimated_seconds"]
    classic = client.post("/v1/jobs", files={"files": ("photo480.jpg", photo())},
                          data={"pipeline": "resize:width=320"})
    assert classic.json()["items"][0]["estimated_seconds"] is None


def test_two_upscales_in_a_row_are_estimated_at_the_size_each_gets(client: TestClient) -> None:
    answer = client.get("/v1/estimate", params={"pipeline": "upscale:scale=2|upscale:scale=2",
                                                "sizes": "100x50"}).json()
    (one,) = answer["estimates"]
    expected = PER_PIXEL * (covered_pixels(100, 50, X4PLUS) + covered_pixels(200, 100, X4PLUS))
    assert one["estimated_seconds"] == round(expected, 1)
    assert one["basis"] == MEASURED


def test_the_estimate_route_answers_what_the_201_will_say(client: TestClient) -> None:
    answer = client.get("/v1/estimate", params={"pipeline": "upscale",
                                                "sizes": "640x480, 4000×3000"})
    assert answer.status_code == 200, answer.text
    small, large = answer.json()["estimates"]
    assert (small["width"], small["height"]) == (640, 480)
    assert small["estimated_seconds"] == round(PER_PIXEL * covered_pixels(640, 480, X4PLUS), 1)
    assert large["estimated_seconds"] > 30 * small["estimated_seconds"]
    bad = client.get("/v1/estimate", params={"pipeline": "upscale", "sizes": "640 by 480"})
    assert bad.status_code == 400 and "640 by 480" in bad.json()["error"]["message"]
    huge = client.get("/v1/estimate", params={"pipeline": "upscale", "sizes": "20000x20000"})
    assert huge.status_code == 400 and "IMGQ_MAX_PIXELS" in huge.json()["error"]["message"]


def test_models_carry_their_measured_cost_per_megapixel(client: TestClient) -> None:
    shipped = {m["name"]: m for m in client.get("/v1/models").json()["shipped"]}
    cost = shipped["realesrgan-x4plus"]["cost"]
    assert cost["basis"] == MEASURED and cost["device"] == "cpu"
    expected = PER_PIXEL * covered_pixels(2000, 1000, X4PLUS) / 2
    assert cost["seconds_per_megapixel"] == pytest.approx(expected, abs=0.01)
    assert shipped["dat-light-x4"]["cost"]["basis"] != MEASURED  # never run here
    assert shipped["u2netp"]["cost"] is None


def test_an_operators_cap_is_named_as_theirs_with_the_size_and_estimate(
        tmp_path: Path, costs_file: Path) -> None:
    runtime = open_runtime(settings(tmp_path, ai_costs_file=costs_file, ai_max_pixels=100_000),
                           run_migrations=True)
    app = create_app(runtime, sweeper=False)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        response = client.post("/v1/jobs", files={"files": ("photo480.jpg", photo())},
                               data={"pipeline": "upscale"})
    assert response.status_code == 413
    message = response.json()["error"]["message"]
    assert "photo480.jpg: 640×480 is 307,200 pixels" in message
    assert "100,000 pixels this server's operator set" in message
    assert "IMGQ_AI_MAX_PIXELS" in message
    seconds = round(PER_PIXEL * covered_pixels(640, 480, X4PLUS))
    assert f"~{seconds} s here" in message


def test_a_run_through_the_pipeline_and_a_calibration_record_this_machines_cost(
        tmp_path: Path) -> None:
    costs_file = tmp_path / "model-costs.json"
    registry = build_registry(settings(tmp_path, ai_costs_file=costs_file))
    source = write(tmp_path, "in.png", picture(48, 64, "rgb"))
    out = run(registry, f"upscale:model={FAST}", source, tmp_path / "out.png")
    assert (out.width, out.height) == (256, 192)
    fit = CostBook(costs_file).fit(key(SHIPPED.get(FAST), tmp_path))
    assert fit is not None and fit.runs == 1 and fit.sx == covered_pixels(64, 48, SHIPPED.get(FAST))
    assert calibrate_missing([SHIPPED.get(FAST)], book_at(costs_file)) == []  # known already
    other = SHIPPED.get("realesrgan-x4plus-anime")
    assert calibrate_missing([other], book_at(costs_file)) == [other.name]
    measured = CostBook(costs_file).fit(key(other, tmp_path))
    assert measured is not None and measured.line() is not None
    assert measured.line()[1] > 0  # type: ignore[index]


def test_an_item_may_take_twice_the_longer_of_its_estimates(tmp_path: Path,
                                                             costs_file: Path) -> None:
    from types import SimpleNamespace

    from imgq.worker.execute import time_limit

    runtime = open_runtime(settings(tmp_path, ai_costs_file=costs_file,
                                    item_time_limit_seconds=600), run_migrations=True)
    steps = runtime.registry.bind(parse_pipeline("upscale:scale=4"))
    now = PER_PIXEL * covered_pixels(640, 480, X4PLUS)  # what this worker measured since
    meta = {"width": 640, "height": 480, "estimated_seconds": 1.0}  # said at submission
    claim = SimpleNamespace(item=SimpleNamespace(input_meta=meta))
    assert time_limit(runtime, claim, steps) == pytest.approx(600 + 2 * now)  # type: ignore[arg-type]
    meta["estimated_seconds"] = 10 * now
    assert time_limit(runtime, claim, steps) == pytest.approx(600 + 20 * now)  # type: ignore[arg-type]
    classic = runtime.registry.bind(parse_pipeline("grayscale"))
    assert time_limit(runtime, SimpleNamespace(item=SimpleNamespace(input_meta={})),  # type: ignore[arg-type]
                      classic) == 600
    runtime.close()
