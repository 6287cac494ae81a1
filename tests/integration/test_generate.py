"""generate (text-to-image) through the real code path: a tiny, randomly initialised Stable
Diffusion pipeline that the test builds with diffusers and saves into the models folder, run by
the worker's pipeline runner, through /v1/jobs with no files, and through the Backend AI API."""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pyvips

from tests.integration.ai._support import IN_CI

pytestmark = pytest.mark.timeout(600)
for _package in ("torch", "diffusers", "transformers"):
    try:
        __import__(_package)
    except ImportError:
        _reason = (f"{_package} is not installed: generate needs the generate extra "
                   "(pip install 'imgq[generate]'; the dev extra includes it)")
        if IN_CI:
            pytest.fail(_reason, pytrace=False)
        pytest.skip(_reason, allow_module_level=True)

with warnings.catch_warnings():  # starlette prefers httpx2 and warns when it finds httpx
    warnings.filterwarnings("ignore", message=r".*httpx", category=UserWarning)
    from fastapi.testclient import TestClient

from imgq.compose import build_app  # noqa: E402
from imgq.config import Settings, load_settings  # noqa: E402
from imgq.domain.pipeline import parse_pipeline  # noqa: E402
from imgq.errors import Cancelled  # noqa: E402
from imgq.ops import build_registry  # noqa: E402
from imgq.ops.base import Registry  # noqa: E402
from imgq.worker.run import run_pipeline  # noqa: E402
from tests.fixtures.tiny_diffusion import build_tiny_pipeline, copy_configs  # noqa: E402
from tests.fixtures.tiny_diffusion import write_single_file  # noqa: E402
from tests.fixtures.waiting import wait_for  # noqa: E402


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    build_tiny_pipeline(root / "generate" / "tiny-sd")
    return root


def settings(data: Path, models: Path | None, **overrides: Any) -> Settings:
    return load_settings(data_dir=data, ai_models_dir=models, ai_device="cpu", **overrides)


class Ctx:
    def __init__(self, abort_after: int | None = None) -> None:
        self.stages: list[str] = []
        self.abort_after = abort_after

    def begin_step(self, index: int, name: str) -> None:
        pass

    def progress(self, fraction: float, stage: str | None = None) -> None:
        if stage:
            self.stages.append(stage)

    def steps_done(self) -> int:
        return sum(": step " in s for s in self.stages)

    def should_abort(self) -> bool:
        return self.abort_after is not None and self.steps_done() >= self.abort_after

    def check(self) -> None:
        if self.should_abort():
            raise Cancelled()

    def attachment(self, name: str) -> Any:
        raise AssertionError("generate uses no attachment")

    def monitor(self, image: pyvips.Image) -> None:
        pass


def generated(registry: Registry, pipeline: str, target: Path, ctx: Ctx) -> tuple[np.ndarray,
                                                                                   dict[str, Any]]:
    steps = registry.bind(parse_pipeline(pipeline))
    info = run_pipeline(steps, None, None, target, ctx)  # type: ignore[arg-type]
    return np.asarray(pyvips.Image.new_from_file(str(target)).numpy()), info.details


def test_generate_makes_an_image_from_a_prompt_reproducibly_with_progress_per_step(
        models_dir: Path, tmp_path: Path) -> None:
    registry = build_registry(settings(tmp_path, models_dir))
    pipeline = "generate:prompt=a red fox in the snow,width=80,height=64,steps=3,seed=42"
    ctx = Ctx()
    first, details = generated(registry, pipeline, tmp_path / "a.png", ctx)
    assert first.shape == (64, 80, 3) and first.std() > 1  # a picture, not a flat canvas
    assert [s.split(" · ")[0] for s in ctx.stages if ": step " in s] == [
        "generate: step 1/3", "generate: step 2/3", "generate: step 3/3"]
    assert details["model"] == "tiny-sd" and details["seed"] == 42 and details["steps"] == 3
    assert details["prompt_used"] == "a red fox in the snow, highly detailed, 8k"
    assert details["negative_prompt"].startswith("blurry")
    again, _ = generated(registry, pipeline, tmp_path / "b.png", Ctx())
    assert np.array_equal(first, again)  # the same seed gives the same image
    other, _ = generated(registry, pipeline.replace("seed=42", "seed=7"), tmp_path / "c.png",
                         Ctx())
    assert not np.array_equal(first, other)
    plain, plain_details = generated(registry, pipeline + ",refine=false", tmp_path / "d.png",
                                     Ctx())
    assert plain_details["prompt_used"] == "a red fox in the snow"
    assert plain_details["negative_prompt"] == ""


def test_cancel_stops_generation_between_steps(models_dir: Path, tmp_path: Path) -> None:
    registry = build_registry(settings(tmp_path, models_dir))
    ctx = Ctx(abort_after=1)
    with pytest.raises(Cancelled):
        generated(registry, "generate:prompt=a boat,width=64,height=64,steps=5,seed=1",
                  tmp_path / "x.png", ctx)
    assert ctx.steps_done() == 1  # steps 2 to 5 never ran


def test_without_a_model_generate_is_unavailable_and_says_what_to_install(
        tmp_path: Path) -> None:
    registry = build_registry(settings(tmp_path, tmp_path / "no-models"))
    reason = registry.get("generate").unavailable_reason or ""
    assert "model_index.json" in reason and str(tmp_path / "no-models" / "generate") in reason
    assert registry.get("generate").describe()["makes_image"] is True


# -- through the API -------------------------------------------------------------------------
@pytest.fixture
def client(models_dir: Path, tmp_path: Path) -> Iterator[TestClient]:
    app, _ = build_app(settings(tmp_path / "data", models_dir, workers=1))
    with TestClient(app, base_url="http://127.0.0.1") as test_client:  # a loopback Host
        yield test_client


def finished(client: TestClient, url: str, done: Any) -> dict[str, Any]:
    return wait_for(lambda: client.get(url).json(), done, 300, f"{url} finished", poll=0.3)


def test_a_job_with_no_files_generates_through_v1_jobs_and_the_backend_ai_api(
        client: TestClient) -> None:
    steps = [{"op": "generate", "prompt": "a lighthouse", "width": 64, "height": 64,
              "steps": 2, "seed": 5}, {"op": "encode", "format": "webp", "lossless": True}]
    created = client.post("/v1/jobs", data={"pipeline": json.dumps(steps)},
                          files={"_": (None, b"")})
    assert created.status_code == 201, created.text
    assert created.json()["resource"] == "gpu"
    (item,) = created.json()["items"]
    assert item["input"] is None and item["name"] == "generate.png"
    job = finished(client, created.headers["Location"],
                   lambda body: body["status"] not in ("queued", "running"))
    assert job["status"] == "succeeded", job
    (item,) = job["items"]
    assert item["details"]["seed"] == 5 and item["details"]["model"] == "tiny-sd"
    assert item["result_name"] == "generate.webp"
    result = pyvips.Image.new_from_buffer(client.get(item["result_url"]).content, "")
    assert (result.width, result.height) == (64, 64)

    task = client.post("/api/v1/tasks/create/", data={
        "prompt": "beautiful sunset over mountains", "task_type": "image_generation",
        "parameters": json.dumps({"width": 64, "height": 64, "num_inference_steps": 2,
                                  "guidance_scale": 5.0, "seed": 42})},
        files={"_": (None, b"")})
    assert task.status_code == 201, task.text
    task_id = task.json()["task_id"]
    finished(client, f"/api/v1/tasks/{task_id}/status/",
             lambda body: body["status"] in ("SUCCESS", "FAILURE"))
    body = client.get(f"/api/v1/tasks/{task_id}/result/").json()
    assert body["result"]["prompt_used"] == "beautiful sunset over mountains, highly detailed, 8k"
    metadata = body["result"]["metadata"]
    assert (metadata["model"], metadata["seed"], metadata["steps"]) == ("tiny-sd", 42, 2)
    png = client.get(body["result"]["image_url"]).content
    assert pyvips.Image.new_from_buffer(png, "").width == 64


def test_a_checkpoints_first_image_measures_the_estimates_of_the_next_ones(
        models_dir: Path, tmp_path: Path) -> None:
    """No figure before a checkpoint's first image here (none is made up); after it, the 201
    estimates a generation from that run, in proportion to pixels × steps."""
    app, _ = build_app(settings(tmp_path / "data", models_dir, workers=1,
                                ai_costs_file=tmp_path / "costs.json"))

    def submit(steps: int) -> tuple[str, float | None]:
        pipeline = [{"op": "generate", "prompt": "a lighthouse", "width": 64, "height": 64,
                     "steps": steps, "seed": 5}]
        created = client.post("/v1/jobs", data={"pipeline": json.dumps(pipeline)},
                              files={"_": (None, b"")})
        assert created.status_code == 201, created.text
        return created.headers["Location"], created.json()["items"][0]["estimated_seconds"]

    with TestClient(app, base_url="http://127.0.0.1") as client:
        location, first = submit(3)
        assert first is None
        job = finished(client, location, lambda body: body["status"] not in ("queued", "running"))
        assert job["status"] == "succeeded", job
        _, six = submit(6)
        _, three = submit(3)
    assert six is not None and three is not None and six > 0
    assert abs(six - 2 * three) <= 0.2, (six, three)  # one run measured: no fixed part yet


def test_files_with_generate_and_no_files_without_it_are_refused(client: TestClient) -> None:
    photo = pyvips.Image.black(8, 8).pngsave_buffer()
    with_file = client.post("/v1/jobs", files={"files": ("a.png", photo)},
                            data={"pipeline": "generate:prompt=x"})
    assert with_file.status_code == 422
    assert "send the job with no files" in with_file.json()["error"]["message"]
    no_file = client.post("/v1/jobs", data={"pipeline": "blur"}, files={"_": (None, b"")})
    assert no_file.status_code == 400 and "no files" in no_file.json()["error"]["message"]
    second = client.post("/v1/jobs", files={"files": ("a.png", photo)},
                         data={"pipeline": "blur|generate:prompt=x"})
    assert second.status_code == 422 and "only be the first step" in second.text


# -- a single .safetensors file, as model sites distribute checkpoints ------------------------
@pytest.fixture(scope="module")
def single_file_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pipeline twice: as a diffusers folder and as one original-layout file with its
    family's config folder (configs/v1: the folder's files without the weights)."""
    root = tmp_path_factory.mktemp("single")
    build_tiny_pipeline(root / "generate" / "tiny-sd")
    write_single_file(root / "generate" / "tiny-sd", root / "generate" / "tiny-file.safetensors")
    copy_configs(root / "generate" / "tiny-sd", root / "generate" / "configs" / "v1")
    return root


def job_result(client: TestClient, steps: list[dict[str, Any]]) -> tuple[np.ndarray,
                                                                          dict[str, Any]]:
    created = client.post("/v1/jobs", data={"pipeline": json.dumps(steps)},
                          files={"_": (None, b"")})
    assert created.status_code == 201, created.text
    job = finished(client, created.headers["Location"],
                   lambda body: body["status"] not in ("queued", "running"))
    assert job["status"] == "succeeded", job
    (item,) = job["items"]
    png = client.get(item["result_url"]).content
    return np.asarray(pyvips.Image.new_from_buffer(png, "").numpy()), item["details"]


def test_a_single_safetensors_checkpoint_generates_through_v1_jobs(
        single_file_models: Path, tmp_path: Path) -> None:
    app, _ = build_app(settings(tmp_path / "data", single_file_models, workers=1))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        listed = {op["name"]: op for op in client.get("/v1/operations").json()}
        assert listed["generate"]["available"] is True
        step = {"op": "generate", "prompt": "a lighthouse", "width": 64, "height": 64,
                "steps": 2, "seed": 11}
        from_file, details = job_result(client, [{**step, "model": "tiny-file"}])
        assert details["model"] == "tiny-file" and details["seed"] == 11
        assert from_file.shape == (64, 64, 3) and from_file.std() > 1
        from_folder, folder_details = job_result(client, [{**step, "model": "tiny-sd"}])
        assert folder_details["model"] == "tiny-sd"
        # The same weights, read from the original layout: the same picture.
        assert np.array_equal(from_file, from_folder)


def test_a_single_file_without_its_configs_is_refused_saying_what_to_put_where(
        single_file_models: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    (models / "generate").mkdir(parents=True)
    checkpoint = models / "generate" / "dreamy.safetensors"
    checkpoint.write_bytes((single_file_models / "generate" / "tiny-file.safetensors")
                           .read_bytes())
    app, _ = build_app(settings(tmp_path / "data", models, workers=1))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        listed = {op["name"]: op for op in client.get("/v1/operations").json()}
        reason = listed["generate"]["unavailable_reason"]
        assert listed["generate"]["available"] is False
        assert "dreamy.safetensors is a Stable Diffusion 1.x checkpoint" in reason
        assert str(models / "generate" / "configs" / "v1") in reason
        assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in reason
        refused = client.post("/v1/jobs", data={"pipeline": "generate:prompt=a boat"},
                              files={"_": (None, b"")})
        assert 400 <= refused.status_code < 500, refused.text
        assert "dreamy.safetensors" in refused.json()["error"]["message"]
        assert "configs and tokenizer are missing" in refused.json()["error"]["message"]

    # A config folder without the tokenizer: the refusal names the missing part.
    copy_configs(single_file_models / "generate" / "tiny-sd",
                 models / "generate" / "configs" / "v1")
    shutil.rmtree(models / "generate" / "configs" / "v1" / "tokenizer")
    reason = build_registry(settings(tmp_path, models)).get("generate").unavailable_reason or ""
    assert "lacks tokenizer/" in reason and str(models / "generate" / "configs" / "v1") in reason

    # A file of tensors that is not a whole checkpoint (a LoRA, say): diffusers alone would
    # take it for Stable Diffusion 1.x.
    from safetensors.torch import save_file
    import torch

    lora = models / "generate" / "detail-lora.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight":
               torch.zeros(4, 8)}, str(lora))
    reason = build_registry(settings(tmp_path, models)).get("generate").unavailable_reason or ""
    assert ("detail-lora.safetensors is not a whole Stable Diffusion checkpoint in the original "
            "layout: it lacks the UNet and the VAE and the text encoder") in reason
    lora.unlink()

    # Not a checkpoint at all, and a pickled one: each says what it is.
    checkpoint.write_bytes(b"not a checkpoint")
    (models / "generate" / "old.ckpt").write_bytes(b"\x80\x04")
    reason = build_registry(settings(tmp_path, models)).get("generate").unavailable_reason or ""
    assert "dreamy.safetensors is not a readable safetensors checkpoint" in reason
    assert "old.ckpt is a pickled checkpoint" in reason


def test_asking_for_a_single_file_that_cannot_load_says_why(
        single_file_models: Path, tmp_path: Path) -> None:
    """Another checkpoint is installed, so generate is available; the one asked for is not."""
    from imgq.ai.generate import find

    models = tmp_path / "models"
    shutil.copytree(single_file_models / "generate" / "tiny-sd", models / "generate" / "tiny-sd")
    (models / "generate" / "dreamy.safetensors").write_bytes(
        (single_file_models / "generate" / "tiny-file.safetensors").read_bytes())
    app, _ = build_app(settings(tmp_path / "data", models, workers=1))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        listed = {op["name"]: op for op in client.get("/v1/operations").json()}
        assert listed["generate"]["available"] is True
        created = client.post("/v1/jobs", files={"_": (None, b"")}, data={
            "pipeline": "generate:prompt=a boat,model=dreamy,width=64,height=64,steps=1"})
        assert created.status_code == 201, created.text
        job = finished(client, created.headers["Location"],
                       lambda body: body["status"] not in ("queued", "running"))
        (item,) = job["items"]
        assert item["status"] == "failed" and item["error"]["code"] == "model_load_error", item
        assert item["error"]["message"].startswith(
            "dreamy.safetensors is a Stable Diffusion 1.x checkpoint; a single file holds only "
            "weights, and its configs and tokenizer are missing"), item["error"]
    assert find(models, None).name == "tiny-sd"
