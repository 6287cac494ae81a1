"""Each compatibility API is listed in /docs under its own tag, marked as compatibility, and
switched off by its setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgq.api.app import create_app
from imgq.compose import open_runtime
from imgq.config import SettingsError, load_settings
from tests.acceptance.conftest import Server

PATHS = {
    "compat_seed000": "/api/jobs/upload",
    "compat_seed001": "/process-job",
    "compat_seed002": "/status/{task_id}",
    "compat_seed003": "/api/v1/tasks/create/",
    "compat_seed004": "/process-image/",
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


def test_a_seed002_pipeline_that_cannot_run_stops_the_start(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, compat_seed002_pipeline="sepia:amount=1")
    with pytest.raises(SettingsError, match="IMGQ_COMPAT_SEED002_PIPELINE: unknown operation"):
        create_app(open_runtime(settings, run_migrations=True), None, sweeper=False)
