"""Contract tests of the compatibility APIs: each earlier system's documented requests, sent to
a real `imgq serve` subprocess, as a program written for that system would send them.

Three servers, each started once per session when a test first asks for it:
- `server`: two workers, default settings;
- `idle`: no workers (`--no-workers`), so a job stays queued for as long as a test needs;
- `brief`: one worker, jobs expire after 2 s and are swept every second.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import pytest

from tests.fixtures.server import Server



def start_server(factory: pytest.TempPathFactory, name: str, *args: str, **settings: Any) -> Server:
    root = factory.mktemp(name)
    (root / "logs").mkdir()
    server = Server(root / "data", root / "logs", {})
    try:
        return server.start(*args, **settings)
    except BaseException:
        server.close()
        raise


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    started = start_server(tmp_path_factory, "compat", workers=2)
    yield started
    started.close()


@pytest.fixture(scope="session")
def idle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    started = start_server(tmp_path_factory, "compat-idle", "--no-workers")
    yield started
    started.close()


@pytest.fixture(scope="session")
def brief(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    started = start_server(tmp_path_factory, "compat-brief", workers=1, ttl_seconds=2,
                           sweep_interval_seconds=1)
    yield started
    started.close()


@pytest.fixture(scope="session")
def operations(server: Server) -> set[str]:
    """The operations that can run on the test server."""
    return server.operations()


def needs_operation(operations: set[str], name: str) -> None:
    if name not in operations:
        pytest.skip(f"the '{name}' operation is not installed on this server")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for name in ("server", "idle", "brief"):
            found = getattr(item, "funcargs", {}).get(name)
            if isinstance(found, Server):
                report.sections.append((f"imgq serve log ({name})", found.log_text()))
    return report
