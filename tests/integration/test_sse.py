"""GET /v1/jobs/{id}/events against a real `imgq serve`: order, the final event, resume,
heartbeats and cancel."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from imgq.client import Event, SSEParser
from tests.e2e.server import Server, shared_server, write_picture

RANK = {"queued": 0, "running": 1, "succeeded": 2, "failed": 2, "cancelled": 2}


@pytest.fixture(scope="module")
def server() -> Server:
    return shared_server("workers")


@pytest.fixture(scope="module")
def idle_server() -> Server:
    """No workers: items stay queued until cancelled."""
    return shared_server("idle")


def submit(server: Server, files: list[Path], pipeline: str) -> str:
    handles = [("files", (f.name, f.read_bytes())) for f in files]
    response = httpx.post(f"{server.url}/v1/jobs", files=handles, data={"pipeline": pipeline})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def read_events(server: Server, job_id: str, headers: dict[str, str] | None = None,
                comments: list[str] | None = None, until: str = "done") -> list[Event]:
    events = []
    parser = SSEParser()
    with httpx.stream("GET", f"{server.url}/v1/jobs/{job_id}/events", headers=headers,
                      timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if comments is not None and line.startswith(":"):
                comments.append(line)
            event = parser.feed(line)
            if event is not None:
                events.append(event)
                if event.event == until:
                    break
    return events


def test_events_come_in_order_and_end_with_one_final_event(server: Server,
                                                           tmp_path: Path) -> None:
    # Each item takes long enough (a wide blur of 2 MP) that, with one worker, the later items
    # are still waiting when the stream opens, however quickly the worker drains.
    files = [write_picture(tmp_path / f"p{i}.png", 1600, 1300, seed=i) for i in range(3)]
    job_id = submit(server, files, "blur:radius=20|sharpen")
    events = read_events(server, job_id)

    assert [e.event for e in events].count("done") == 1
    assert events[-1].event == "done"
    assert events[-1].data["status"] == "succeeded"
    ids = [int(e.id) for e in events if e.id is not None]
    assert ids == sorted(ids), "event ids never go back"
    per_item: dict[int, list[dict]] = {}
    for e in events:
        if e.event == "item":
            per_item.setdefault(e.data["index"], []).append(e.data)
    assert sorted(per_item) == [0, 1, 2]
    for seen in per_item.values():
        ranks = [RANK[s["status"]] for s in seen]
        assert ranks == sorted(ranks), [s["status"] for s in seen]
        assert seen[-1]["status"] == "succeeded" and seen[-1]["progress"] == 100
    states = {s["status"] for seen in per_item.values() for s in seen}
    assert {"queued", "succeeded"} <= states  # one worker: later items were seen waiting
    assert all(e.data["progress"] >= 0 for e in events if e.event == "job")


def test_resuming_with_last_event_id_sends_only_what_changed(server: Server,
                                                             tmp_path: Path) -> None:
    job_id = submit(server, [write_picture(tmp_path / "a.png", 400, 300)], "grayscale")
    first = read_events(server, job_id, until="item")  # the first state, then hang up
    events = read_events(server, job_id)
    final = events[-1]

    resumed = read_events(server, job_id, headers={"Last-Event-ID": str(final.id)})
    assert [e.event for e in resumed] == ["done"], "nothing changed since: only the end"
    assert resumed[0].id == final.id

    caught_up = read_events(server, job_id, headers={"Last-Event-ID": str(first[0].id)})
    if first[0].id != final.id:
        assert [e.event for e in caught_up] == ["item", "job", "done"]
        assert caught_up[0].data["status"] == "succeeded"


def test_unknown_job_answers_404_before_streaming(server: Server) -> None:
    response = httpx.get(f"{server.url}/v1/jobs/no-such-job/events")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_quiet_stream_sends_heartbeats_and_a_cancel_ends_it(idle_server: Server,
                                                           tmp_path: Path) -> None:
    job_id = submit(idle_server, [write_picture(tmp_path / "a.png", 64, 64)], "grayscale")
    comments: list[str] = []
    parser = SSEParser()
    events: list[Event] = []
    started = time.monotonic()
    with httpx.stream("GET", f"{idle_server.url}/v1/jobs/{job_id}/events", timeout=30) as resp:
        for line in resp.iter_lines():
            if line.startswith(":"):
                comments.append(line)
                if len(comments) == 2:
                    httpx.post(f"{idle_server.url}/v1/jobs/{job_id}/cancel").raise_for_status()
            event = parser.feed(line)
            if event is not None:
                events.append(event)
    assert comments[:2] == [": keep-alive", ": keep-alive"]
    assert time.monotonic() - started < 10
    assert [e.event for e in events] == ["item", "job", "item", "job", "done"]
    assert events[2].data["status"] == "cancelled"
    assert events[-1].data["status"] == "cancelled"
