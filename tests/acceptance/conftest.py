"""Acceptance fixtures: `imgq serve` (tests/fixtures/server.py) on a fresh data folder per test,
or shared by the tests of a module that need no fresh one; its log attached to the report of a
failed test."""

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
        _attach(request, server)
        return server.start(*args, **{"workers": 2, **settings})

    yield start
    for server in servers:
        server.close()


@pytest.fixture(scope="module")
def _module_servers() -> Iterator[dict[tuple[Any, ...], Server]]:
    servers: dict[tuple[Any, ...], Server] = {}
    yield servers
    for server in servers.values():
        server.close()


@pytest.fixture
def shared_serve(_module_servers: dict[tuple[Any, ...], Server],
                 tmp_path_factory: pytest.TempPathFactory,
                 request: pytest.FixtureRequest) -> Callable[..., Server]:
    """shared_serve(*args, **settings): as `serve`, but the tests of a module that ask for the
    same arguments share one server (each start takes seconds). For tests that neither stop
    it nor change its settings, and that count only what they made themselves: they wait
    for the jobs they submit, so that another test sees no work still running."""

    def start(*args: str, **settings: Any) -> Server:
        settings = {"workers": 2, **settings}
        key = (args, tuple(sorted((name, str(value)) for name, value in settings.items())))
        server = _module_servers.get(key)
        if server is not None:
            _attach(request, server)
            return server
        root = tmp_path_factory.mktemp("shared")
        server = Server(root / "data", root / "logs", {})
        server.log_dir.mkdir()
        _attach(request, server)
        try:
            server.start(*args, **settings)
        except BaseException:
            server.close()
            raise
        _module_servers[key] = server
        return server

    return start


def _attach(request: pytest.FixtureRequest, server: Server) -> None:
    """The server's log goes with the report of the test if it fails."""
    request.node.__dict__.setdefault("imgq_servers", []).append(server)


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
