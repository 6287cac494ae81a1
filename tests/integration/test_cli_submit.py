"""`imgq submit`, `status`, `download` and `ops` as subprocesses against a running server."""

from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.e2e.server import IMGQ, ROOT, Server, shared_server, write_broken_png, write_picture


@pytest.fixture(scope="module")
def server() -> Server:
    return shared_server("workers")


def imgq(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IMGQ_URL": server.url, "COLUMNS": "200"}
    return subprocess.run([*IMGQ, *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_submit_waits_downloads_and_fails_when_an_item_failed(server: Server,
                                                              tmp_path: Path) -> None:
    good = write_picture(tmp_path / "photo.png", 120, 90)
    bad = write_broken_png(tmp_path / "broken.png")
    out = tmp_path / "out"
    run = imgq(server, "submit", str(good), str(bad), "--op", "grayscale|encode:format=jpeg",
               "--wait", "-o", str(out))
    assert run.returncode == 1, run.stderr
    assert "1 failed, 1 succeeded" in run.stdout
    assert "photo.jpg" in run.stdout and "broken.png" in run.stdout
    assert [p.name for p in out.iterdir()] == ["photo.jpg"]
    assert "100%" in run.stderr, "a progress bar per item"


def test_submit_all_good_exits_0_and_status_download_follow(server: Server,
                                                            tmp_path: Path) -> None:
    files = [str(write_picture(tmp_path / f"p{i}.png", 64, 64, seed=i)) for i in range(2)]
    run = imgq(server, "submit", *files, "--op", "grayscale", "--wait")
    assert run.returncode == 0, run.stderr
    job_id = run.stderr.split("job ", 1)[1].split()[0]
    assert "2 succeeded" in run.stdout

    status = imgq(server, "status", job_id)
    assert status.returncode == 0 and "succeeded" in status.stdout and "p1.png" in status.stdout
    download = imgq(server, "download", job_id, "-o", str(tmp_path / "zip"), "--zip")
    assert download.returncode == 0, download.stderr
    (archive,) = (tmp_path / "zip").iterdir()
    assert sorted(zipfile.ZipFile(archive).namelist()) == ["p0.png", "p1.png"]


def test_submit_without_wait_prints_the_job_id(server: Server, tmp_path: Path) -> None:
    run = imgq(server, "submit", str(write_picture(tmp_path / "a.png", 32, 32)),
               "--op", "grayscale")
    assert run.returncode == 0
    assert len(run.stdout.strip()) == 36


def test_errors_are_shown_in_words_with_exit_code_2(server: Server, tmp_path: Path) -> None:
    run = imgq(server, "submit", str(write_picture(tmp_path / "a.png", 32, 32)),
               "--op", "nosuchop")
    assert run.returncode == 2
    assert "unknown operation 'nosuchop'" in run.stderr
    assert imgq(server, "status", "nope").returncode == 2


def test_ops_lists_operations_and_their_parameters(server: Server) -> None:
    run = imgq(server, "ops")
    assert run.returncode == 0
    assert "grayscale" in run.stdout
    assert "radius: number" in run.stdout


@pytest.mark.parametrize("command", [["submit", "{file}", "--op", "grayscale", "--wait"],
                                     ["status", "some-job"], ["ops"]])
def test_with_no_server_the_command_says_so_in_one_line(tmp_path: Path,
                                                        command: list[str]) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    picture = write_picture(tmp_path / "photo.png", 32, 32)
    args = [a.replace("{file}", str(picture)) for a in command]
    run = subprocess.run([*IMGQ, *args, "--url", url], env={**os.environ, "COLUMNS": "80"},
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"imgq: cannot reach the imgq server at {url}"), lines[0]
    assert "imgq serve" in lines[0] and "--url" in lines[0]
    assert run.stdout == ""
