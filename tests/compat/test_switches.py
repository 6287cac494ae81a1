"""Each compatibility API is listed in /docs under its own tag, marked as compatibility, and
switched off by its setting."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from imgq.api.app import create_app
from imgq.compose import open_runtime
from imgq.config import SettingsError, load_settings
from tests.fixtures.server import Server

PATHS = {
    "compat_ai_upscaler": "/api/jobs/upload",
    "compat_image_api": "/process-job",
    "compat_queue_demo": "/status/{task_id}",
    "compat_backend_ai": "/api/v1/tasks/create/",
    "compat_celery_demo": "/process-image/",
}


def test_every_compatibility_api_has_its_own_tag_marked_as_compatibility(server: Server) -> None:
    spec = server.client.get("/openapi.json").json()
    tags = {t["name"]: t["description"] for t in spec["tags"]}
    compat = {name for name in tags if name.startswith("compat: ")}
    assert len(compat) == 5
    assert all("Compatibility API" in tags[name] for name in compat)
    for path in PATHS.values():
        operations = spec["paths"][path].values()
        assert all(op["tags"][0] in compat for op in operations)


def test_each_compatibility_api_is_switched_off_by_its_setting(tmp_path: Path) -> None:
    for setting, path in PATHS.items():
        settings = load_settings(data_dir=tmp_path / setting, **{setting: False})
        app = create_app(open_runtime(settings, run_migrations=True), None, sweeper=False)
        try:
            paths = app.openapi()["paths"]
            assert path not in paths
            assert all(other in paths for other in PATHS.values() if other != path)
        finally:
            app.state.runtime.close()


def test_an_image_queue_demo_pipeline_that_cannot_run_stops_the_start(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, compat_queue_demo_pipeline="sepia:amount=1")
    with pytest.raises(SettingsError, match="IMGQ_COMPAT_QUEUE_DEMO_PIPELINE: unknown operation"):
        create_app(open_runtime(settings, run_migrations=True), None, sweeper=False)


@pytest.mark.parametrize(("old", "new", "value", "read"), [
    ("IMGQ_COMPAT_SEED000", "compat_ai_upscaler", "false", False),
    ("IMGQ_COMPAT_SEED004", "compat_celery_demo", "false", False),
    ("IMGQ_COMPAT_SEED002_PIPELINE", "compat_queue_demo_pipeline", "grayscale", "grayscale"),
    ("IMGQ_COMPAT_SEED000_STANDARD_MODEL", "compat_ai_upscaler_standard_model",
     "realesr-animevideov3", "realesr-animevideov3"),
])
def test_a_previous_release_variable_is_still_read_with_a_warning(
        old: str, new: str, value: str, read: object, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    monkeypatch.setenv(old, value)
    # Another test's logging.config call (import-linter's) may have disabled the logger.
    monkeypatch.setattr(logging.getLogger("imgq.config"), "disabled", False)
    with caplog.at_level(logging.WARNING, logger="imgq.config"):
        settings = load_settings(data_dir=tmp_path)
    assert getattr(settings, new) == read
    assert f"{old} is now called IMGQ_{new.upper()}" in caplog.text
    assert "the old name will stop working in the next release" in caplog.text


def test_the_new_variable_wins_over_the_previous_name(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    monkeypatch.setenv("IMGQ_COMPAT_SEED001", "false")
    monkeypatch.setenv("IMGQ_COMPAT_IMAGE_API", "true")
    assert load_settings(data_dir=tmp_path).compat_image_api is True


def test_imgq_serve_honours_a_previous_name_and_logs_the_warning(
        tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    server = Server(tmp_path / "data", tmp_path / "logs", {})
    try:
        server.start("--no-workers", compat_seed000="false")
        assert server.client.post("/api/jobs/upload").status_code == 404
        spec = server.client.get("/openapi.json").json()
        assert "/api/jobs/upload" not in spec["paths"] and "/process-job" in spec["paths"]
    finally:
        server.close()
    assert ("IMGQ_COMPAT_SEED000 is now called IMGQ_COMPAT_AI_UPSCALER; the old name will stop "
            "working in the next release") in server.log_text()
