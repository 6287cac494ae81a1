"""The fleet API's submits on PostgreSQL: the rows are written on the event loop, and a submit
the database refuses leaves none of its files behind."""

from __future__ import annotations

from pathlib import Path

import pyvips
from fastapi.testclient import TestClient

from imgq.api.app import create_app
from imgq.config import load_settings
from imgq.worker.runtime import Runtime
from tests.fixtures.outages import own_postgres


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_a_submit_is_stored_and_one_the_database_refuses_leaves_no_file(tmp_path: Path) -> None:
    png = bytes(pyvips.Image.black(8, 8).pngsave_buffer())
    blobs = tmp_path / "blobs"
    with own_postgres() as server:
        runtime = Runtime.from_settings(load_settings(
            data_dir=tmp_path / "data", database_url=server.url, storage_url=blobs.as_uri()),
            run_migrations=True)
        assert runtime.repo.polls_on_loop
        with TestClient(create_app(runtime, sweeper=False), base_url="http://127.0.0.1") as client:
            sent = {"files": [("files", ("a.png", png)), ("files", ("b.png", png))]}
            answer = client.post("/v1/jobs", data={"pipeline": "grayscale"}, **sent)
            assert answer.status_code == 201, answer.text
            job = answer.json()
            read = client.get(f"/v1/jobs/{job['id']}").json()
            assert [i["status"] for i in read["items"]] == ["queued", "queued"]
            kept = _files(blobs)
            assert len(kept) == 2 and all(k.startswith(job["id"]) for k in kept)
            server.stop()
            refused = client.post("/v1/jobs", data={"pipeline": "grayscale"}, **sent)
            assert refused.status_code == 503, refused.text
            assert _files(blobs) == kept  # the refused job's inputs were removed
