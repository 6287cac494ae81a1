"""Acceptance fixtures: `imgq serve` (tests/fixtures/server.py) on a fresh data folder per test,
its log attached to the report of a failed test."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.server import Server


@pytest.fixture
def serve(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Server]]:
    """serve(*args, **settings) starts `imgq serve` on a fresh data folder and returns it.

    Settings are given without the prefix (workers=1 sets IMGQ_WORKERS=1); the returned
    Server can stop(), kill() and start() again on the same data folder.
    """
    servers: list[Server] = []

    def start(*args: str, **settings: Any) -> Server:
        index = len(servers) + 1
        server = Server(tmp_path / f"data-{index}", tmp_path / f"logs-{index}", {})
        server.log_dir.mkdir()
        servers.append(server)
        request.node.imgq_servers = servers
        return server.start(*args, **{"workers": 2, **settings})

    yield start
    for server in servers:
        server.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None],
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the server logs to the report of a failed test."""
    report = yield
    if report.failed:
        for server in getattr(item, "imgq_servers", []):
            report.sections.append((f"imgq serve log ({server.data_dir.name})",
                                    server.log_text()))
    return report
