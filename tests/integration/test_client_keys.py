"""imgq.client and `imgq submit` against a server that needs API keys: the key goes with every
call, live events included; without it, or over a quota, typed errors say why."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgq.client import Client, TooManyRequests, Unauthorized
from tests.e2e.server import Server, running_server, write_picture
from tests.fixtures.keys import create_key
from tests.fixtures.server import imgq_command


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("keyed"), IMGQ_AUTH="keys",
                        IMGQ_WORKERS="1") as server:
        yield server


def test_the_client_sends_its_key_on_every_call_and_follows_events(keyed: Server,
                                                                   tmp_path: Path) -> None:
    key = create_key(keyed, "client")
    image = write_picture(tmp_path / "a.png", 80, 60)
    with Client(keyed.url, api_key=key) as imgq:
        job = imgq.submit([image], "resize:width=40|encode:format=webp")
        events: list[object] = []
        done = imgq.wait(job.id, timeout=60, on_event=events.append)
        assert done.status == "succeeded" and events  # followed over SSE, with the key
        saved = imgq.download(job.id, 0, tmp_path / "a.webp")
        assert saved.read_bytes()[8:12] == b"WEBP"
    with Client(keyed.url) as anonymous, pytest.raises(Unauthorized) as refused:
        anonymous.get(job.id)
    assert "Authorization: Bearer" in refused.value.message


def test_a_quota_is_a_typed_error_with_retry_after(keyed: Server, tmp_path: Path) -> None:
    key = create_key(keyed, "tiny", "--max-items-per-day", "1")
    image = write_picture(tmp_path / "a.png", 40, 30)
    with Client(keyed.url, api_key=key) as imgq:
        imgq.submit([image], "grayscale")
        with pytest.raises(TooManyRequests) as refused:
            imgq.submit([image], "grayscale")
    assert refused.value.retry_after and refused.value.retry_after >= 1
    assert refused.value.details == {"quota": "items_per_day", "limit": 1}


def test_imgq_submit_takes_the_key_from_its_environment(keyed: Server, tmp_path: Path) -> None:
    key = create_key(keyed, "shell")
    image = write_picture(tmp_path / "a.png", 40, 30)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGQ_")}
    env.update({"IMGQ_URL": keyed.url, "IMGQ_API_KEY": key})
    done = subprocess.run([*imgq_command(), "submit", str(image), "--op", "grayscale", "--wait",
                           "-o", str(tmp_path / "out")], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "a.png").read_bytes().startswith(b"\x89PNG")
