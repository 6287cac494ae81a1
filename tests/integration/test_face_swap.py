"""face_swap through the real code path: tiny ONNX models with the signatures of InsightFace's
det_10g.onnx, w600k_r50.onnx and inswapper_128.onnx (tests/fixtures/tiny_faces.py), built into
a models folder, run by the worker's pipeline runner, through /v1/jobs with the source face as
an attachment, and through the Backend AI API's face_swap task type; and what a user sees when
the models are not installed."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pyvips

from tests.integration.ai._support import IN_CI

pytestmark = pytest.mark.timeout(300)
for _package in ("onnxruntime", "onnx"):
    try:
        __import__(_package)
    except ImportError:
        _reason = f"{_package} is not installed: face swap needs it (pip install {_package})"
        if IN_CI:
            pytest.fail(_reason, pytrace=False)
        pytest.skip(_reason, allow_module_level=True)

with warnings.catch_warnings():  # starlette prefers httpx2 and warns when it finds httpx
    warnings.filterwarnings("ignore", message=r".*httpx", category=UserWarning)
    from fastapi.testclient import TestClient

from imgq.ai import faces  # noqa: E402
from imgq.ai.errors import NoFaceFound  # noqa: E402
from imgq.compose import build_app  # noqa: E402
from imgq.config import Settings, load_settings  # noqa: E402
from imgq.domain.pipeline import parse_pipeline  # noqa: E402
from imgq.errors import Cancelled  # noqa: E402
from imgq.ops import build_registry  # noqa: E402
from imgq.ops.base import Registry  # noqa: E402
from imgq.worker.run import run_pipeline  # noqa: E402
from tests.fixtures.tiny_faces import (  # noqa: E402
    build_face_models,
    build_recognizer,
    face_centre,
    face_picture,
)
from tests.fixtures.waiting import wait_for  # noqa: E402

BIG, SMALL = (8, 5, 255), (3, 10, 0)  # detector cells (column, row) and the face's size (red)
REACH = 100  # no pixel farther than this from a swapped face's centre may change


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    build_face_models(root)
    return root


def settings(data: Path, models: Path | None, **overrides: Any) -> Settings:
    return load_settings(data_dir=data, ai_models_dir=models, ai_device="cpu", **overrides)


def png(array: np.ndarray) -> bytes:
    return bytes(pyvips.Image.new_from_array(array, interpretation="srgb").pngsave_buffer())


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(pyvips.Image.new_from_buffer(data, "").numpy())


def changed_near(before: np.ndarray, after: np.ndarray, centre: tuple[float, float]) -> float:
    """Mean absolute change in the 17×17 square at a face's centre."""
    x, y = int(centre[0]), int(centre[1])
    window = (slice(y - 8, y + 9), slice(x - 8, x + 9))
    return float(np.abs(after[window].astype(float) - before[window].astype(float)).mean())


def away_from(shape: tuple[int, ...], *centres: tuple[float, float]) -> np.ndarray:
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    far = np.ones(shape[:2], dtype=bool)
    for x, y in centres:
        far &= np.hypot(xx - x, yy - y) > REACH
    return far


class Ctx:
    def __init__(self, attachments: dict[str, bytes], abort: bool = False) -> None:
        self.attachments = attachments
        self.stages: list[str] = []
        self.abort = abort

    def begin_step(self, index: int, name: str) -> None:
        pass

    def progress(self, fraction: float, stage: str | None = None) -> None:
        if stage:
            self.stages.append(stage)

    def should_abort(self) -> bool:
        return self.abort and any("swapping" in s for s in self.stages)

    def check(self) -> None:
        if self.should_abort():
            raise Cancelled()

    def attachment(self, name: str) -> Any:
        from imgq.ops.image import Image

        return Image(pyvips.Image.new_from_buffer(self.attachments[name], ""), "png")

    def monitor(self, image: pyvips.Image) -> None:
        pass


def swapped(registry: Registry, pipeline: str, target: np.ndarray, ctx: Ctx, out: Path
            ) -> tuple[np.ndarray, dict[str, Any]]:
    source = out.with_suffix(".in.png")
    source.write_bytes(png(target))
    steps = registry.bind(parse_pipeline(pipeline))
    info = run_pipeline(steps, source, "png", out, ctx)  # type: ignore[arg-type]
    return pixels(out.read_bytes()), info.details


# -- the operation, run as a worker runs it ----------------------------------------------------
def test_the_source_face_replaces_the_largest_face_and_nothing_else(
        models_dir: Path, tmp_path: Path) -> None:
    registry = build_registry(settings(tmp_path, models_dir))
    target = face_picture(640, 480, [BIG, SMALL], seed=1)
    me = png(face_picture(640, 480, [(12, 6, 255)], seed=2))
    other = png(face_picture(480, 640, [(4, 9, 255)], seed=3))
    ctx = Ctx({"me.png": me, "other.png": other})
    result, details = swapped(registry, "face_swap:source_face=me.png", target, ctx,
                              tmp_path / "a.png")
    big, small = face_centre(*BIG[:2]), face_centre(*SMALL[:2])
    assert result.shape == target.shape
    assert changed_near(target, result, big) > 20  # the face is the swapper's now
    far = away_from(target.shape, big)
    assert np.array_equal(result[far], target[far])  # the rest, to the last bit
    assert changed_near(target, result, small) == 0  # only the largest face by default
    assert details == {"faces_found": 2, "faces_swapped": 1, "source_face": "me.png"}
    assert "face_swap: swapping face 1 of 1" in ctx.stages

    # the identity comes from the source picture: another face gives another result
    theirs, _ = swapped(registry, "face_swap:source_face=other.png", target, ctx,
                        tmp_path / "b.png")
    assert changed_near(result, theirs, big) > 5
    assert np.array_equal(theirs[far], target[far])

    both, details = swapped(registry, "face_swap:source_face=me.png,faces=all", target, ctx,
                            tmp_path / "c.png")
    assert changed_near(target, both, big) > 20 and changed_near(target, both, small) > 20
    far = away_from(target.shape, big, small)
    assert np.array_equal(both[far], target[far]) and details["faces_swapped"] == 2

    half, _ = swapped(registry, "face_swap:source_face=me.png,blend_ratio=0.5", target, ctx,
                      tmp_path / "d.png")
    assert 0 < changed_near(target, half, big) < changed_near(target, result, big)


def test_a_face_in_a_larger_picture_is_found_where_it_is(models_dir: Path,
                                                         tmp_path: Path) -> None:
    """The detector sees a 1280×960 picture at half size: boxes and keypoints come back in the
    picture's own pixels."""
    registry = build_registry(settings(tmp_path, models_dir))
    target = face_picture(1280, 960, [BIG], seed=4, scale=2)
    ctx = Ctx({"me.png": png(face_picture(640, 480, [(12, 6, 255)], seed=2))})
    result, _ = swapped(registry, "face_swap:source_face=me.png", target, ctx, tmp_path / "a.png")
    centre = face_centre(*BIG[:2], scale=2)
    assert changed_near(target, result, centre) > 20
    yy, xx = np.mgrid[0:960, 0:1280]
    far = np.hypot(xx - centre[0], yy - centre[1]) > 2 * REACH
    assert np.array_equal(result[far], target[far])


def test_alpha_and_16_bit_samples_survive(models_dir: Path, tmp_path: Path) -> None:
    registry = build_registry(settings(tmp_path, models_dir))
    colour = face_picture(640, 480, [BIG], seed=5).astype(np.uint16) * 257
    alpha = np.full((480, 640, 1), 40000, dtype=np.uint16)
    target = np.dstack([colour, alpha])
    source = tmp_path / "in.png"
    pyvips.Image.new_from_array(target, interpretation="rgb16").pngsave(str(source))
    ctx = Ctx({"me.png": png(face_picture(640, 480, [(12, 6, 255)], seed=2))})
    steps = registry.bind(parse_pipeline("face_swap:source_face=me.png"))
    run_pipeline(steps, source, "png", tmp_path / "out.png", ctx)  # type: ignore[arg-type]
    out = pyvips.Image.new_from_file(str(tmp_path / "out.png"))
    assert (out.bands, out.format) == (4, "ushort")
    result = np.asarray(out.numpy())
    assert np.array_equal(result[:, :, 3], target[:, :, 3])
    assert changed_near(target[:, :, :3], result[:, :, :3], face_centre(*BIG[:2])) > 20 * 257


def test_no_face_in_either_picture_fails_saying_which(models_dir: Path, tmp_path: Path) -> None:
    registry = build_registry(settings(tmp_path, models_dir))
    with_face = face_picture(640, 480, [BIG], seed=1)
    without = face_picture(640, 480, [], seed=6)
    ctx = Ctx({"me.png": png(with_face), "empty.png": png(without)})
    with pytest.raises(NoFaceFound, match="no face found in the source picture 'empty.png'"):
        swapped(registry, "face_swap:source_face=empty.png", with_face, ctx, tmp_path / "a.png")
    with pytest.raises(NoFaceFound, match="no face found in the image"):
        swapped(registry, "face_swap:source_face=me.png", without, ctx, tmp_path / "b.png")


def test_cancel_stops_between_faces(models_dir: Path, tmp_path: Path) -> None:
    registry = build_registry(settings(tmp_path, models_dir))
    target = face_picture(640, 480, [BIG, SMALL], seed=1)
    ctx = Ctx({"me.png": png(face_picture(640, 480, [(12, 6, 255)], seed=2))}, abort=True)
    with pytest.raises(Cancelled):
        swapped(registry, "face_swap:source_face=me.png,faces=all", target, ctx,
                tmp_path / "a.png")
    assert [s for s in ctx.stages if "swapping" in s] == ["face_swap: swapping face 1 of 2"]


# -- the geometry --------------------------------------------------------------------------------
def test_the_similarity_transform_is_recovered_and_the_crop_lands_on_the_template() -> None:
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = (faces.ARCFACE_TEMPLATE - shift) @ np.linalg.inv(rotation).T
    matrix = faces.similarity(points, faces.ARCFACE_TEMPLATE)
    assert np.allclose(matrix[:, :2], rotation) and np.allclose(points @ matrix[:, :2].T
                                                                + matrix[:, 2],
                                                                faces.ARCFACE_TEMPLATE)
    # five coloured dots where the keypoints are: the aligned crop has them at the template
    picture = np.zeros((300, 300, 3), dtype=np.uint8)
    spots = np.array([[120.0, 130.0], [170.0, 128.0], [146.0, 160.0], [126.0, 190.0],
                      [166.0, 188.0]])
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    for (x, y), colour in zip(spots, colours, strict=True):
        picture[int(y) - 3:int(y) + 4, int(x) - 3:int(x) + 4] = colour
    crop, _ = faces.align(picture, spots, 112)
    for (x, y), colour in zip(faces.template(112), colours, strict=True):
        assert np.allclose(crop[int(round(y)), int(round(x))], colour, atol=60)
    assert np.allclose(faces.template(128) - faces.template(112), [8.0, 0.0])


def test_the_recognizer_gets_its_input_scaled_as_insightface_decides(models_dir: Path,
                                                                     tmp_path: Path) -> None:
    """w600k_r50 takes (x - 127.5) / 127.5; an ArcFace converted from MXNet scales inside its
    graph and takes 0..255: both give the same embedding of the same face here."""
    build_recognizer(tmp_path / "mxnet.onnx", normalises=True)
    plain = faces.Recognizer(models_dir / "face_swap" / "w600k_r50.onnx", False)
    inside = faces.Recognizer(tmp_path / "mxnet.onnx", False)
    assert (plain.mean, plain.std) == (127.5, 127.5) and (inside.mean, inside.std) == (0.0, 1.0)
    picture = face_picture(640, 480, [BIG], seed=1)
    (face,) = faces.Detector(models_dir / "face_swap" / "det_10g.onnx", False).detect(picture,
                                                                                      0.5)
    assert np.allclose(plain.embedding(picture, face), inside.embedding(picture, face),
                       atol=1e-5)


# -- through the API ---------------------------------------------------------------------------
@pytest.fixture
def client(models_dir: Path, tmp_path: Path) -> Iterator[TestClient]:
    app, _ = build_app(settings(tmp_path / "data", models_dir, workers=1))
    with TestClient(app, base_url="http://127.0.0.1") as test_client:  # a loopback Host
        yield test_client


def finished(client: TestClient, url: str, done: Any) -> dict[str, Any]:
    return wait_for(lambda: client.get(url).json(), done, 240, f"{url} finished", poll=0.3)


def test_face_swap_through_v1_jobs_with_the_source_face_as_an_attachment(
        client: TestClient) -> None:
    ops = {op["name"]: op for op in client.get("/v1/operations").json()}
    assert ops["face_swap"]["available"] and ops["face_swap"]["resource"] == "gpu"
    assert ops["face_swap"]["attachments"] == ["source_face"]
    (listed,) = client.get("/v1/models").json()["operator"]
    assert listed["available"] and all(f["installed"] for f in listed["files"])

    target = face_picture(640, 480, [BIG], seed=1)
    created = client.post(
        "/v1/jobs", data={"pipeline": "face_swap:source_face=me.png"},
        files=[("files", ("group.png", png(target), "image/png")),
               ("files", ("wall.png", png(face_picture(640, 480, [], seed=6)), "image/png")),
               ("attachments", ("me.png", png(face_picture(640, 480, [(12, 6, 255)], seed=2)),
                                "image/png"))])
    assert created.status_code == 201, created.text
    assert created.json()["resource"] == "gpu"
    job = finished(client, created.headers["Location"],
                   lambda body: body["status"] not in ("queued", "running"))
    assert job["status"] == "partial", job
    done, failed = job["items"]
    assert done["status"] == "succeeded" and done["result_name"] == "group-swapped.png"
    result = pixels(client.get(done["result_url"]).content)
    centre = face_centre(*BIG[:2])
    assert changed_near(target, result, centre) > 20
    far = away_from(target.shape, centre)
    assert np.array_equal(result[far], target[far])
    assert failed["status"] == "failed" and failed["error"]["code"] == "no_face"
    assert "no face found in the image" in failed["error"]["message"]

    no_attachment = client.post("/v1/jobs", data={"pipeline": "face_swap:source_face=me.png"},
                                files={"files": ("group.png", png(target), "image/png")})
    assert no_attachment.status_code == 422
    assert "no attachment named 'me.png'" in no_attachment.json()["error"]["message"]


def test_the_backend_ai_face_swap_task_gets_the_swapped_image(client: TestClient) -> None:
    target = face_picture(640, 480, [BIG], seed=1)
    form = {"prompt": "put my face in", "task_type": "face_swap",
            "parameters": json.dumps({"blend_ratio": 0.8})}
    me = png(face_picture(640, 480, [(12, 6, 255)], seed=2))
    task = client.post("/api/v1/tasks/create/", data=form,
                       files={"image": ("group.png", png(target), "image/png"),
                              "source_image": ("me.png", me, "image/png")})
    assert task.status_code == 201, task.text
    task_id = task.json()["task_id"]
    status = finished(client, f"/api/v1/tasks/{task_id}/status/",
                      lambda body: body["status"] in ("SUCCESS", "FAILURE"))
    assert status["status"] == "SUCCESS", status
    body = client.get(f"/api/v1/tasks/{task_id}/result/").json()
    assert body["result"]["metadata"]["faces_swapped"] == 1
    result = pixels(client.get(body["result"]["image_url"]).content)
    centre = face_centre(*BIG[:2])
    assert changed_near(target, result, centre) > 15
    far = away_from(target.shape, centre)
    assert np.array_equal(result[far][:, :3], target[far])

    no_source = client.post("/api/v1/tasks/create/", data=form,
                            files={"image": ("group.png", png(target), "image/png")})
    assert no_source.status_code == 400
    assert "source_image" in no_source.json()["details"]


# -- without the models ------------------------------------------------------------------------
def test_without_the_models_every_door_says_what_to_install_and_where(tmp_path: Path) -> None:
    empty = tmp_path / "models"
    registry = build_registry(settings(tmp_path, empty))
    reason = registry.get("face_swap").unavailable_reason or ""
    for name in ("det_10g.onnx", "w600k_r50.onnx", "inswapper_128.onnx", "buffalo_l",
                 str(empty / "face_swap"), "non-commercial", "docs/ai.md"):
        assert name in reason

    app, _ = build_app(settings(tmp_path / "data", empty, workers=1))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        ops = {op["name"]: op for op in client.get("/v1/operations").json()}
        assert not ops["face_swap"]["available"]
        assert ops["face_swap"]["unavailable_reason"] == reason
        (listed,) = client.get("/v1/models").json()["operator"]
        assert not listed["available"] and not any(f["installed"] for f in listed["files"])
        assert "inswapper_128.onnx" in listed["how_to_install"]

        photo = png(face_picture(64, 64, []))
        refused = client.post("/v1/jobs", data={"pipeline": "face_swap:source_face=me.png"},
                              files=[("files", ("a.png", photo, "image/png")),
                                     ("attachments", ("me.png", photo, "image/png"))])
        assert refused.status_code == 422
        assert refused.json()["error"]["message"] == f"step 0 (face_swap): unavailable: {reason}"

        task = client.post("/api/v1/tasks/create/",
                           data={"prompt": "swap", "task_type": "face_swap"},
                           files={"image": ("a.png", photo, "image/png"),
                                  "source_image": ("me.png", photo, "image/png")})
        assert task.status_code == 400 and task.json()["error"] == "Model not installed"
        assert "det_10g.onnx" in task.json()["details"]["how_to_fix"]
        assert client.get("/v1/jobs").json()["jobs"] == []  # nothing was queued
